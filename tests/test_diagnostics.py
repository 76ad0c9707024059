"""tinycore.diagnostics against hand-computed values on tiny chains.

A chain of one-unit layers a_k = f(w_k a_{k-1} + b_k), trained with
E = 1/2 (a_L - T)^2, has by the chain rule
    dE/dz_L = (a_L - T) f'(z_L),   dE/dz_k = dE/dz_{k+1} w_{k+1} f'(z_k),
    dE/dw_k = dE/dz_k a_{k-1},
so every number below can be written out by hand.
"""
import io
import math

import numpy as np
import pytest

import tinycore as tc
from tinycore import diagnostics


def chain(activation, weights, biases, width=1, dtype="float64"):
    model = tc.Sequential([tc.Dense(width, width, activation=activation)
                           for _ in weights], dtype=dtype, seed=0)
    for layer, w, b in zip(model.layers, weights, biases):
        layer.W[...] = w
        layer.b[...] = b
    return model


def sigmoid_fixed_point():
    """a* with sigmoid(a*) = a*: a chain with w = 1, b = 0 fed a* stays at a*."""
    a = 0.5
    for _ in range(200):
        a = 1.0 / (1.0 + math.exp(-a))
    return a


def test_gradient_norms_are_the_norms_of_dW(rng):
    model = tc.Sequential([tc.Dense(3, 5, "tanh"), tc.Dense(5, 2)], seed=0)
    assert diagnostics.gradient_norms(model) == [0.0, 0.0]       # before any backward
    X = rng.normal(size=(4, 3))
    out = model.forward(X)
    model.backward(np.ones_like(out))
    norms = diagnostics.gradient_norms(model)
    assert norms == pytest.approx([np.linalg.norm(layer.dW.astype(np.float64))
                                   for layer in model.layers], rel=1e-12)
    assert all(isinstance(value, float) for value in norms)


def test_gradient_norms_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="Sequential"):
        diagnostics.gradient_norms(tc.Dense(2, 2))


def test_sigmoid_chain_ratio_obeys_the_quarter_per_layer_bound():
    # w = 1, b = 0, input a*: every z_k = a*, every a_k = a*, and
    # s = sigmoid'(a*) = a* (1 - a*) = 0.2247 < 0.25.  With T = 0:
    #   dE/dz_k = a* s^(L - k)   (k = 1..L),   dE/dw_k = dE/dz_k a* = a*^2 s^(L - k),
    # so ||dW_k|| / ||dW_L|| = s^(L - k) <= 0.25^(L - k).
    depth = 6
    a = sigmoid_fixed_point()
    s = a * (1 - a)
    assert 0.2246 < s < 0.2248
    model = chain("sigmoid", [1.0] * depth, [0.0] * depth)
    report = diagnostics.vanishing_gradient_report(model, [[a]], [[0.0]], loss="sse",
                                                   file=False)
    expected = [a * a * s ** (depth - k) for k in range(depth)]
    assert report.norms == pytest.approx(expected, rel=1e-10)
    for k, ratio in enumerate(report.ratios):
        r = depth - 1 - k                      # layers between k and the last
        assert ratio == pytest.approx(s ** r, rel=1e-10)
        assert ratio <= 0.25 ** r
    # Flagged where the last layer's gradient is over 100 times larger:
    # s^5 = 5.7e-4 and s^4 = 2.5e-3 are; s^3 = 0.0113 is not.
    assert report.flagged == [0, 1]
    assert report.loss == pytest.approx(0.5 * a * a, rel=1e-12)
    for row in report:
        assert row.flagged == (row.index in (0, 1))
        assert row.activation == "sigmoid"
        assert row.inactive == 0.0 and row.inactive_kind == "saturated"
    cause = report[0].cause
    assert "saturating activation" in cause and "0.25" in cause
    assert "ReLU" in report[0].remedy and "He initialisation" in report[0].remedy
    assert report[2].cause == "" and report[2].remedy == ""


@pytest.mark.parametrize("width", [1, 3])
def test_relu_chain_with_positive_inputs_and_weights_keeps_equal_norms(width):
    # W = identity, b = 0, x > 0: every a_k = x, relu' = 1, dE/dz_k = a_L - T = x
    # (T = 0), so dW_k = x x^T for every layer: equal norms, ratio 1, no flag.
    depth = 6
    x = np.array([[0.7, 0.2, 0.4][:width]])
    model = chain("relu", [np.eye(width)] * depth, [np.zeros(width)] * depth, width=width)
    out = io.StringIO()
    report = diagnostics.vanishing_gradient_report(model, x, np.zeros((1, width)),
                                                   loss="sse", file=out)
    expected = np.linalg.norm(np.outer(x, x))
    assert report.norms == pytest.approx([expected] * depth, rel=1e-12)
    assert report.ratios == pytest.approx([1.0] * depth, rel=1e-12)
    assert report.flagged == []
    assert all(row.inactive == 0.0 and row.inactive_kind == "dead" for row in report)
    assert "no layer receives 100x less gradient" in out.getvalue()


def test_small_weights_are_flagged_as_poor_initialisation():
    # ReLU chain, w = 0.05, b = 1, x = 1: all units active, a_k = 0.05 a_{k-1} + 1,
    # dE/dz_k = (a_L - T) 0.05^(L - k), dE/dw_k = dE/dz_k a_{k-1}.
    depth, w = 5, 0.05
    model = chain("relu", [w] * depth, [1.0] * depth)
    report = diagnostics.vanishing_gradient_report(model, [[1.0]], [[0.0]], loss="sse",
                                                   file=False)
    acts = [1.0]
    for _ in range(depth):
        acts.append(w * acts[-1] + 1.0)
    deltas = [acts[-1] * w ** (depth - 1 - k) for k in range(depth)]
    expected = [deltas[k] * acts[k] for k in range(depth)]
    assert report.norms == pytest.approx(expected, rel=1e-12)
    # Ratios about 6e-6, 1.3e-4, 2.5e-3, 0.05, 1.
    assert report.flagged == [0, 1, 2]
    for index in report.flagged:
        assert report[index].cause.startswith("poor initialisation")
        assert "He initialisation" in report[index].remedy


def test_step_layer_is_flagged_with_its_zero_derivative(rng):
    model = tc.Sequential([tc.Dense(2, 3, "step"), tc.Dense(3, 1)], dtype="float64", seed=0)
    model.layers[1].W[...] = 1.0
    report = diagnostics.vanishing_gradient_report(model, rng.normal(size=(8, 2)),
                                                   rng.normal(size=(8, 1)), loss="mse",
                                                   file=False)
    assert report.norms[0] == 0.0 and report.norms[1] > 0
    assert report.flagged == [0]
    assert "step" in report[0].cause and "derivative is 0" in report[0].cause
    assert report[0].inactive == 1.0 and report[0].inactive_kind == "step"


def test_saturated_and_dead_fractions():
    # Layer 0, sigmoid: z = 10 x for x = +-1 gives a = 0.99995 and 0.0000454,
    # both within 0.01 of a bound; layer 1, relu with W = [[1, -1]] and b = 0:
    # unit 1 is negative for both samples (a >= 0 into -1): dead.
    model = tc.Sequential([tc.Dense(1, 1, "sigmoid"), tc.Dense(1, 2, "relu"),
                           tc.Dense(2, 1)], dtype="float64", seed=0)
    model.layers[0].W[...] = 10.0
    model.layers[0].b[...] = 0.0
    model.layers[1].W[...] = [[1.0, -1.0]]
    model.layers[1].b[...] = 0.0
    report = diagnostics.vanishing_gradient_report(model, [[1.0], [-1.0]], [[0.0], [1.0]],
                                                   loss="mse", file=False)
    assert (report[0].inactive, report[0].inactive_kind) == (1.0, "saturated")
    assert (report[1].inactive, report[1].inactive_kind) == (0.5, "dead")
    assert (report[2].inactive, report[2].inactive_kind) == (None, None)


def test_report_leaves_the_parameters_unchanged_and_uses_the_model_loss(rng, capsys):
    model = tc.Sequential([tc.Dense(2, 8, "sigmoid"), tc.Dense(8, 8, "sigmoid"),
                           tc.Dense(8, 3, "softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    before = model.param_buffer.copy()
    X, y = rng.normal(size=(16, 2)), rng.integers(0, 3, 16)
    report = diagnostics.vanishing_gradient_report(model, X, y)     # the model's loss
    np.testing.assert_array_equal(model.param_buffer, before)
    printed = capsys.readouterr().out
    assert "||dW||" in printed and "activation" in printed
    assert len(printed.strip().splitlines()) >= 2 + len(model.layers)
    # Same gradients as the public backward path by hand.
    out = model.forward(X)
    loss = tc.losses.get("cross_entropy")
    model.backward(loss.grad(out, y))
    assert report.norms == pytest.approx(diagnostics.gradient_norms(model), rel=1e-6)
    assert len(report) == 3 and "GradientReport(layers=3" in repr(report)
    assert str(report).startswith("gradient norms after one backward pass")


def test_report_needs_a_loss(rng):
    model = tc.Sequential([tc.Dense(2, 2)], seed=0)
    with pytest.raises(ValueError, match="loss"):
        diagnostics.vanishing_gradient_report(model, rng.normal(size=(2, 2)),
                                              np.zeros((2, 2)), file=False)
    with pytest.raises(ValueError, match="threshold"):
        diagnostics.vanishing_gradient_report(model, rng.normal(size=(2, 2)),
                                              np.zeros((2, 2)), loss="mse", file=False,
                                              threshold=1)


def test_threshold_is_configurable():
    a = sigmoid_fixed_point()
    model = chain("sigmoid", [1.0] * 6, [0.0] * 6)
    report = diagnostics.vanishing_gradient_report(model, [[a]], [[0.0]], loss="sse",
                                                   file=False, threshold=10)
    # Ratios s^5 ... s^0 with s = 0.2247: s^2 = 0.0505 is below 1/10, s = 0.2247 is not.
    assert report.flagged == [0, 1, 2, 3]


def test_no_gradient_at_the_last_layer_flags_nothing(capsys):
    # A step output passes no gradient back at all: ratios are undefined.
    model = tc.Sequential([tc.Dense(2, 3, "relu"), tc.Dense(3, 1, "step")], seed=0)
    report = diagnostics.vanishing_gradient_report(model, np.ones((4, 2)), np.zeros((4, 1)),
                                                   loss="mse")
    assert report.norms == [0.0, 0.0]
    assert report.flagged == [] and all(np.isnan(report.ratios))
    assert "the last layer received no gradient" in capsys.readouterr().out
