"""The seeds' worked examples, by their numbers, with the arithmetic written out.

(1) Gradient descent on J(w) = sum_i (z_i - w x_i)^2 for data on z = 2x,
    from w0 = 0.2 with learning rate 0.4 (seed 001).
(2) One step of backpropagation on a one-input chain of two sigmoid neurons,
    E = 1/2 (T - a2)^2, T = 0.25, learning rate 0.4 (seed 001).
(3) The vanishing gradient: sigmoid' <= 0.25, so each sigmoid layer shrinks
    the backpropagated gradient by at least 4 when |w| <= 1; ReLU does not.

Every expected number is computed here from the hand formulas, never by tinycore.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

import tinycore as tc

# --- (1) gradient descent on z = 2x ---------------------------------------------------
#
# J(w) = sum (z_i - w x_i)^2 with z_i = 2 x_i, so
#     dJ/dw = -2 sum x_i (z_i - w x_i) = 2 (w - 2) S,   S = sum x_i^2,
# and the seed's step is  w <- w - alpha * 2 (w - 2) S  with alpha = 0.4.
#
# tinycore's "sse" loss is E = 1/2 sum (z_i - w x_i)^2 = J / 2, so
# dE/dw = (w - 2) S: the engine's step with learning rate lr is
# w <- w - lr (w - 2) S.  The two steps agree when lr = 2 alpha = 0.8.
#
# Data: x = (0.3, 0.4, 0.5), z = 2x = (0.6, 0.8, 1.0), so
# S = 0.09 + 0.16 + 0.25 = 0.5.  Then
#     w_{k+1} - 2 = (1 - 2 alpha S)(w_k - 2) = (1 - 0.4)(w_k - 2) = 0.6 (w_k - 2),
# i.e. w_k = 2 - 1.8 * 0.6^k:
#     w0 = 0.2
#     w1 = 0.2 - 0.8 * (0.2 - 2) * 0.5 = 0.2 + 0.72   = 0.92
#     w2 = 2 - 1.8 * 0.36                              = 1.352
#     w3 = 2 - 1.8 * 0.216                             = 1.6112
#     w4 = 2 - 1.8 * 0.1296                            = 1.76672
# and the loss before step k is E = 1/2 S (w_k - 2)^2 = 0.25 (w_k - 2)^2:
#     E0 = 0.25 * 3.24 = 0.81,  E1 = 0.25 * 1.1664 = 0.2916, ...

X_LINE = np.array([[0.3], [0.4], [0.5]])
Z_LINE = 2.0 * X_LINE
S = 0.5
ALPHA = 0.4                  # the seed's learning rate, on J
LR = 2 * ALPHA               # the same step on E = J / 2


def line_model(dtype="float64", w0=0.2, lr=LR):
    model = tc.Sequential([tc.Dense(1, 1, bias=False)], dtype=dtype)   # z = w x
    model.layers[0].W[...] = w0
    model.compile(loss="sse", optimizer=tc.SGD(lr=lr))
    return model


def hand_step(w, alpha=ALPHA):
    """The seed's update on J: w - alpha * dJ/dw, dJ/dw = -2 sum x (z - w x)."""
    x, z = X_LINE.ravel(), Z_LINE.ravel()
    return w - alpha * (-2.0 * np.sum(x * (z - w * x)))


def test_gradient_descent_sequence_matches_hand_computation(dtype):
    tol = dict(rel=1e-12) if dtype == np.float64 else dict(rel=1e-6)
    model = line_model(dtype)
    assert model.n_params == 1
    written_out = [0.2, 0.92, 1.352, 1.6112, 1.76672]
    w = 0.2
    for k in range(1, 5):
        loss = model.train_step(X_LINE, Z_LINE)
        assert loss == pytest.approx(0.25 * (w - 2.0) ** 2, **tol)   # E before the step
        w = hand_step(w)
        assert w == pytest.approx(written_out[k], rel=1e-12)          # the formula
        assert w == pytest.approx(2 - 1.8 * 0.6 ** k, rel=1e-12)     # its closed form
        assert float(model.layers[0].W[0, 0]) == pytest.approx(w, **tol)


def test_gradient_descent_approaches_two():
    model = line_model()
    distances = []
    for _ in range(60):
        model.train_step(X_LINE, Z_LINE)
        distances.append(abs(float(model.layers[0].W[0, 0]) - 2.0))
    # Monotone from below: |w_k - 2| = 1.8 * 0.6^k shrinks every step.
    assert all(b < a for a, b in zip(distances, distances[1:]))
    assert float(model.layers[0].W[0, 0]) < 2.0
    # |w_30 - 2| = 1.8 * 0.6^30 = 3.9e-7 (checked where rounding is still far below it)
    assert distances[29] == pytest.approx(1.8 * 0.6 ** 30, rel=1e-6)
    assert distances[-1] < 1e-12
    assert model.evaluate(X_LINE, Z_LINE)["loss"] < 1e-24


def test_larger_learning_rate_overshoots_but_converges():
    # alpha = 1.5 (lr = 3.0 on E): w_{k+1} - 2 = (1 - 2 * 1.5 * 0.5)(w_k - 2)
    # = -0.5 (w_k - 2).  w1 = 2 + 0.9 = 2.9, w2 = 2 - 0.45 = 1.55, w3 = 2.225, ...
    model = line_model(lr=2 * 1.5)
    errors = []
    for _ in range(30):
        model.train_step(X_LINE, Z_LINE)
        errors.append(float(model.layers[0].W[0, 0]) - 2.0)
    assert errors[0] == pytest.approx(0.9, rel=1e-12)
    assert errors[1] == pytest.approx(-0.45, rel=1e-12)
    assert errors[2] == pytest.approx(0.225, rel=1e-12)
    # The sign alternates (it jumps over 2 every step) ...
    assert all(a * b < 0 for a, b in zip(errors, errors[1:]))
    # ... while |w - 2| halves each step.
    assert all(abs(b) == pytest.approx(0.5 * abs(a), rel=1e-9)
               for a, b in zip(errors, errors[1:]))
    assert abs(errors[-1]) < 1e-8


def test_too_large_learning_rate_diverges():
    # alpha = 2.5 (lr = 5.0 on E): factor 1 - 2 * 2.5 * 0.5 = -1.5, so
    # |w_k - 2| = 1.8 * 1.5^k grows: 2.7, 4.05, 6.075, ...
    model = line_model(lr=2 * 2.5)
    errors = []
    for _ in range(20):
        model.train_step(X_LINE, Z_LINE)
        errors.append(float(model.layers[0].W[0, 0]) - 2.0)
    assert errors[0] == pytest.approx(2.7, rel=1e-12)
    assert errors[1] == pytest.approx(-4.05, rel=1e-12)
    assert all(abs(b) > abs(a) for a, b in zip(errors, errors[1:]))
    assert abs(errors[-1]) == pytest.approx(1.8 * 1.5 ** 20, rel=1e-9)   # about 6000


def test_learning_rate_at_the_edge_of_stability_oscillates_forever():
    # alpha = 2 (lr = 4.0 on E): factor 1 - 2 * 2 * 0.5 = -1, w bounces
    # between 0.2 and 3.8 (= 2 + 1.8) without converging or diverging.
    model = line_model(lr=4.0)
    for k in range(1, 7):
        model.train_step(X_LINE, Z_LINE)
        expected = 3.8 if k % 2 else 0.2
        assert float(model.layers[0].W[0, 0]) == pytest.approx(expected, rel=1e-12)


# --- (2) one backpropagation step on two sigmoid neurons ---------------------------
#
# x = 0.1, w1 = 0.15, b1 = 0.4, w2 = 0.45, b2 = 0.65, T = 0.25, lr = 0.4.
# Forward:
#   z1 = w1 x + b1 = 0.015 + 0.4 = 0.415        a1 = s(z1) = 0.602286...
#   z2 = w2 a1 + b2 = 0.271029 + 0.65 = 0.921029 a2 = s(z2) = 0.715252...
#   E = 1/2 (T - a2)^2 = 1/2 (-0.465252)^2 = 0.108230...
# Backward (s' = s (1 - s)):
#   dE/dw2 = -(T - a2) a2 (1 - a2) a1 = 0.465252 * 0.203665 * 0.602286 = 0.057070...
#   dE/db2 = -(T - a2) a2 (1 - a2)                                    = 0.094756...
#   dE/dw1 = dE/db2 * w2 * a1 (1 - a1) * x = 0.094756 * 0.45 * 0.239537 * 0.1 = 0.0010214...
#   dE/db1 = dE/db2 * w2 * a1 (1 - a1)                                = 0.010214...
# Update (w <- w - 0.4 dE/dw):
#   w2 = 0.45 - 0.4 * 0.057070 = 0.427172      b2 = 0.65 - 0.4 * 0.094756 = 0.612098
#   w1 = 0.15 - 0.4 * 0.0010214 = 0.149591     b1 = 0.4 - 0.4 * 0.010214 = 0.395914

def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_one_backpropagation_step_by_hand(dtype):
    x, w1, b1, w2, b2, T, lr = 0.1, 0.15, 0.4, 0.45, 0.65, 0.25, 0.4
    z1 = w1 * x + b1
    a1 = sigmoid(z1)
    z2 = w2 * a1 + b2
    a2 = sigmoid(z2)
    E = 0.5 * (T - a2) ** 2
    delta2 = -(T - a2) * a2 * (1 - a2)            # dE/dz2
    dw2, db2 = delta2 * a1, delta2
    delta1 = delta2 * w2 * a1 * (1 - a1)          # dE/dz1
    dw1, db1 = delta1 * x, delta1
    # The rounded numbers of the comment above.
    assert (z1, round(a1, 6), round(a2, 6), round(E, 6)) == pytest.approx(
        (0.415, 0.602286, 0.715252, 0.10823))
    assert (round(dw2, 6), round(db2, 6), round(dw1, 7), round(db1, 6)) == pytest.approx(
        (0.05707, 0.094756, 0.0010214, 0.010214))

    model = tc.Sequential([tc.Dense(1, 1, activation="sigmoid"),
                           tc.Dense(1, 1, activation="sigmoid")], dtype=dtype)
    first, second = model.layers
    first.W[...], first.b[...] = w1, b1
    second.W[...], second.b[...] = w2, b2
    tol = dict(rel=1e-12) if dtype == np.float64 else dict(rel=1e-6)

    # Forward and backward by the API, before any update.
    out = model.forward([[x]])
    assert float(first.A[0, 0]) == pytest.approx(a1, **tol)
    assert float(out[0, 0]) == pytest.approx(a2, **tol)
    loss = tc.losses.get("sse")
    assert loss.value(out, [[T]]) == pytest.approx(E, **tol)
    model.backward(loss.grad(out, [[T]]))
    assert float(second.dW[0, 0]) == pytest.approx(dw2, **tol)
    assert float(second.db[0]) == pytest.approx(db2, **tol)
    assert float(first.dW[0, 0]) == pytest.approx(dw1, **tol)
    assert float(first.db[0]) == pytest.approx(db1, **tol)

    # And one training step: the update of W and b of both layers.
    model.compile(loss="sse", optimizer=tc.SGD(lr=lr))
    assert model.train_step([[x]], [[T]]) == pytest.approx(E, **tol)
    assert float(second.W[0, 0]) == pytest.approx(w2 - lr * dw2, **tol)    # 0.427172
    assert float(second.b[0]) == pytest.approx(b2 - lr * db2, **tol)       # 0.612098
    assert float(first.W[0, 0]) == pytest.approx(w1 - lr * dw1, **tol)     # 0.149591
    assert float(first.b[0]) == pytest.approx(b1 - lr * db1, **tol)        # 0.395914
    assert float(second.W[0, 0]) == pytest.approx(0.427172, abs=1e-6)
    assert float(first.b[0]) == pytest.approx(0.395914, abs=1e-6)
    # The step lowered the error.
    assert loss.value(model.forward([[x]]), [[T]]) < E


# --- (3) vanishing gradients -------------------------------------------------------
#
# In a chain a_k = s(w_k a_{k-1} + b_k), backpropagation gives
#   dE/db_k = dE/dz_k = dE/dz_{k+1} * w_{k+1} * s'(z_k),
# and s' = s (1 - s) <= 0.25, so |dE/db_k| <= 0.25 |w_{k+1}| |dE/db_{k+1}|:
# with |w| <= 1 the gradient shrinks by 4 or more per layer, at least
# 4^9 = 262144 times from the last layer of ten to the first.

def chain(activation, weights, biases, width=1, dtype="float64"):
    model = tc.Sequential([tc.Dense(width, width, activation=activation)
                           for _ in weights], dtype=dtype, seed=0)
    for layer, w, b in zip(model.layers, weights, biases):
        layer.W[...] = w
        layer.b[...] = b
    return model


def test_sigmoid_chain_gradient_vanishes(rng):
    depth = 10
    weights = rng.uniform(-1.0, 1.0, depth)
    biases = rng.uniform(-0.5, 0.5, depth)
    model = chain("sigmoid", weights, biases)
    out = model.forward([[0.7]])
    model.backward(np.ones_like(out))
    db = np.array([abs(float(layer.db[0])) for layer in model.layers])
    # By hand: the activations forward, then the deltas backward.
    a, acts = 0.7, []
    for w, b in zip(weights, biases):
        a = sigmoid(w * a + b)
        acts.append(a)
    delta = acts[-1] * (1 - acts[-1])                # dE/dz_10 with dE/da_10 = 1
    expected = [delta]
    for k in range(depth - 2, -1, -1):
        delta = delta * weights[k + 1] * acts[k] * (1 - acts[k])
        expected.append(delta)
    assert_allclose(db, np.abs(expected[::-1]), rtol=1e-10)
    for k in range(depth - 1):
        # Each layer-to-layer ratio is under the bound 0.25 |w_{k+1}| <= 0.25.
        assert db[k] <= 0.25 * abs(weights[k + 1]) * db[k + 1] * (1 + 1e-12)
        assert db[k] < 0.25 * db[k + 1]
    assert db[0] < 0.25 ** (depth - 1) * db[-1]
    dW_first = abs(float(model.layers[0].dW[0, 0]))
    dW_last = abs(float(model.layers[-1].dW[0, 0]))
    assert dW_first < 1e-4 * dW_last


def test_sigmoid_chain_with_largest_derivative_meets_the_bound():
    # w = 1, b chosen so that every z = 0: s'(0) = 0.25 exactly, the bound
    # is reached: z_1 = 1 * 0 + 0 = 0, a_1 = 0.5; z_k = 1 * 0.5 - 0.5 = 0.
    depth = 10
    model = chain("sigmoid", [1.0] * depth, [0.0] + [-0.5] * (depth - 1))
    out = model.forward([[0.0]])
    model.backward(np.ones_like(out))
    db = [float(layer.db[0]) for layer in model.layers]
    # dE/db_k = 0.25^(11 - k) for layer k = 1..10: 0.25 at the last layer.
    assert_allclose(db, [0.25 ** (depth - k) for k in range(depth)], rtol=1e-12)


def test_wide_sigmoid_chain_obeys_the_bound(rng):
    # Width 3: ||dE/dz_k|| <= 0.25 ||W_{k+1}||_2 ||dE/dz_{k+1}||, with every
    # W scaled to spectral norm 1.
    depth, width = 10, 3
    weights = []
    for _ in range(depth):
        W = rng.normal(size=(width, width))
        weights.append(W / np.linalg.norm(W, 2))
    model = chain("sigmoid", weights, rng.uniform(-0.5, 0.5, (depth, width)), width=width)
    out = model.forward(rng.uniform(-1, 1, (4, width)))
    model.backward(np.ones_like(out))
    # With a batch, db is a sum over rows; check the bound per sample with a
    # batch of one, and the overall decay with the batch.
    norms = [np.linalg.norm(layer.db) for layer in model.layers]
    assert norms[0] < 0.25 ** 5 * norms[-1]
    for sample in rng.uniform(-1, 1, (3, 1, width)):
        out = model.forward(sample)
        model.backward(np.ones_like(out))
        norms = [np.linalg.norm(layer.db) for layer in model.layers]
        for k in range(depth - 1):
            assert norms[k] <= 0.25 * norms[k + 1] * (1 + 1e-12)


def test_relu_chain_keeps_the_gradient():
    # w = 1, b = 0, x = 0.7 > 0: every z_k = 0.7 > 0, relu' = 1, so
    # dE/db_k = 1 for every layer, the first as much as the last.
    depth = 10
    relu = chain("relu", [1.0] * depth, [0.0] * depth)
    out = relu.forward([[0.7]])
    assert float(out[0, 0]) == 0.7
    relu.backward(np.ones_like(out))
    assert [float(layer.db[0]) for layer in relu.layers] == [1.0] * depth
    assert [float(layer.dW[0, 0]) for layer in relu.layers] == [0.7] * depth
    # The sigmoid chain with the same weights, for contrast.
    sig = chain("sigmoid", [1.0] * depth, [0.0] * depth)
    out = sig.forward([[0.7]])
    sig.backward(np.ones_like(out))
    first, last = abs(float(sig.layers[0].db[0])), abs(float(sig.layers[-1].db[0]))
    assert first < 0.25 ** (depth - 1) * last


def test_relu_chain_positive_weights_scale_but_do_not_vanish(rng):
    # Positive weights and input: all units active, dE/db_k = prod_{j>k} w_j.
    depth = 10
    weights = rng.uniform(0.8, 1.25, depth)
    model = chain("relu", weights, np.zeros(depth))
    out = model.forward([[0.5]])
    model.backward(np.ones_like(out))
    db = [float(layer.db[0]) for layer in model.layers]
    expected = [float(np.prod(weights[k + 1:])) for k in range(depth)]
    assert_allclose(db, expected, rtol=1e-12)
