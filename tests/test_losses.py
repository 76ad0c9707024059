"""Losses, their gradients and the fused kernels against plain-NumPy formulas."""
import math

import numpy as np
import pytest

import reference
import tinycore
from tinycore import _activations, _losses, losses

# Values are summed in double whatever the dtype; gradients are rounded to dtype.
TOL = {np.dtype("float32"): dict(rtol=1e-5, atol=1e-7),
       np.dtype("float64"): dict(rtol=1e-12, atol=1e-14)}
FD_TOL = dict(rtol=1e-6, atol=1e-8)

NAMES = ["mse", "sse", "mae", "binary_cross_entropy", "cross_entropy"]
CLASSES = {"mse": losses.MSE, "sse": losses.SSE, "mae": losses.MAE,
           "binary_cross_entropy": losses.BinaryCrossEntropy,
           "cross_entropy": losses.CrossEntropy}


def _data(name, rng, dtype, shape=(4, 3)):
    """(pred, target) suited to the loss, pred in ``dtype``.

    Regression targets stay at least 0.1 from pred (MAE's kink), probabilities
    stay in [0.05, 0.95] (away from the clamps), labels are integers.
    """
    if name in ("mse", "sse", "mae"):
        pred = rng.standard_normal(shape)
        gap = rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)
        return pred.astype(dtype), pred + gap
    if name == "binary_cross_entropy":
        return rng.uniform(0.05, 0.95, shape).astype(dtype), rng.uniform(0, 1, shape)
    pred = reference.softmax(rng.standard_normal(shape))
    return pred.astype(dtype), rng.integers(0, shape[1], shape[0])


# --- against the reference ----------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_value_and_grad_match_reference(name, dtype, rng):
    loss = CLASSES[name]()
    pred, target = _data(name, rng, dtype)
    ref, ref_grad = reference.LOSSES[name]
    # The reference sees the same numbers tinycore does: target in pred's dtype.
    target_seen = target if name == "cross_entropy" else target.astype(dtype)
    value = loss.value(pred, target)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, ref(pred, target_seen), **TOL[dtype])
    grad = loss.grad(pred, target)
    assert grad.dtype == dtype and grad.shape == pred.shape
    np.testing.assert_allclose(grad, ref_grad(pred, target_seen), **TOL[dtype])


@pytest.mark.parametrize("name", NAMES)
def test_grad_by_finite_differences(name, rng):
    loss = CLASSES[name]()
    pred, target = _data(name, rng, np.float64)
    numeric = reference.numeric_grad(lambda: loss.value(pred, target), pred)
    np.testing.assert_allclose(loss.grad(pred, target), numeric, **FD_TOL)


def test_cross_entropy_soft_rows_match_reference(dtype, rng):
    pred = reference.softmax(rng.standard_normal((5, 4))).astype(dtype)
    target = reference.softmax(rng.standard_normal((5, 4)))      # distributions
    loss = losses.CrossEntropy()
    target_seen = target.astype(dtype)
    np.testing.assert_allclose(loss.value(pred, target),
                               reference.cross_entropy(pred, target_seen), **TOL[dtype])
    np.testing.assert_allclose(loss.grad(pred, target),
                               reference.cross_entropy_grad(pred, target_seen), **TOL[dtype])
    p64 = pred.astype(np.float64)
    numeric = reference.numeric_grad(lambda: loss.value(p64, target), p64)
    np.testing.assert_allclose(loss.grad(p64, target), numeric, **FD_TOL)


def test_cross_entropy_labels_and_one_hot_rows_agree(dtype, rng):
    pred = reference.softmax(rng.standard_normal((6, 4))).astype(dtype)
    labels = rng.integers(0, 4, 6)
    rows = reference.one_hot(labels, 4)
    loss = losses.CrossEntropy()
    value = loss.value(pred, labels)
    grad = loss.grad(pred, labels)
    for target in (rows, rows.astype(np.int32), labels.astype(np.uint8),
                   labels.astype(np.int32), labels.astype(np.float64), list(labels)):
        assert loss.value(pred, target) == pytest.approx(value, rel=1e-12)
        np.testing.assert_allclose(loss.grad(pred, target), grad, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_get_by_name(name):
    loss = losses.get(name)
    assert type(loss) is CLASSES[name]
    assert loss.name == name
    assert losses.get(loss) is loss
    assert set(losses.LOSSES) == set(NAMES)
    assert repr(loss) == f"{CLASSES[name].__name__}()"


@pytest.mark.parametrize("name", NAMES)
def test_inputs_not_modified(name, rng):
    pred, target = _data(name, rng, np.float64)
    saved_pred, saved_target = pred.copy(), target.copy()
    loss = losses.get(name)
    loss.value(pred, target)
    loss.grad(pred, target)
    np.testing.assert_array_equal(pred, saved_pred)
    np.testing.assert_array_equal(target, saved_target)


def test_regression_target_may_be_1d_for_one_output(dtype, rng):
    pred = rng.standard_normal((5, 1)).astype(dtype)
    target = rng.standard_normal(5)
    for name in ("mse", "sse", "mae"):
        loss = losses.get(name)
        assert loss.value(pred, target) == loss.value(pred, target.reshape(5, 1))
        np.testing.assert_array_equal(loss.grad(pred, target),
                                      loss.grad(pred, target.reshape(5, 1)))


# --- worked examples, by hand -------------------------------------------------

def test_worked_examples_regression():
    pred, target = [[1.0, 2.0]], [[0.0, 0.0]]
    # MSE = (1^2 + 2^2) / 2 = 2.5; grad = 2 (a - t) / 2 = [1, 2]
    assert losses.MSE().value(pred, target) == 2.5
    np.testing.assert_array_equal(losses.MSE().grad(pred, target), [[1.0, 2.0]])
    # SSE = 1/2 (1^2 + 2^2) = 2.5; grad = a - t = [1, 2]
    assert losses.SSE().value(pred, target) == 2.5
    np.testing.assert_array_equal(losses.SSE().grad(pred, target), [[1.0, 2.0]])
    # Two rows: SSE sums over the batch, MSE divides by N = 4.
    # SSE = 1/2 (1 + 4 + 9 + 16) = 15; MSE = 30 / 4 = 7.5
    assert losses.SSE().value([[1.0, 2.0], [3.0, 4.0]], np.zeros((2, 2))) == 15.0
    assert losses.MSE().value([[1.0, 2.0], [3.0, 4.0]], np.zeros((2, 2))) == 7.5
    # MAE = (|1 - 0| + |-2 - 0| + |3 - 3|) / 3 = 1; grad = sign / 3 = [1/3, -1/3, 0]
    assert losses.MAE().value([[1.0, -2.0, 3.0]], [[0.0, 0.0, 3.0]]) == 1.0
    np.testing.assert_allclose(losses.MAE().grad([[1.0, -2.0, 3.0]], [[0.0, 0.0, 3.0]]),
                               [[1 / 3, -1 / 3, 0.0]], rtol=1e-15)


def test_worked_examples_binary_cross_entropy():
    bce = losses.BinaryCrossEntropy()
    # -log 0.5 = 0.6931471805599453; grad = (0.5 - 1) / (0.5 * 0.5) = -2
    assert bce.value([[0.5]], [[1.0]]) == pytest.approx(math.log(2), rel=1e-15)
    np.testing.assert_allclose(bce.grad([[0.5]], [[1.0]]), [[-2.0]], rtol=1e-15)
    # mean(-log 0.8, -log(1 - 0.2)) = -log 0.8 = 0.2231435513
    # grad = [(0.8 - 1) / (0.8 * 0.2), (0.2 - 0) / (0.2 * 0.8)] / 2 = [-0.625, 0.625]
    assert bce.value([[0.8, 0.2]], [[1.0, 0.0]]) == pytest.approx(0.2231435513142097)
    np.testing.assert_allclose(bce.grad([[0.8, 0.2]], [[1.0, 0.0]]), [[-0.625, 0.625]],
                               rtol=1e-14)


def test_worked_examples_cross_entropy():
    ce = losses.CrossEntropy()
    pred = [[0.25, 0.75], [0.5, 0.5]]
    # (-log 0.75 - log 0.5) / 2 = (0.2876820725 + 0.6931471806) / 2 = 0.4904146265
    assert ce.value(pred, [1, 0]) == pytest.approx(0.49041462650586315, rel=1e-12)
    # grad = -1 / (p[label] * B) at the label: -1 / (0.75 * 2) = -2/3, -1 / (0.5 * 2) = -1
    np.testing.assert_allclose(ce.grad(pred, [1, 0]), [[0.0, -2 / 3], [-1.0, 0.0]],
                               rtol=1e-15)
    # Soft target [0.5, 0.5] on row [0.25, 0.75]:
    # -(0.5 log 0.25 + 0.5 log 0.75) = 0.6931471806 + 0.1438410362 = 0.8369882168
    assert ce.value([[0.25, 0.75]], [[0.5, 0.5]]) == pytest.approx(0.8369882167858358)


# --- clamps at probabilities of exactly 0 and 1 -------------------------------

def test_binary_cross_entropy_at_0_and_1(dtype):
    bce = losses.BinaryCrossEntropy()
    pred = np.array([[0.0, 1.0, 0.0, 1.0]], dtype)
    # Right answers: log 1 = 0 and 0 * log 0 counts as 0, so the loss is 0;
    # the gradient (p - t) / max(p (1 - p), 1e-12) is 0 / 1e-12 = 0.
    right = np.array([[0.0, 1.0, 0.0, 1.0]])
    assert bce.value(pred, right) == 0.0
    np.testing.assert_array_equal(bce.grad(pred, right), np.zeros((1, 4)))
    # Wrong answers: log 0 is clamped at -100, so each element costs 100 and
    # the mean is 100; gradient (p - t) / 1e-12 / N = +-1e12 / 4 = +-2.5e11.
    wrong = np.array([[1.0, 0.0, 1.0, 0.0]])
    assert bce.value(pred, wrong) == 100.0
    grad = bce.grad(pred, wrong)
    assert np.isfinite(grad).all() and grad.dtype == dtype
    np.testing.assert_allclose(grad, [[-2.5e11, 2.5e11, -2.5e11, 2.5e11]], rtol=1e-6)


def test_cross_entropy_at_probability_0(dtype):
    ce = losses.CrossEntropy()
    pred = np.array([[0.0, 1.0], [1.0, 0.0]], dtype)
    # Row 0 is certain and wrong: -log 0 -> 100; row 1 certain and right: -log 1 = 0.
    # Mean over 2 rows: 50.  Gradient at the wrong label: -1 / 1e-12 / 2 = -5e11.
    assert ce.value(pred, [0, 0]) == 50.0
    assert ce.value(pred, [[1, 0], [1, 0]]) == 50.0
    for target in ([0, 0], [[1, 0], [1, 0]]):
        grad = ce.grad(pred, target)
        assert np.isfinite(grad).all()
        np.testing.assert_allclose(grad, [[-5e11, 0.0], [-0.5, 0.0]], rtol=1e-6)


# --- fused kernels --------------------------------------------------------------

def _softmax_case(rng, dtype, n=5, k=4):
    logits = (rng.standard_normal((n, k)) * 3).astype(dtype)
    prob = reference.softmax(logits).astype(dtype)
    labels = rng.integers(0, k, n).astype(np.int64)
    return logits, prob, labels


# Classes fewer than, equal to and past the kernel's 8 lanes of maxima and sums.
@pytest.mark.parametrize("classes", [4, 8, 19, 1000])
def test_softmax_cross_entropy_labels_kernel(dtype, rng, classes):
    logits, prob, labels = _softmax_case(rng, dtype, k=classes)
    dz = np.full_like(prob, np.nan)
    scale = 0.25
    total = _losses.softmax_cross_entropy_labels(scale, logits, prob, labels, dz)
    np.testing.assert_allclose(total, reference.softmax_cross_entropy_sum(logits, labels),
                               **TOL[dtype])
    expected_dz = scale * (prob.astype(np.float64) - reference.one_hot(labels, classes))
    np.testing.assert_allclose(dz, expected_dz, **TOL[dtype])
    # Same value as the unfused loss on the probabilities (mean = sum / batch).
    np.testing.assert_allclose(total / 5, losses.CrossEntropy().value(prob, labels),
                               rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_softmax_cross_entropy_rows_kernel(dtype, rng):
    logits, prob, _ = _softmax_case(rng, dtype)
    target = reference.softmax(rng.standard_normal((5, 4))).astype(dtype)
    dz = np.full_like(prob, np.nan)
    scale = 0.5
    total = _losses.softmax_cross_entropy_rows(scale, logits, prob, target, dz)
    np.testing.assert_allclose(total, reference.softmax_cross_entropy_sum(logits, target),
                               **TOL[dtype])
    np.testing.assert_allclose(dz, scale * (prob.astype(np.float64) - target), **TOL[dtype])


# The kernels take the rows' exps in blocks of 32 rows: a batch of less than
# one block, exactly one, one row past it and several blocks.
@pytest.mark.parametrize("rows", [31, 32, 33, 97])
def test_softmax_cross_entropy_kernels_treat_each_row_alone(dtype, rng, rows):
    logits, prob, labels = _softmax_case(rng, dtype, n=rows, k=10)
    target = reference.softmax(rng.standard_normal((rows, 10))).astype(dtype)
    for kernel, y, want in [
            (_losses.softmax_cross_entropy_labels, labels,
             reference.softmax_cross_entropy_sum(logits, labels)),
            (_losses.softmax_cross_entropy_rows, target,
             reference.softmax_cross_entropy_sum(logits, target))]:
        dz = np.full_like(prob, np.nan)
        total = kernel(0.5, logits, prob, y, dz)
        np.testing.assert_allclose(total, want, **TOL[dtype])
        # Row by row: the same bits in dz, and the same values.
        dz_alone = np.full_like(prob, np.nan)
        values = [kernel(0.5, logits[i:i + 1], prob[i:i + 1], y[i:i + 1], dz_alone[i:i + 1])
                  for i in range(rows)]
        np.testing.assert_array_equal(dz, dz_alone)
        np.testing.assert_allclose(total, math.fsum(values), rtol=1e-13)


def test_softmax_of_many_rows_is_each_row_alone(dtype, rng):
    z = (rng.standard_normal((70, 10)) * 4).astype(dtype)
    z[40, 3] = 1e4          # one row far from the others: its own maximum
    out = np.full_like(z, np.nan)
    assert _activations.activation_value(_activations.Activation.SOFTMAX, 0.0, z, out)
    alone = np.full_like(z, np.nan)
    for i in range(70):
        _activations.activation_value(_activations.Activation.SOFTMAX, 0.0,
                                      z[i:i + 1], alone[i:i + 1])
    np.testing.assert_array_equal(out, alone)
    np.testing.assert_allclose(out, reference.softmax(z.astype(np.float64)), **TOL[dtype])


def test_sigmoid_binary_cross_entropy_kernel(dtype, rng):
    logits = (rng.standard_normal((4, 3)) * 4).astype(dtype)
    prob = reference.sigmoid(logits).astype(dtype)
    target = rng.uniform(0, 1, (4, 3)).astype(dtype)
    dz = np.full_like(prob, np.nan)
    scale = 1 / 12
    total = _losses.sigmoid_binary_cross_entropy(scale, logits, prob, target, dz)
    np.testing.assert_allclose(total,
                               reference.sigmoid_binary_cross_entropy_sum(logits, target),
                               **TOL[dtype])
    np.testing.assert_allclose(dz, scale * (prob.astype(np.float64) - target), **TOL[dtype])
    if dtype == np.float64:
        # Not in float32: there 1 - p, rounded from a p near 1, loses the digits
        # that the fused form (from z) keeps, which is the point of fusing.
        np.testing.assert_allclose(total / 12, losses.BinaryCrossEntropy().value(prob, target),
                                   rtol=1e-12)


@pytest.mark.parametrize("kernel", ["labels", "rows", "sigmoid"])
def test_fused_gradient_by_finite_differences(kernel, rng):
    # With scale 1, dz is the gradient of the returned sum with respect to the logits.
    logits, _, labels = _softmax_case(rng, np.float64)
    target = reference.one_hot(labels, 4) if kernel != "sigmoid" else rng.uniform(0, 1, (5, 4))
    fn = {"labels": lambda p, dz: _losses.softmax_cross_entropy_labels(1.0, logits, p, labels, dz),
          "rows": lambda p, dz: _losses.softmax_cross_entropy_rows(1.0, logits, p, target, dz),
          "sigmoid": lambda p, dz: _losses.sigmoid_binary_cross_entropy(1.0, logits, p,
                                                                        target, dz)}[kernel]
    activation = reference.sigmoid if kernel == "sigmoid" else reference.softmax
    scratch = np.empty_like(logits)
    numeric = reference.numeric_grad(lambda: fn(activation(logits), scratch), logits)
    dz = np.empty_like(logits)
    fn(activation(logits), dz)
    np.testing.assert_allclose(dz, numeric, **FD_TOL)


def test_fused_kernels_exact_at_large_logits(dtype):
    logits = np.array([[1e4, -1e4]], dtype)
    prob = np.array([[1.0, 0.0]], dtype)        # softmax(logits), exactly
    scale = 0.5
    # logsumexp = 1e4 + log(1 + exp(-2e4)) = 1e4; minus z[1] = -1e4 gives 2e4.
    dz = np.empty_like(prob)
    total = _losses.softmax_cross_entropy_labels(scale, logits, prob,
                                                 np.array([1], np.int64), dz)
    assert total == 2e4
    np.testing.assert_array_equal(dz, [[0.5, -0.5]])     # scale * ([1, 0] - [0, 1])
    total = _losses.softmax_cross_entropy_labels(scale, logits, prob,
                                                 np.array([0], np.int64), dz)
    assert total == 0.0
    np.testing.assert_array_equal(dz, [[0.0, 0.0]])
    # Same with the one-hot row [0, 1].
    dz = np.empty_like(prob)
    total = _losses.softmax_cross_entropy_rows(scale, logits, prob,
                                               np.array([[0.0, 1.0]], dtype), dz)
    assert total == 2e4
    np.testing.assert_array_equal(dz, [[0.5, -0.5]])
    # Sigmoid: s(1e4) = 1 and s(-1e4) = 0.  Both wrong: max(z, 0) - z t + log1p(exp(-|z|))
    # = 1e4 - 0 + 0 and 0 + 1e4 + 0, so 2e4; dz = scale * (p - t) = [0.5, -0.5].
    sig_prob = np.array([[1.0, 0.0]], dtype)
    dz = np.empty_like(prob)
    total = _losses.sigmoid_binary_cross_entropy(scale, logits, sig_prob,
                                                 np.array([[0.0, 1.0]], dtype), dz)
    assert total == 2e4
    np.testing.assert_array_equal(dz, [[0.5, -0.5]])
    # Both right: the loss is log1p(exp(-1e4)) twice, which is 0.
    total = _losses.sigmoid_binary_cross_entropy(scale, logits, sig_prob,
                                                 np.array([[1.0, 0.0]], dtype), dz)
    assert total == 0.0
    assert np.isfinite(dz).all()


# --- bad input ------------------------------------------------------------------

def test_unknown_loss_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown loss 'msex'") as info:
        losses.get("msex")
    for name in NAMES:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("bad", [3, None, losses.MSE, ["mse"]])
def test_get_wrong_type(bad):
    with pytest.raises(TypeError, match="loss must be given by name"):
        losses.get(bad)


PRED2 = [[0.25, 0.75], [0.5, 0.5]]


@pytest.mark.parametrize("target, match", [
    ([0, 2], r"labels outside \[0, 2\)"),
    ([-1, 0], r"labels outside \[0, 2\)"),
    ([0.0, 1.5], "whole numbers"),
    ([0.0, np.nan], "whole numbers"),
    ([0, 1, 1], "target has 3 samples but the predictions .* have 2"),
    ([[1, 0, 0], [0, 1, 0]], r"labels of shape \(2,\) or target rows of shape \(2, 2\)"),
    ([[1, 0]], "target has 1 samples but the predictions .* have 2"),
    ([[1.0, 0.0], [-0.5, 1.5]], "non-negative"),
    ([[1.0, 0.0], [np.nan, 1.0]], "target contains NaN"),
    (np.zeros((2, 2, 1)), "target must be 2-D"),
], ids=["label-too-big", "label-negative", "label-fraction", "label-nan", "too-many-labels",
        "rows-wrong-width", "rows-too-few", "rows-negative", "rows-nan", "target-3d"])
def test_cross_entropy_bad_target(target, match):
    with pytest.raises(ValueError, match=match):
        losses.CrossEntropy().value(PRED2, target)
    with pytest.raises(ValueError, match=match):
        losses.CrossEntropy().grad(PRED2, target)


@pytest.mark.parametrize("name", ["binary_cross_entropy", "cross_entropy"])
@pytest.mark.parametrize("pred", [[[1.5, 0.5]], [[-0.1, 0.5]]], ids=["above-1", "below-0"])
def test_probability_losses_reject_pred_outside_0_1(name, pred):
    target = [[1.0, 0.0]] if name == "binary_cross_entropy" else [0]
    with pytest.raises(ValueError, match=r"pred must be probabilities in \[0, 1\]"):
        losses.get(name).value(pred, target)


def test_binary_cross_entropy_rejects_target_outside_0_1():
    with pytest.raises(ValueError, match=r"target must be probabilities in \[0, 1\]"):
        losses.BinaryCrossEntropy().value([[0.5, 0.5]], [[2.0, 0.0]])


@pytest.mark.parametrize("name", ["mse", "sse", "mae", "binary_cross_entropy"])
@pytest.mark.parametrize("target, match", [
    ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], r"expects target of shape \(2, 2\)"),
    ([0.5, 0.5], r"expects target of shape \(2, 2\)"),            # 1-D needs one output
    ([[0.5, 0.5]], "target has 1 samples but the predictions .* have 2"),
    (np.full((3, 2), 0.5), "target has 3 samples but the predictions .* have 2"),
    ([[0.5, np.inf], [0.5, 0.5]], "target contains NaN or infinity"),
], ids=["wrong-width", "1d-for-2-outputs", "short-batch", "long-batch", "inf"])
def test_elementwise_losses_bad_target(name, target, match):
    with pytest.raises(ValueError, match=match):
        losses.get(name).value(PRED2, target)
    with pytest.raises(ValueError, match=match):
        losses.get(name).grad(PRED2, target)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pred, match", [
    ([[0.5, np.nan]], "pred contains NaN or infinity"),
    ([0.5, 0.5], "pred must be 2-D"),
    (np.zeros((0, 2)), "pred is empty"),
    ([[0.5], [0.5, 0.5]], "pred could not be read"),
], ids=["nan", "1d", "empty", "ragged"])
def test_bad_pred(name, pred, match):
    target = [0] if name == "cross_entropy" else [[0.5, 0.5]]
    with pytest.raises(ValueError, match=match):
        losses.get(name).value(pred, target)


# as_float_array casts before checking finiteness, on purpose, and must do so
# without NumPy's "overflow encountered in cast" warning (an error under -W error).
def test_nan_in_float32_after_conversion():
    # 1e39 fits a float64 but is inf as float32: caught after the conversion.
    with pytest.raises(ValueError, match=r"target contains NaN or infinity \(in float32\)"):
        losses.MSE().value(np.ones((1, 1), np.float32), [[1e39]])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("pred, target, match", [
    ("abc", [[0.5]], "pred must be an array of numbers, got str"),
    (None, [[0.5]], "pred must be an array of numbers, got NoneType"),
    ({"a": 1}, [[0.5]], "pred must be an array of numbers, got dict"),
    ([[0.5 + 1j]], [[0.5]], "pred must hold real numbers"),
    ([["a"]], [[0.5]], "pred must hold real numbers"),
    ([[0.5]], "0", "target must be an array of numbers"),
    ([[0.5]], None, "target must be an array of numbers"),
], ids=["str", "None", "dict", "complex", "str-array", "str-target", "None-target"])
def test_wrong_python_types(name, pred, target, match):
    with pytest.raises(TypeError, match=match):
        losses.get(name).value(pred, target)


@pytest.mark.parametrize("labels, match", [
    (np.array(["a", "b"]), "class labels must be integers"),
    (np.array([True, False]), "class labels must be integers"),
    (np.array([1 + 0j, 0j]), "class labels must be integers"),
], ids=["str", "bool", "complex"])
def test_cross_entropy_label_types(labels, match):
    with pytest.raises(TypeError, match=match):
        losses.CrossEntropy().value(PRED2, labels)


def test_loss_objects_are_exported():
    assert "losses" in tinycore.__all__
    for cls in CLASSES.values():
        assert issubclass(cls, losses.Loss)
        assert cls.__name__ in losses.__all__
