"""The SIMD paths: which set of kernels is chosen, and that every set computes alike.

tinycore's kernel modules are compiled once per instruction-set level
(baseline x86-64, AVX2, AVX-512; tinycore/_simd.py).  The choice must never
load a level the CPU lacks, and must change nothing but speed and, where a
level has FMA, the rounding of the small-product kernel: every kernel entry
point of each wider level that this CPU runs is compared here with the
baseline's on the same input, bit for bit but for that kernel, and whole
training runs through the models' compiled plans.  The levels with FMA
(AVX2 and AVX-512) are compared with each other bit for bit throughout, and
each level's kernel with the exact step-by-step sums of its own rule
(tests/reference.py).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import reference

import tinycore as tc
from tinycore import _cpu, _simd
from tinycore.activations import CODES

ALL_BUILT = _simd.LEVELS

#: The wider levels this machine can run, each compared with the baseline.
WIDER_LEVELS = [level for level in _simd.runnable_levels(_cpu.x86_64_level(),
                                                         _simd.built_levels())
                if level != "baseline"]
needs_wider_level = pytest.mark.skipif(
    not WIDER_LEVELS, reason="no SIMD level beyond the baseline is built and runnable here "
                             f"(built: {_simd.built_levels()})")
wider_level = pytest.mark.parametrize("level", WIDER_LEVELS or ["none"])
RUNNABLE_LEVELS = ["baseline"] + WIDER_LEVELS


def _tile_fuses(level):
    """Whether ``level``'s small-product kernel fuses each multiply-add."""
    return _simd.load("_blas", level)._tile_fuses()


def _twin(level):
    """Another level this CPU runs whose kernel rounds as ``level``'s does (the
    other FMA level, or the baseline if neither fuses), or None."""
    for other in RUNNABLE_LEVELS:
        if other != level and _tile_fuses(other) == _tile_fuses(level):
            return other
    return None


# -- choosing a level ------------------------------------------------------------------------

@pytest.mark.parametrize("cpu_level, expected", [
    (0, "baseline"), (1, "baseline"), (2, "baseline"), (3, "avx2"), (4, "avx512"),
])
def test_auto_takes_the_widest_level_the_cpu_runs(cpu_level, expected):
    level, reason = _simd.choose_level(cpu_level, {}, ALL_BUILT)
    assert level == expected
    assert "widest" in reason


def test_the_environment_forces_the_baseline_on_any_cpu():
    level, reason = _simd.choose_level(4, {"TINYCORE_SIMD": " Baseline "}, ALL_BUILT)
    assert (level, reason) == ("baseline", "TINYCORE_SIMD=baseline")


def test_a_level_the_cpu_lacks_is_refused_for_the_widest_below_it():
    level, reason = _simd.choose_level(3, {"TINYCORE_SIMD": "avx512"}, ALL_BUILT)
    assert level == "avx2"
    assert "refused" in reason and "x86-64-v4" in reason


def test_a_level_not_built_is_refused():
    level, reason = _simd.choose_level(4, {"TINYCORE_SIMD": "avx2"}, ("baseline",))
    assert level == "baseline"
    assert "not built" in reason


def test_a_single_build_says_so():
    level, reason = _simd.choose_level(4, {}, ("baseline",))
    assert level == "baseline"
    assert "one set" in reason


def test_an_unknown_level_is_an_error():
    with pytest.raises(ValueError, match="TINYCORE_SIMD='sse4'.*auto, baseline, avx2, avx512"):
        _simd.choose_level(4, {"TINYCORE_SIMD": "sse4"}, ALL_BUILT)


def test_load_never_imports_a_level_the_cpu_lacks(monkeypatch):
    monkeypatch.setattr(_cpu, "x86_64_level", lambda: 1)
    with pytest.raises(RuntimeError, match="avx2 kernels cannot run here"):
        _simd.load("_plan", "avx2")
    assert _simd.load("_plan", "baseline").__name__ == "tinycore._plan"


def test_the_models_use_the_chosen_level():
    package = _simd.decision["package"]
    assert tc.model._plan.__name__ == f"{package}._plan"
    assert tc.layers._dense.__name__ == f"{package}._dense"
    assert tc.losses._losses.__name__ == f"{package}._losses"
    assert tc.optimizers._optim.__name__ == f"{package}._optim"


def test_show_config_names_the_path(capsys):
    config = tc.show_config()
    printed = capsys.readouterr().out
    assert config["simd"]["level"] == _simd.decision["level"]
    assert f"tinycore loops: {config['simd']['level']}" in printed
    expected_isa = {"baseline": "SSE2", "avx2": "AVX2", "avx512": "AVX-512"}
    if _simd.built_levels() == _simd.LEVELS:    # not a one-set (native) build
        assert config["simd"]["vector_isa"] == expected_isa[config["simd"]["level"]]


def _run_python(code, tmp_path, **environ):
    """Run ``code`` in a new interpreter, from a folder without a tinycore in it.

    ``python -c`` puts its working folder first on sys.path: from the checkout
    it would import the uncompiled sources, not the tinycore under test.
    """
    env = dict(os.environ, **environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(tc.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_the_environment_variable_reaches_a_new_process(tmp_path):
    result = _run_python("""
        import tinycore as tc
        print(tc.show_config(file=open("/dev/null", "w"))["simd"]["level"])
        print(tc.model._plan.__name__)
    """, tmp_path, TINYCORE_SIMD="baseline")
    assert result.stdout.split() == ["baseline", "tinycore._plan"]


@needs_wider_level
def test_refusing_a_level_warns(tmp_path):
    result = _run_python("""
        import warnings
        warnings.simplefilter("always")
        import tinycore
    """, tmp_path, TINYCORE_SIMD="avx512")
    if "avx512" in WIDER_LEVELS:
        assert result.stderr == ""
    else:
        assert "RuntimeWarning: TINYCORE_SIMD=avx512 refused" in result.stderr


# -- every level computes alike ---------------------------------------------------------------

def assert_same_bits(expected, actual, what=""):
    """Equal bit patterns: NaN payloads and the sign of zero included."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert expected.shape == actual.shape and expected.dtype == actual.dtype
    unsigned = np.dtype(f"u{expected.dtype.itemsize}")
    differ = expected.view(unsigned) != actual.view(unsigned)
    assert not differ.any(), (f"{what}: {differ.sum()} of {differ.size} elements differ, "
                              f"first at {np.argwhere(differ)[0]}: "
                              f"{expected[differ][0]!r} vs {actual[differ][0]!r}")


def assert_same_but_rounding(expected, actual, dtype, what=""):
    """Equal to within the rounding of ``dtype``'s sums: a level that fuses
    its multiply-adds against one that does not (each is also checked exactly
    against its own rule, in test_gemm_of_each_level_is_its_in_order_sum)."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert expected.shape == actual.shape and expected.dtype == actual.dtype
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=what)
    assert (np.isnan(expected) == np.isnan(actual)).all(), what


def _compare_levels(level, outputs_of, dtype, what):
    """``level``'s outputs (computed in ``dtype``) against the baseline's, bit
    for bit if their kernels round alike, else to within rounding; and
    against its twin's bit for bit."""
    mine = outputs_of(level)
    same_rule = _tile_fuses(level) == _tile_fuses("baseline")
    for e, a in zip(outputs_of("baseline"), mine):
        if same_rule:
            assert_same_bits(e, a, what)
        else:
            assert_same_but_rounding(e, a, dtype, what)
    twin = _twin(level)
    if twin is not None and twin != "baseline":
        for e, a in zip(outputs_of(twin), mine):
            assert_same_bits(e, a, f"{what}, {twin} against {level}")


def _inputs(rng, dtype, shape):
    """Normal values over a wide range, with the edges of exp() and tanh() mixed in."""
    x = rng.standard_normal(shape) * rng.choice([0.1, 1.0, 10.0, 100.0], size=shape)
    edges = np.array([0.0, -0.0, 1e-40, -1e-40, 87.5, -87.5, 88.7, -88.7, 0.625, -0.625,
                      1e4, -1e4, 20.0, -20.0])
    flat = x.reshape(-1)
    flat[:min(edges.size, flat.size)] = edges[:flat.size]
    return x.astype(dtype)


SHAPES = [(1, 1), (3, 7), (17, 33), (64, 32), (5, 1031)]


@needs_wider_level
@wider_level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", sorted(CODES))
def test_activation_kernels_are_bit_identical(level, dtype, activation, rng):
    base, wide = _simd.load("_activations", "baseline"), _simd.load("_activations", level)
    code, alpha = CODES[activation], 0.01
    for shape in SHAPES:
        z = _inputs(rng, dtype, shape)
        outputs = []
        for module in (base, wide):
            value, slope = np.empty_like(z), np.empty_like(z)
            module.activation_value(code, alpha, z, value)
            if activation != "softmax":
                module.activation_derivative(code, alpha, z, slope)
            else:
                slope[...] = 0
            back = np.empty_like(z)
            module.activation_backward(code, alpha, value, z, back)
            outputs.append((value, slope, back))
        for name, expected, actual in zip(("value", "derivative", "backward"), *outputs):
            assert_same_bits(expected, actual, f"{activation} {name} {shape}")


@needs_wider_level
@wider_level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_kernels_are_bit_identical(level, dtype, rng):
    base, wide = _simd.load("_losses", "baseline"), _simd.load("_losses", level)
    for n_rows, n_cols in [(1, 1), (7, 3), (33, 10), (128, 17)]:
        logits = _inputs(rng, dtype, (n_rows, n_cols))
        prob = rng.uniform(0, 1, (n_rows, n_cols)).astype(dtype)
        prob[0, 0] = 0.0
        rows = rng.dirichlet(np.ones(n_cols), size=n_rows).astype(dtype)
        target = rng.standard_normal((n_rows, n_cols)).astype(dtype)
        binary = rng.integers(0, 2, (n_rows, n_cols)).astype(dtype)
        labels = rng.integers(0, n_cols, n_rows).astype(np.int64)

        def results(module):
            """Every entry point's outputs, as a list of arrays per name."""
            found = {}
            for name, args in [
                ("squared_error_sum", (logits, target)),
                ("absolute_error_sum", (logits, target)),
                ("binary_cross_entropy_sum", (prob, binary)),
                ("cross_entropy_labels_sum", (prob, labels)),
                ("cross_entropy_rows_sum", (prob, rows)),
            ]:
                found[name] = [np.float64(getattr(module, name)(*args))]
            for name, args in [
                ("scaled_difference", (0.3, logits, target)),
                ("scaled_sign_difference", (0.3, logits, target)),
                ("binary_cross_entropy_grad", (0.3, prob, binary)),
                ("cross_entropy_labels_grad", (0.3, prob, labels)),
                ("cross_entropy_rows_grad", (0.3, prob, rows)),
            ]:
                out = np.empty_like(logits)
                getattr(module, name)(*args, out)
                found[name] = [out]
            for name, fused_target in [("softmax_cross_entropy_labels", labels),
                                       ("softmax_cross_entropy_rows", rows),
                                       ("sigmoid_binary_cross_entropy", binary)]:
                dz = np.empty_like(logits)
                loss = getattr(module, name)(0.3, logits, prob, fused_target, dz)
                found[name] = [np.float64(loss), dz]
            return found

        expected, actual = results(base), results(wide)
        for name in expected:
            for e, a in zip(expected[name], actual[name]):
                assert_same_bits(e, a, f"{name} {(n_rows, n_cols)}")


@needs_wider_level
@wider_level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_kernels_are_bit_identical(level, dtype, rng):
    base, wide = _simd.load("_optim", "baseline"), _simd.load("_optim", level)
    n = 1031
    grad = _inputs(rng, dtype, (n,)) * dtype(0.01)
    start = rng.standard_normal(n).astype(dtype)
    rules = {
        "sgd_update": lambda m, p, s: m.sgd_update(0.1, p, grad),
        "sgd_step": lambda m, p, s: m.sgd_step(0.1, 1e-4, 0.5, p, grad),
        "momentum": lambda m, p, s: m.sgd_momentum_step(0.1, 0.9, False, 1e-4, 1.0, p, grad,
                                                        s[0]),
        "nesterov": lambda m, p, s: m.sgd_momentum_step(0.1, 0.9, True, 0.0, 1.0, p, grad, s[0]),
        "adagrad": lambda m, p, s: m.adagrad_step(0.1, 1e-7, 1.0, p, grad, s[0]),
        "rmsprop": lambda m, p, s: m.rmsprop_step(0.01, 0.9, 1e-7, 0.0, 1.0, p, grad, s[0]),
        "rmsprop_momentum": lambda m, p, s: m.rmsprop_step(0.01, 0.9, 1e-7, 0.5, 1.0, p, grad,
                                                           s[0], s[1]),
        "adam": lambda m, p, s: m.adam_step(1e-3, 0.9, 0.999, 1e-8, 0.0, 0.0, 3, 1.0, p, grad,
                                            s[0], s[1]),
        "adamw": lambda m, p, s: m.adam_step(1e-3, 0.9, 0.999, 1e-8, 0.0, 0.01, 3, 1.0, p, grad,
                                             s[0], s[1]),
    }
    for name, step in rules.items():
        finals = []
        for module in (base, wide):
            param = start.copy()
            state = [np.abs(start) * dtype(0.1), np.abs(start[::-1]) * dtype(0.01)]
            for _ in range(3):
                step(module, param, state)
            finals.append((param, *state))
        for e, a in zip(*finals):
            assert_same_bits(e, a, name)
    assert_same_bits(np.array(base.global_norm(grad)), np.array(wide.global_norm(grad)),
                     "global_norm")


# (40, 65, 37): whole and partial panels, and a transposed B packed by
# register blocks with a tail of k; (128, 128, 128) goes to BLAS.
GEMM_SHAPES = [(1, 1, 1), (3, 5, 7), (4, 4, 8), (32, 10, 64), (17, 33, 9), (64, 32, 32),
               (6, 65, 3), (40, 65, 37), (128, 128, 128)]


def _gemm_operands(rng, dtype, m, n, k, trans_a, trans_b):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, rng.standard_normal((m, n)).astype(dtype)


@pytest.mark.parametrize("level", RUNNABLE_LEVELS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True),
                                              (True, True)])
def test_gemm_of_each_level_is_its_in_order_sum(level, dtype, trans_a, trans_b, rng):
    # The kernel's products, bit for bit: fused steps where the level has
    # FMA, rounded products then sums where it has not.  The products it
    # leaves to BLAS are the same call, with the same bits, at every level.
    module, base = _simd.load("_blas", level), _simd.load("_blas", "baseline")
    fused = module._tile_fuses()
    assert fused == (module._simd_level() >= 3)     # x86-64-v3 and v4 have FMA
    for m, n, k in GEMM_SHAPES:
        a, b, c0 = _gemm_operands(rng, dtype, m, n, k, trans_a, trans_b)
        c = c0.copy()
        module._gemm_memview(trans_a, trans_b, 0.7, a, b, 0.5, c)
        if module._gemm_uses_kernel(dtype == np.float32, trans_a, trans_b, m, n, k):
            expected = reference.in_order_product(trans_a, trans_b, 0.7, a, b, 0.5, c0, fused)
        else:
            expected = c0.copy()
            base._gemm_memview(trans_a, trans_b, 0.7, a, b, 0.5, expected)
        assert_same_bits(expected, c, what=f"{level} gemm {(m, n, k)}")


@needs_wider_level
@wider_level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True),
                                              (True, True)])
def test_gemm_agrees_across_levels(level, dtype, trans_a, trans_b, rng):
    operands = [_gemm_operands(rng, dtype, m, n, k, trans_a, trans_b)
                for m, n, k in GEMM_SHAPES]

    def outputs_of(lvl):
        module, outs = _simd.load("_blas", lvl), []
        for a, b, c0 in operands:
            c = c0.copy()
            module._gemm_memview(trans_a, trans_b, 0.7, a, b, 0.5, c)
            outs.append(c)
        return outs

    _compare_levels(level, outputs_of, dtype, "gemm")


# A product large enough for the blocked tiles (AVX-512's wide tile of 6 x 64,
# AVX2's of 4 x 16): a partial row block, panel and column block, and a
# transposed A packed into slivers of each level's rows (in two blocks of p;
# A read in place takes the 300 steps in one).
BLOCKED_SHAPE = (259, 520, 300)


@needs_wider_level
@wider_level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True),
                                              (True, True)])
def test_blocked_products_agree_across_levels(level, dtype, trans_a, trans_b, rng):
    m, n, k = BLOCKED_SHAPE
    assert m * n * k >= _simd.load("_blas", level)._blocked_work()
    a, b, c0 = _gemm_operands(rng, dtype, m, n, k, trans_a, trans_b)

    def outputs_of(lvl):
        c = np.full_like(c0, np.nan)
        _simd.load("_blas", lvl)._small_gemm_memview(trans_a, trans_b, 0.7, a, b, 0.0, c)
        return [c]

    _compare_levels(level, outputs_of, dtype, "blocked gemm")


@needs_wider_level
@wider_level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_kernels_agree_across_levels(level, dtype, rng):
    x = rng.standard_normal((33, 17)).astype(dtype)
    w = rng.standard_normal((17, 9)).astype(dtype)
    b = rng.standard_normal(9).astype(dtype)
    da = rng.standard_normal((33, 9)).astype(dtype)

    def outputs_of(lvl):
        module = _simd.load("_dense", lvl)
        z, a, dz = np.empty((33, 9), dtype), np.empty((33, 9), dtype), np.empty((33, 9), dtype)
        dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
        module.dense_forward(CODES["tanh"], 0.0, x, w, b, z, a)
        module.dense_activation_backward(CODES["tanh"], 0.0, a, da, dz)
        module.dense_param_backward(x, w, dz, dw, db, dx)
        return z, a, dz, dw, db, dx

    _compare_levels(level, outputs_of, dtype, "dense")


def _train(level, monkeypatch, dtype, activation, loss, optimizer):
    """Losses, weights and predictions after 30 steps with ``level``'s plan and optimizers."""
    monkeypatch.setattr(tc.model, "_plan", _simd.load("_plan", level))
    monkeypatch.setattr(tc.optimizers, "_optim", _simd.load("_optim", level))
    rng = np.random.default_rng(7)
    model = tc.Sequential([tc.Dense(20, 33, activation=activation),
                           tc.Dense(33, 17, activation=activation),
                           tc.Dense(17, 5, activation="softmax" if loss == "cross_entropy"
                                    else "linear")], seed=3, dtype=dtype)
    model.compile(loss=loss, optimizer=optimizer)
    x = rng.standard_normal((48, 20)).astype(dtype)
    y = (rng.integers(0, 5, 48) if loss == "cross_entropy"
         else rng.standard_normal((48, 5)).astype(dtype))
    losses = [model.train_step(x, y) for _ in range(30)]
    return np.array(losses), model.param_buffer.copy(), model.predict(x)


@needs_wider_level
@wider_level
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation, loss, optimizer", [
    ("sigmoid", "cross_entropy", "sgd"), ("tanh", "mse", "sgd"),
    ("relu", "cross_entropy", "adam"), ("leaky_relu", "mae", "rmsprop"),
])
def test_training_through_each_level_agrees(level, dtype, activation, loss, optimizer,
                                            monkeypatch):
    make = {"sgd": lambda: tc.SGD(lr=0.05), "adam": lambda: tc.Adam(lr=1e-3),
            "rmsprop": lambda: tc.RMSProp(lr=1e-3, momentum=0.5)}[optimizer]
    _compare_levels(level, lambda lvl: _train(lvl, monkeypatch, dtype, activation, loss,
                                              make()),
                    dtype, "losses, weights and predictions after 30 steps")
