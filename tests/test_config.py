"""show_config, set_num_threads and the choice of BLAS kernels."""
import io

import pytest

import tinycore as tc
from tinycore import _cpu

AVX512 = {"avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}


@pytest.mark.parametrize("flags,environ,loaded,expected", [
    (AVX512, {}, False, "SkylakeX"),
    (AVX512 - {"avx512bw"}, {}, False, None),          # a subset missing: never
    ({"avx2", "fma"}, {}, False, None),                 # no AVX-512 at all
    (AVX512, {"OPENBLAS_CORETYPE": "Zen"}, False, None),   # the user's choice wins
    (AVX512, {"TINYCORE_BLAS_CORETYPE": "off"}, False, None),
    (AVX512, {}, True, None),                           # BLAS already loaded
])
def test_choose_coretype(flags, environ, loaded, expected):
    coretype, reason = _cpu.choose_coretype(flags, environ, loaded)
    assert coretype == expected
    assert reason


def test_cpu_flags_of_a_missing_file_is_empty(tmp_path):
    assert _cpu.cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_cpu_flags_parses_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert _cpu.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2"}


def test_show_config_names_the_blas_and_its_threads():
    out = io.StringIO()
    config = tc.show_config(file=out)
    assert config["tinycore"] == tc.__version__
    assert config["blas"], "no BLAS library found"
    assert all(pool["num_threads"] >= 1 for pool in config["blas"])
    assert "BLAS:" in out.getvalue() and "kernel choice:" in out.getvalue()


def test_set_num_threads():
    before = tc.show_config(file=io.StringIO())["blas"][0]["num_threads"]
    try:
        tc.set_num_threads(1)
        assert tc.show_config(file=io.StringIO())["blas"][0]["num_threads"] == 1
    finally:
        tc.set_num_threads(before)


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError),
                                       (1.5, TypeError), ("2", TypeError)])
def test_set_num_threads_rejects(bad, error):
    with pytest.raises(error):
        tc.set_num_threads(bad)
