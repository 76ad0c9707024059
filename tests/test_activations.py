"""Activations and their derivatives against plain-NumPy formulas (tests/reference.py)."""
import ast
import inspect
import pathlib
import warnings

import numpy as np
import pytest

import reference
import tinycore
from tinycore import activations as act

TOL = {np.dtype("float32"): dict(rtol=1e-5, atol=1e-6),
       np.dtype("float64"): dict(rtol=1e-12, atol=1e-14)}
# Central differences with eps = 1e-6 in float64: truncation ~eps^2, roundoff ~1e-10.
FD_TOL = dict(rtol=1e-6, atol=1e-8)

ELEMENTWISE = ["sigmoid", "tanh", "relu", "leaky_relu", "linear", "step"]
KINKED = {"relu", "leaky_relu", "step"}


def _functions(name, alpha=0.3):
    """tinycore's (value, derivative) and the reference's, alpha bound for leaky_relu."""
    f, f_grad = getattr(act, name), getattr(act, name + "_grad")
    ref, ref_grad = reference.ACTIVATIONS[name]
    if name == "leaky_relu":
        return (lambda z: f(z, alpha), lambda z: f_grad(z, alpha),
                lambda z: ref(z, alpha), lambda z: ref_grad(z, alpha))
    return f, f_grad, ref, ref_grad


def _inputs(rng, dtype, shape=(4, 7)):
    # Spread over the saturating range of sigmoid and tanh, both signs.
    return (rng.standard_normal(shape) * 4).astype(dtype)


# --- values and derivatives against the reference ---------------------------

@pytest.mark.parametrize("name", ELEMENTWISE)
def test_value_and_derivative_match_reference(name, dtype, rng):
    f, f_grad, ref, ref_grad = _functions(name)
    z = _inputs(rng, dtype)
    value, deriv = f(z), f_grad(z)
    assert value.dtype == dtype and deriv.dtype == dtype
    assert value.shape == z.shape and deriv.shape == z.shape
    np.testing.assert_allclose(value, ref(z), **TOL[dtype])
    np.testing.assert_allclose(deriv, ref_grad(z), **TOL[dtype])


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_value_and_derivative_by_name_agree(name, dtype, rng):
    z = _inputs(rng, dtype)
    alpha = {"alpha": 0.2} if name == "leaky_relu" else {}
    f, f_grad = getattr(act, name), getattr(act, name + "_grad")
    np.testing.assert_array_equal(act.value(name, z, **alpha), f(z, **alpha))
    np.testing.assert_array_equal(act.derivative(name, z, **alpha), f_grad(z, **alpha))


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.5, 2.0])
def test_leaky_relu_alpha(alpha, dtype, rng):
    z = _inputs(rng, dtype)
    np.testing.assert_allclose(act.leaky_relu(z, alpha), reference.leaky_relu(z, alpha),
                               **TOL[dtype])
    np.testing.assert_allclose(act.leaky_relu_grad(z, alpha),
                               reference.leaky_relu_grad(z, alpha), **TOL[dtype])


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_by_finite_differences(name, rng):
    f, f_grad, _, _ = _functions(name)
    z = rng.standard_normal((3, 5)) * 3
    if name in KINKED:
        # Keep every point at least 1e-3 from the kink at 0.
        z = np.where(np.abs(z) < 1e-3, 0.5, z)
    # d/dz_i sum_j f(z_j) = f'(z_i) for an elementwise f.
    numeric = reference.numeric_grad(lambda: f(z).sum(), z)
    np.testing.assert_allclose(f_grad(z), numeric, **FD_TOL)


# Rows shorter than, equal to and past the kernels' 8 lanes of maxima and sums,
# with and without a remainder, and one long row.
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 1), (4, 8), (3, 17), (2, 1000)],
                         ids=["1d", "2d", "1-col", "8-cols", "17-cols", "1000-cols"])
def test_softmax_matches_reference(shape, dtype, rng):
    z = _inputs(rng, dtype, shape)
    p = act.softmax(z)
    assert p.dtype == dtype and p.shape == z.shape
    np.testing.assert_allclose(p, reference.softmax(z), **TOL[dtype])
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, **TOL[dtype])


@pytest.mark.parametrize("shape", [(5,), (3, 4)], ids=["1d", "2d"])
def test_softmax_grad_matches_reference(shape, dtype, rng):
    z = _inputs(rng, dtype, shape)
    g = rng.standard_normal(shape).astype(dtype)
    dz = act.softmax_grad(z, g)
    assert dz.dtype == dtype and dz.shape == z.shape
    np.testing.assert_allclose(dz, reference.softmax_grad(z, g), **TOL[dtype])


@pytest.mark.parametrize("shape", [(5,), (3, 4)], ids=["1d", "2d"])
def test_softmax_grad_by_finite_differences(shape, rng):
    z = rng.standard_normal(shape) * 2
    g = rng.standard_normal(shape)
    # softmax_grad(z, g) is the gradient of L(z) = sum(g * softmax(z)).
    numeric = reference.numeric_grad(lambda: np.sum(g * act.softmax(z)), z)
    np.testing.assert_allclose(act.softmax_grad(z, g), numeric, **FD_TOL)


def test_softmax_hand_worked_example():
    # softmax([0, ln 3]) = [1, 3] / (1 + 3) = [0.25, 0.75]
    np.testing.assert_allclose(act.softmax([0.0, np.log(3.0)]), [0.25, 0.75], rtol=1e-15)
    # Rows are independent: a constant shift within a row changes nothing.
    np.testing.assert_allclose(act.softmax([[0.0, np.log(3.0)], [5.0, 5.0 + np.log(3.0)]]),
                               [[0.25, 0.75], [0.25, 0.75]], rtol=1e-14)
    # With p = [0.25, 0.75] and g = [1, 0]: p.g = 0.25, dz = p * (g - 0.25)
    # = [0.25 * 0.75, 0.75 * -0.25] = [0.1875, -0.1875].
    np.testing.assert_allclose(act.softmax_grad([0.0, np.log(3.0)], [1.0, 0.0]),
                               [0.1875, -0.1875], rtol=1e-14)


# --- conventions at 0 -------------------------------------------------------

@pytest.mark.parametrize("name, value, deriv", [
    ("sigmoid", 0.5, 0.25),
    ("tanh", 0.0, 1.0),
    ("relu", 0.0, 0.0),          # ReLU'(0) = 0
    ("leaky_relu", 0.0, 0.01),   # leaky ReLU'(0) = alpha (default 0.01)
    ("linear", 0.0, 1.0),
    ("step", 1.0, 0.0),          # step(0) = 1, step' = 0 everywhere
])
@pytest.mark.parametrize("zero", [0.0, -0.0], ids=["+0", "-0"])
def test_conventions_at_zero(name, value, deriv, zero, dtype):
    z = np.array([zero], dtype=dtype)
    assert getattr(act, name)(z)[0] == np.asarray(value, dtype)
    assert getattr(act, name + "_grad")(z)[0] == np.asarray(deriv, dtype)


def test_leaky_relu_grad_at_zero_is_alpha(dtype):
    z = np.zeros(3, dtype)
    np.testing.assert_array_equal(act.leaky_relu_grad(z, 0.3), np.full(3, 0.3, dtype))
    np.testing.assert_array_equal(act.leaky_relu(z, 0.3), z)


def test_step_grad_is_zero_everywhere(dtype, rng):
    z = np.concatenate([_inputs(rng, dtype, (50,)), np.array([0.0, -0.0, 1e4, -1e4], dtype)])
    assert not act.step_grad(z).any()


# --- stability and bounds ---------------------------------------------------

def test_saturation_at_large_inputs(dtype):
    z = np.array([-1e4, 1e4], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sig, sig_grad = act.sigmoid(z), act.sigmoid_grad(z)
        th, th_grad = act.tanh(z), act.tanh_grad(z)
        p = act.softmax(z)
        dz = act.softmax_grad(z, np.array([1.0, -1.0], dtype))
    # exp(-1e4) underflows to exactly 0, so the saturated values are exact.
    np.testing.assert_array_equal(sig, [0.0, 1.0])
    np.testing.assert_array_equal(sig_grad, [0.0, 0.0])
    np.testing.assert_array_equal(th, [-1.0, 1.0])
    np.testing.assert_array_equal(th_grad, [0.0, 0.0])
    np.testing.assert_array_equal(act.softmax(np.array([1e4, -1e4], dtype)), [1.0, 0.0])
    np.testing.assert_array_equal(p, [0.0, 1.0])
    assert np.isfinite(dz).all()
    np.testing.assert_array_equal(dz, [0.0, 0.0])    # p is one-hot: the Jacobian is 0


@pytest.mark.parametrize("offset", [1e4, -1e4, 710.0, -750.0])
def test_softmax_is_shift_invariant_where_exp_would_overflow(offset):
    # exp(710) overflows and exp(-750) underflows in float64; softmax(z + c) = softmax(z).
    base = np.array([[0.0, 1.0, 2.0]])
    np.testing.assert_allclose(act.softmax(base + offset), reference.softmax(base), rtol=1e-9)


def test_softmax_of_extreme_row():
    np.testing.assert_array_equal(act.softmax(np.array([[1e300, 0.0, -1e300]])),
                                  [[1.0, 0.0, 0.0]])


def test_sigmoid_relative_accuracy_in_the_tails():
    # 1 / (1 + exp(710)) would overflow to 1/inf = 0; the true value is 4.5e-309.
    z = np.array([-710.0, -100.0, -30.0, 30.0, 100.0])
    np.testing.assert_allclose(act.sigmoid(z), reference.sigmoid(z), rtol=1e-12, atol=0)
    assert act.sigmoid(np.array([-710.0]))[0] > 0
    np.testing.assert_allclose(act.sigmoid_grad(z), reference.sigmoid_grad(z),
                               rtol=1e-12, atol=0)


def _ulps_from(approx, exact):
    """|approx - exact| in units of float32's spacing at the exact value."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(approx.astype(np.float64) - exact) / spacing


def test_float32_sigmoid_tanh_softmax_accuracy_in_ulps(rng):
    # float32 takes tinycore's own exp (a polynomial that vectorises) rather
    # than libm's.  Every 257th float32 in (-87, 0], both signs: about 8.7
    # million inputs; sigmoid is within 3 ulp of the float64 value, tanh
    # within 2 (the kernel's comments give the measured bounds).  Softmax is
    # bounded by the rounding of z - max(z) to float32 (an error of up to
    # 1e-6 in the exponent), so it is held to a relative 2e-6.
    bits = np.arange(0x80000000, int(np.float32(-87.0).view(np.uint32)), 257, dtype=np.uint64)
    z = bits.astype(np.uint32).view(np.float32)
    z = np.concatenate([z, -z])
    z64 = z.astype(np.float64)
    assert _ulps_from(act.sigmoid(z), reference.sigmoid(z64)).max() <= 3
    assert _ulps_from(act.tanh(z), np.tanh(z64)).max() <= 2
    rows = (rng.standard_normal((1 << 16, 16)) * 4).astype(np.float32)
    exact = reference.softmax(rows.astype(np.float64))
    assert np.abs(act.softmax(rows) / exact - 1).max() <= 2e-6


def test_derivative_maxima(dtype):
    z = np.linspace(-20, 20, 4001).astype(dtype)       # contains 0 exactly
    assert z[2000] == 0
    sig_grad, th_grad = act.sigmoid_grad(z), act.tanh_grad(z)
    assert sig_grad.max() <= 0.25 and sig_grad[2000] == 0.25
    assert th_grad.max() <= 1.0 and th_grad[2000] == 1.0
    assert (sig_grad >= 0).all() and (th_grad >= 0).all()


def test_sigmoid_symmetry(rng):
    # s(-z) = 1 - s(z)
    z = rng.standard_normal(100) * 10
    np.testing.assert_allclose(act.sigmoid(-z), 1.0 - act.sigmoid(z), atol=1e-15)


# --- shapes and dtypes ------------------------------------------------------

@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("shape", [(6,), (2, 3, 4), (1, 1), (0,), (3, 0), (2, 0, 5)],
                         ids=["1d", "3d", "1x1", "empty1d", "empty2d", "empty3d"])
def test_elementwise_keep_shape(name, shape, dtype, rng):
    f, f_grad, ref, ref_grad = _functions(name)
    z = _inputs(rng, dtype, shape)
    value, deriv = f(z), f_grad(z)
    assert value.shape == shape and deriv.shape == shape
    assert value.dtype == dtype and deriv.dtype == dtype
    np.testing.assert_allclose(value, ref(z), **TOL[dtype])
    np.testing.assert_allclose(deriv, ref_grad(z), **TOL[dtype])


# np.ascontiguousarray would return at least 1-D; 0-d input must stay 0-d.
def test_elementwise_keep_0d_shape(dtype):
    z = np.asarray(0.7, dtype=dtype)
    for name in ELEMENTWISE:
        f, f_grad, _, _ = _functions(name)
        assert f(z).shape == () and f_grad(z).shape == (), name
        assert f(0.7).shape == (), name


def test_softmax_rejects_0d():
    with pytest.raises(ValueError, match="1-D vector or a 2-D"):
        act.softmax(3.0)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_scalars_give_right_values(name):
    # The value is right for a Python float and a 0-d array, whatever the shape.
    f, f_grad, ref, ref_grad = _functions(name)
    for z in (-1.5, 0.7, np.float64(2.0), np.asarray(-0.3)):
        np.testing.assert_allclose(np.ravel(f(z)), np.ravel(ref(z)), rtol=1e-12)
        np.testing.assert_allclose(np.ravel(f_grad(z)), np.ravel(ref_grad(z)), rtol=1e-12)


def test_float32_scalar_stays_float32():
    assert act.sigmoid(np.float32(1.0)).dtype == np.float32
    assert act.relu(np.array([1, -2], dtype=np.int64)).dtype == np.float64
    assert act.tanh([True, False]).dtype == np.float64
    assert act.softmax(np.ones(3, np.float32)).dtype == np.float32


@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh"])
def test_non_contiguous_input(name, rng):
    f, f_grad, ref, ref_grad = _functions(name)
    base = rng.standard_normal((6, 8))
    for z in (base.T, base[::2, ::-3], np.asfortranarray(base)):
        np.testing.assert_allclose(f(z), ref(z), rtol=1e-12)
        np.testing.assert_allclose(f_grad(z), ref_grad(z), rtol=1e-12)
    z = base[:, ::2].T                            # softmax rows of a strided view
    np.testing.assert_allclose(act.softmax(z), reference.softmax(z), rtol=1e-12)


def test_input_is_not_modified(rng):
    z = rng.standard_normal((3, 4))
    saved = z.copy()
    for name in ELEMENTWISE:
        getattr(act, name)(z)
        getattr(act, name + "_grad")(z)
    act.softmax(z)
    act.softmax_grad(z, np.ones_like(z))
    np.testing.assert_array_equal(z, saved)


# --- API parity --------------------------------------------------------------

def test_elementwise_list_and_names():
    assert set(act.ELEMENTWISE) == set(ELEMENTWISE)
    assert set(act.NAMES) == set(ELEMENTWISE) | {"softmax"}
    assert set(act.CODES) == set(act.NAMES)
    assert len(set(act.CODES.values())) == len(act.CODES)


@pytest.mark.parametrize("name", act.ELEMENTWISE)
def test_every_activation_has_value_and_grad_with_same_signature(name, dtype):
    f = getattr(act, name)
    f_grad = getattr(act, name + "_grad")
    assert callable(f) and callable(f_grad)
    assert inspect.signature(f) == inspect.signature(f_grad)
    assert list(inspect.signature(f).parameters)[0] == "z"
    z = np.array([-1.0, 0.5, 2.0], dtype=dtype)
    assert f(z).dtype == dtype and f_grad(z).dtype == dtype
    assert f.__doc__ and f_grad.__doc__


def test_value_and_derivative_have_same_signature():
    assert inspect.signature(act.value) == inspect.signature(act.derivative)


def _top_level_names(module, *, imports):
    """Public names bound at the top level of a module's source file."""
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif imports and isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names.update(alias.asname or alias.name for alias in node.names)
        elif imports and isinstance(node, ast.Import):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return {n for n in names if not n.startswith("_") or n == "__version__"} - {"__all__"}


def test_package_all_matches_exported_names():
    # thinc's test_import__all__: what __init__ imports or defines is __all__.
    assert len(tinycore.__all__) == len(set(tinycore.__all__))
    assert set(tinycore.__all__) == _top_level_names(tinycore, imports=True)
    for name in tinycore.__all__:
        assert hasattr(tinycore, name), name
    namespace = {}
    exec("from tinycore import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(tinycore.__all__)
    # Any other public attribute is only a submodule bound by an import.
    extra = {n for n in dir(tinycore) if not n.startswith("_")} - set(tinycore.__all__)
    assert all(inspect.ismodule(getattr(tinycore, n)) for n in extra), extra


@pytest.mark.parametrize("module", [tinycore.activations, tinycore.losses],
                         ids=["activations", "losses"])
def test_module_all_matches_definitions(module):
    assert len(module.__all__) == len(set(module.__all__))
    assert set(module.__all__) == _top_level_names(module, imports=False)


# --- bad input ----------------------------------------------------------------

def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'relux'") as info:
        act.value("relux", [1.0])
    for name in act.NAMES:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="unknown activation"):
        act.derivative("Sigmoid", [1.0])
    with pytest.raises(TypeError, match="by name"):
        act.value(act.relu, [1.0])


def test_softmax_has_no_elementwise_derivative():
    with pytest.raises(ValueError, match="softmax_grad"):
        act.derivative("softmax", [1.0, 2.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", ["sigmoid", "relu_grad", "softmax", "value"])
def test_nan_and_inf_raise(bad, fn, dtype):
    z = np.array([[1.0, bad]], dtype=dtype)
    call = {"value": lambda: act.value("tanh", z)}.get(fn, lambda: getattr(act, fn)(z))
    with pytest.raises(ValueError, match="NaN or infinity"):
        call()


_ELEMENTWISE = [name for name in act.NAMES if name != "softmax"]


@pytest.mark.parametrize("position", [0, 2047, 2048, 4095, 5000, 6143, 6149])
@pytest.mark.parametrize("fn", _ELEMENTWISE + [f"{name}_grad" for name in _ELEMENTWISE]
                         + ["softmax", "softmax_grad"])
def test_nan_and_inf_raise_wherever_they_are(position, fn, dtype):
    # The kernels check the input as they read it: sigmoid, tanh and softmax
    # in chunks of 2048 elements, the others in their one loop.  A bad value
    # anywhere, at either edge of a chunk or in the last, partial vector of
    # the loop (6150 elements are no whole number of vectors), is an error.
    for bad in (np.nan, np.inf, -np.inf):
        z = np.linspace(-3, 3, 6150).astype(dtype).reshape(50, 123)
        z.flat[position] = bad
        call = {"softmax_grad": lambda: act.softmax_grad(z, np.ones_like(z))}.get(
            fn, lambda: getattr(act, fn)(z))
        with pytest.raises(ValueError, match=r"z contains NaN or infinity"):
            call()


def test_finiteness_check_on_edge_values(dtype):
    from tinycore import _validation
    info = np.finfo(dtype)
    fine = np.array([info.max, -info.max, -0.0, 0.0, info.smallest_subnormal, info.tiny],
                    dtype=dtype)
    assert _validation.all_finite(fine)
    np.testing.assert_array_equal(act.linear(fine), fine)
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    # NaN with a payload, negative NaN, and both infinities, from their bits.
    for pattern in (np.array(np.nan, dtype).view(bits) | 1, np.array(-np.nan, dtype).view(bits),
                    np.array(np.inf, dtype).view(bits), np.array(-np.inf, dtype).view(bits)):
        bad = fine.copy()
        bad[3] = np.array(pattern, bits).view(dtype)
        assert not _validation.all_finite(bad)
        with pytest.raises(ValueError, match="NaN or infinity"):
            act.linear(bad)


def test_nan_in_softmax_grad_upstream_raises():
    with pytest.raises(ValueError, match="grad contains NaN"):
        act.softmax_grad([1.0, 2.0], [0.0, np.nan])


def test_large_float64_stays_float64():
    # A float64 1e300 stays float64 (only float32 input gives float32 output).
    np.testing.assert_array_equal(act.relu(np.array([1e300])), [1e300])


@pytest.mark.parametrize("bad", [
    np.array([1 + 2j]), np.array([object()], dtype=object), "abc", ["a", "b"], None,
    {"z": 1.0},
], ids=["complex", "object", "str", "str-list", "None", "dict"])
@pytest.mark.parametrize("fn", ["sigmoid", "tanh_grad", "softmax"])
def test_non_real_input_raises_type_error(bad, fn):
    with pytest.raises(TypeError, match="z must"):
        getattr(act, fn)(bad)


def test_softmax_rejects_3d_and_empty():
    with pytest.raises(ValueError, match="1-D vector or a 2-D"):
        act.softmax(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="1-D vector or a 2-D"):
        act.softmax_grad(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="empty"):
        act.softmax(np.zeros((0, 3)))


def test_softmax_grad_shape_mismatch():
    with pytest.raises(ValueError, match="shape of z"):
        act.softmax_grad(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize("call", [
    lambda: act.leaky_relu([1.0], -0.1),
    lambda: act.leaky_relu_grad([1.0], alpha=-1),
    lambda: act.value("leaky_relu", [1.0], alpha=-0.5),
    lambda: act.derivative("leaky_relu", [1.0], alpha=-0.5),
])
def test_negative_alpha_raises(call):
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        call()


@pytest.mark.parametrize("alpha, error", [
    (np.nan, ValueError), (np.inf, ValueError), ("0.1", TypeError), (None, TypeError),
    (True, TypeError),
])
def test_bad_alpha(alpha, error):
    with pytest.raises(error, match="alpha"):
        act.leaky_relu([1.0], alpha)
