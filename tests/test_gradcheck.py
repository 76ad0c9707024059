"""tc.gradcheck: small on correct models, large on a deliberately broken gradient."""
import numpy as np
import pytest

import tinycore as tc
from tinycore.gradcheck import relative_error

HIDDEN = [name for name in tc.activations.NAMES if name != "step"]


def data(rng, n_out=2, n=6):
    return rng.normal(size=(n, 3)), rng.normal(size=(n, n_out))


@pytest.mark.parametrize("activation", HIDDEN)
def test_every_activation_passes(activation, dtype, rng):
    model = tc.Sequential([tc.Dense(3, 4, activation), tc.Dense(4, 3, activation),
                           tc.Dense(3, 2)], dtype=dtype, seed=1)
    X, y = data(rng)
    assert tc.gradcheck(model, X, y, "mse") < 1e-5
    assert tc.gradcheck(model, X, y, tc.losses.SSE()) < 1e-5


@pytest.mark.parametrize("output, loss, target", [
    ("softmax", "cross_entropy", lambda rng: rng.integers(0, 3, 6)),
    ("softmax", "cross_entropy", lambda rng: np.eye(3)[rng.integers(0, 3, 6)]),
    ("sigmoid", "binary_cross_entropy", lambda rng: rng.uniform(size=(6, 3))),
    ("tanh", "mae", lambda rng: rng.normal(size=(6, 3))),
    ("leaky_relu", "sse", lambda rng: rng.normal(size=(6, 3))),
])
def test_every_loss_passes(output, loss, target, rng):
    model = tc.Sequential([tc.Dense(3, 5, "tanh"), tc.Dense(5, 3, output, alpha=0.2)],
                          seed=2)
    assert tc.gradcheck(model, rng.normal(size=(6, 3)), target(rng), loss) < 1e-5


def test_no_bias_and_alpha_are_copied(rng):
    model = tc.Sequential([tc.Dense(3, 4, "leaky_relu", bias=False, alpha=0.3),
                           tc.Dense(4, 2, bias=False)], seed=0)
    X, y = data(rng)
    assert tc.gradcheck(model, X, y, "mse") < 1e-5


def test_the_users_model_is_not_changed(rng):
    model = tc.Sequential([tc.Dense(3, 4, "sigmoid"), tc.Dense(4, 2)], seed=0)
    model.compile(loss="mse", optimizer=tc.SGD(lr=0.1))
    X, y = data(rng)
    model.train_step(X, y)
    params, grads = model.param_buffer.copy(), model.grad_buffer.copy()
    tc.gradcheck(model, X, y, "mse")
    np.testing.assert_array_equal(model.param_buffer, params)
    np.testing.assert_array_equal(model.grad_buffer, grads)
    assert model.dtype == np.float32 and model.loss.name == "mse"


def test_broken_loss_gradient_is_found(rng, monkeypatch):
    # The loss's gradient 10% too large: backprop is then 1.1 times the truth,
    # a relative error of 0.1 / 2.1 = 0.048.
    model = tc.Sequential([tc.Dense(3, 4, "tanh"), tc.Dense(4, 2)], seed=0)
    X, y = data(rng)
    loss = tc.losses.MSE()
    assert tc.gradcheck(model, X, y, loss) < 1e-5
    right = loss.grad
    monkeypatch.setattr(loss, "grad", lambda pred, target: 1.1 * right(pred, target))
    assert tc.gradcheck(model, X, y, loss) == pytest.approx(0.1 / 2.1, rel=1e-3)


def test_broken_layer_backward_is_found(rng, monkeypatch):
    # Every dW from the per-layer backward doubled: relative error 1 / 3.
    model = tc.Sequential([tc.Dense(3, 4, "relu"), tc.Dense(4, 2)], seed=0)
    X, y = data(rng)
    right = tc.Dense._backward_from_dz

    def doubled(self, dZ, need_dx):
        dX = right(self, dZ, need_dx)
        self.dW[...] *= 2
        return dX

    monkeypatch.setattr(tc.Dense, "_backward_from_dz", doubled)
    assert tc.gradcheck(model, X, y, "mse") == pytest.approx(1 / 3, rel=1e-3)


def test_broken_custom_loss_on_the_training_path_is_found(rng):
    # A Loss subclass takes the per-layer training path too; a wrong _grad
    # shows in both.
    class WrongMSE(tc.losses.MSE):
        def _grad(self, scale, pred, target, out):
            super()._grad(0.5 * scale, pred, target, out)

    model = tc.Sequential([tc.Dense(3, 4, "sigmoid"), tc.Dense(4, 2)], seed=0)
    X, y = data(rng)
    assert tc.gradcheck(model, X, y, WrongMSE()) == pytest.approx(0.5 / 1.5, rel=1e-3)


def test_loss_by_name_or_object_and_eps(rng):
    model = tc.Sequential([tc.Dense(3, 2, "tanh")], seed=0)
    X, y = data(rng)
    by_name = tc.gradcheck(model, X, y, "mse")
    assert by_name == tc.gradcheck(model, X, y, tc.losses.MSE())
    assert tc.gradcheck(model, X, y, "mse", eps=1e-4) < 1e-5


def test_bad_arguments(rng):
    model = tc.Sequential([tc.Dense(3, 2)], seed=0)
    X, y = data(rng)
    with pytest.raises(TypeError, match="Sequential"):
        tc.gradcheck(tc.Dense(3, 2), X, y, "mse")
    for eps in (0, -1e-6, 1.5, True, "small"):
        with pytest.raises(ValueError, match="eps"):
            tc.gradcheck(model, X, y, "mse", eps=eps)
    with pytest.raises(ValueError, match="unknown loss"):
        tc.gradcheck(model, X, y, "hinge")


def test_relative_error_formula():
    # |a - n| / max(|a| + |n|, 1e-8)
    assert relative_error(1.0, 1.0) == 0.0
    assert relative_error(1.0, 0.0) == 1.0
    assert relative_error(1.0, -1.0) == 1.0
    assert relative_error(2.0, 1.0) == pytest.approx(1 / 3)
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1e-12, 0.0) == pytest.approx(1e-4)    # below the floor
