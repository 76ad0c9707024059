"""show_config, set_num_threads and the choice of BLAS kernels."""
import io
import warnings

import pytest

import tinycore as tc
from tinycore import _config, _cpu

@pytest.mark.parametrize("level,environ,loaded,expected", [
    (4, {}, False, "SkylakeX"),
    (3, {}, False, None),                               # no AVX-512
    (4, {"OPENBLAS_CORETYPE": "Zen"}, False, None),     # the user's choice wins
    (4, {"TINYCORE_BLAS_CORETYPE": "off"}, False, None),
    (4, {}, True, None),                                # BLAS already loaded
])
def test_choose_coretype(level, environ, loaded, expected):
    coretype, reason = _cpu.choose_coretype(level, environ, loaded)
    assert coretype == expected
    assert reason


@pytest.mark.parametrize("level,coretype,hint", [
    (4, "Haswell", True),          # AVX-512 left unused: say how to get it
    (4, "SkylakeX", False),
    (4, "cooperlake", False),
    (3, "Haswell", False),         # nothing wider to offer
])
def test_a_user_coretype_that_leaves_avx512_unused_says_so(level, coretype, hint):
    _, reason = _cpu.choose_coretype(level, {"OPENBLAS_CORETYPE": coretype}, False)
    assert reason.startswith(f"OPENBLAS_CORETYPE={coretype} set by the user")
    assert ("unset it" in reason) == hint


def test_cpu_flags_of_a_missing_file_is_empty(tmp_path):
    assert _cpu.cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_cpu_flags_parses_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert _cpu.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2"}


V2 = _cpu.LEVEL_FLAGS[2]
V3 = V2 | _cpu.LEVEL_FLAGS[3]


@pytest.mark.parametrize("flags, level", [
    ({"sse2"}, 1),
    (V2, 2),
    (V3 - {"fma"}, 2),
    (V3, 3),
    (V3 | _cpu.LEVEL_FLAGS[4] - {"avx512vl"}, 3),
    (V3 | _cpu.LEVEL_FLAGS[4], 4),
    (_cpu.LEVEL_FLAGS[3] | _cpu.LEVEL_FLAGS[4], 1),     # levels build on each other
])
def test_level_from_flags(flags, level):
    assert _cpu.level_from_flags(flags) == level


def test_the_cpu_level_comes_from_cpuid_and_agrees_with_the_kernel():
    from tinycore import _cpuid
    level = _cpuid.x86_64_level()
    if level == -1:
        pytest.skip("this build cannot ask CPUID (not x86, or no GCC/Clang)")
    assert level in (1, 2, 3, 4)
    assert _cpu.x86_64_level() == level
    flags = _cpu.cpu_flags()
    if flags:   # Linux lists the host's flags: the same CPU unless emulated
        assert level == _cpu.level_from_flags(flags)


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


def test_more_threads_than_cpus_warns(blas_threads):
    cpus = _config.available_cpus()
    with pytest.warns(RuntimeWarning, match=f"{cpus + 1} BLAS threads on {cpus} available CPUs"):
        tc.set_num_threads(cpus + 1)     # blas_threads puts the count back after


def test_as_many_threads_as_cpus_does_not_warn(blas_threads):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tc.set_num_threads(_config.available_cpus())


@pytest.mark.parametrize("bad,error", [(0, ValueError), (-2, ValueError),
                                       (1.5, TypeError), ("2", TypeError)])
def test_set_num_threads_rejects(bad, error):
    with pytest.raises(error):
        tc.set_num_threads(bad)
