"""Every optimizer's step taken inside the compiled plan's one call.

The plan applies each built-in rule itself, layer by layer as the backward
pass finishes a layer's gradients (or, with clipping or the divergence guard,
in one pass once all are final).  These tests hold it to the optimizer's own
step() after the plan's backward pass (a subclass with its own step() is
left to take it): the same parameters, state and step count, bit for bit.
"""
import numpy as np
import pytest
from numpy.testing import assert_array_equal

import tinycore as tc
from tinycore import _simd
from tinycore.schedules import StepDecay

_plan = _simd.load("_plan")
_optim = _simd.load("_optim")

OPTIMIZERS = {
    "sgd-weight-decay": lambda: tc.SGD(lr=0.1, weight_decay=0.01),
    "sgd-momentum": lambda: tc.SGD(lr=0.1, momentum=0.9),
    "sgd-nesterov-clipped": lambda: tc.SGD(lr=0.1, momentum=0.9, nesterov=True, clipnorm=0.5),
    "sgd-clipped": lambda: tc.SGD(lr=0.1, clipnorm=0.2),
    "adagrad": lambda: tc.Adagrad(lr=0.05),
    "rmsprop": lambda: tc.RMSProp(lr=0.01),
    "rmsprop-momentum-clipped": lambda: tc.RMSProp(lr=0.01, momentum=0.9, clipnorm=0.3),
    "adam": lambda: tc.Adam(lr=0.01),
    "adam-l2-clipped": lambda: tc.Adam(lr=0.01, weight_decay=0.01, clipnorm=0.5),
    "adamw-schedule": lambda: tc.AdamW(lr=StepDecay(0.01, 2, 0.5)),
}

# (layer sizes, batch): a small model, and one whose steps the plan takes in
# two halves of the batch (see tests/test_split.py).
MODELS = {
    "small": ((5, 7, 4), 9),
    "halves": ((32, 32, 32, 32, 32, 32, 10), 64),
}


def _model(sizes, dtype, optimizer, seed=3, hidden="tanh"):
    activations = [hidden] * (len(sizes) - 2) + ["softmax"]
    model = tc.Sequential([tc.Dense(n_in, n_out, activation=activation)
                           for n_in, n_out, activation in zip(sizes, sizes[1:], activations)],
                          dtype=dtype, seed=seed)
    model.compile(loss="cross_entropy", optimizer=optimizer)
    return model


def _stepping_twin(optimizer):
    """The same optimizer as a subclass with its own step() (the base's), which
    the plan leaves to take its steps."""
    kind = type(optimizer)
    twin = type("Stepping" + kind.__name__, (kind,),
                {"step": lambda self, model: kind.step(self, model)})
    return twin(**{name: getattr(optimizer, name) for name in kind._HYPER_PARAMETERS})


def _pair(name, model_name, dtype):
    """A model whose plan takes the optimizer's steps, and its twin whose
    optimizer's own step() takes them."""
    sizes, batch = MODELS[model_name]
    fused = _model(sizes, dtype, OPTIMIZERS[name]())
    reference = _model(sizes, dtype, _stepping_twin(OPTIMIZERS[name]()))
    assert fused._plan_steps and not reference._plan_steps
    assert fused._plan.splits(batch) == (model_name == "halves")
    return fused, reference, sizes, batch


def _assert_same_state(fused, reference):
    assert_array_equal(fused.param_buffer, reference.param_buffer)
    assert fused.optimizer.iterations == reference.optimizer.iterations
    state, expected = fused.optimizer._state, reference.optimizer._state
    assert set(state) == set(expected)
    for key in expected:
        assert_array_equal(state[key], expected[key], err_msg=key)


def _data(rng, sizes, n, dtype):
    X = rng.normal(size=(n, sizes[0])).astype(dtype)
    return X, rng.integers(0, sizes[-1], n)


def _overflowing(model, X):
    """A finite batch whose forward pass overflows (10 * max / 4 is inf, and
    the ReLU passes it on to the output layer's mixed-sign weights: NaN)."""
    model.layers[0].W[...] = 10.0
    return np.full_like(X, np.finfo(X.dtype).max / 4)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_train_step_takes_the_optimizers_step_bit_for_bit(name, model_name, dtype, rng):
    fused, reference, sizes, batch = _pair(name, model_name, dtype)
    X, y = _data(rng, sizes, batch, dtype)
    for check_finite in (False, False, True, False, True):
        assert fused.train_step(X, y, check_finite=check_finite) == reference.train_step(
            X, y, check_finite=check_finite)
    _assert_same_state(fused, reference)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("name", ["sgd-nesterov-clipped", "rmsprop", "adam-l2-clipped",
                                  "adamw-schedule"])
def test_fit_takes_the_optimizers_step_bit_for_bit(name, model_name, dtype, rng):
    fused, reference, sizes, batch = _pair(name, model_name, dtype)
    # Three full batches and a remainder of 5 rows, which is not split.
    X, y = _data(rng, sizes, 3 * batch + 5, dtype)
    history = fused.fit(X, y, epochs=2, batch_size=batch, verbose=0)
    assert history.history == reference.fit(X, y, epochs=2, batch_size=batch,
                                            verbose=0).history
    _assert_same_state(fused, reference)


def test_the_plan_takes_the_step_not_the_optimizer(rng):
    model = _model((5, 7, 4), "float64", tc.Adam(lr=0.01))

    def refuse(_model):
        raise AssertionError("step() was called")

    model.optimizer.step = refuse     # the instance's; the class's rule still fuses
    X, y = _data(rng, (5, 7, 4), 9, "float64")
    model.train_step(X, y)
    model.fit(X, y, epochs=1, batch_size=4, verbose=0)
    assert model.optimizer.iterations == 1 + 3
    assert set(model.optimizer._state) == {"m", "v"}


def test_a_subclass_with_its_own_rule_takes_its_own_steps(rng):
    class Halved(tc.Adam):
        def _update(self, params, grads):
            grads *= 0.5
            super()._update(params, grads)

    class Counted(tc.RMSProp):
        steps = 0

        def step(self, model):
            Counted.steps += 1
            super().step(model)

    halved = _model((5, 7, 4), "float64", Halved(lr=0.01))
    counted = _model((5, 7, 4), "float64", Counted())
    assert not halved._plan_steps and not counted._plan_steps
    X, y = _data(rng, (5, 7, 4), 9, "float64")
    counted.train_step(X, y)
    assert Counted.steps == 1
    plain = _model((5, 7, 4), "float64", tc.Adam(lr=0.01))
    halved.train_step(X, y)
    plain.train_step(X, y)
    assert not np.array_equal(halved.param_buffer, plain.param_buffer)


def test_a_subclass_with_its_own_hooks_is_stepped_by_the_plan_through_them(rng):
    class HalfDecayAdamW(tc.AdamW):
        # A hook the rule calls (as current_lr is): the plan honours it.
        def _decay(self, lr):
            return 0.0, 1.0 - 0.5 * lr * self.weight_decay

    fused = _model((5, 7, 4), "float64", HalfDecayAdamW(lr=0.01, weight_decay=0.1))
    reference = _model((5, 7, 4), "float64",
                       _stepping_twin(HalfDecayAdamW(lr=0.01, weight_decay=0.1)))
    adamw = _model((5, 7, 4), "float64", tc.AdamW(lr=0.01, weight_decay=0.1))
    assert fused._plan_steps and not reference._plan_steps
    X, y = _data(rng, (5, 7, 4), 9, "float64")
    for model in (fused, reference, adamw):
        for _ in range(3):
            model.train_step(X, y)
    _assert_same_state(fused, reference)
    assert not np.array_equal(fused.param_buffer, adamw.param_buffer)


def test_a_first_step_that_diverges_leaves_the_optimizer_unstepped(rng):
    model = _model((5, 7, 4), "float32", tc.Adam(lr=0.01), hidden="relu")
    X, y = _data(rng, (5, 7, 4), 9, "float32")
    huge = _overflowing(model, X)
    before = model.param_buffer.copy()
    with pytest.raises(tc.TrainingDivergedError):
        model.train_step(huge, y)
    assert_array_equal(model.param_buffer, before)
    optimizer = model.optimizer
    assert optimizer.iterations == 0 and optimizer._state == {}
    tc.Adam().load_state_dict(optimizer.state_dict())     # a state dict of no step
    with pytest.raises(ValueError, match="X must be 2-D"):
        model.train_step(X[0], y)                         # refused: no step either
    assert optimizer._state == {}
    model.train_step(X, y)
    assert optimizer.iterations == 1 and set(optimizer._state) == {"m", "v"}


def test_a_later_step_that_diverges_changes_no_state(rng):
    model = _model((5, 7, 4), "float64", tc.RMSProp(momentum=0.9), hidden="relu")
    X, y = _data(rng, (5, 7, 4), 9, "float64")
    model.train_step(X, y)
    huge = _overflowing(model, X)
    params = model.param_buffer.copy()
    state = {key: value.copy() for key, value in model.optimizer._state.items()}
    with pytest.raises(tc.TrainingDivergedError):
        model.train_step(huge, y)
    assert_array_equal(model.param_buffer, params)
    for key, value in state.items():
        assert_array_equal(model.optimizer._state[key], value)
    assert model.optimizer.iterations == 1


def test_an_optimizer_bound_to_another_model_is_refused_before_the_step(rng):
    optimizer = tc.Adam()
    first = _model((5, 7, 4), "float64", optimizer)
    second = _model((5, 6, 4), "float64", tc.Adam())
    second.optimizer = optimizer          # assigned, not compiled: no check yet
    X, y = _data(rng, (5, 7, 4), 9, "float64")
    first.train_step(X, y)
    before = second.param_buffer.copy()
    with pytest.raises(ValueError, match="use a new optimizer"):
        second.train_step(X, y)
    assert_array_equal(second.param_buffer, before)
    assert optimizer.iterations == 1


# -- the plan's own checks of a rule: bad input gets an error, never a crash -----

def _rule(kind, n, dtype, **fields):
    values = dict(lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0, decay=1.0,
                  rho=0.9, beta1=0.9, beta2=0.999, eps=1e-8, t=1, clipnorm=0.0,
                  state0=np.zeros(n, dtype), state1=np.zeros(n, dtype))
    values.update(fields)
    return (int(kind),) + tuple(values.values())


N_PARAMS = 5 * 7 + 7 + 7 * 4 + 4        # of _model((5, 7, 4), ...)


@pytest.mark.parametrize("fields,error,match", [
    (dict(state0=np.zeros(3)), ValueError, "first state buffer"),
    (dict(state1=np.zeros(10**6)), ValueError, "second state buffer"),
    (dict(state0=np.zeros(N_PARAMS, np.float32)), ValueError, "first state buffer"),
    (dict(state1=None), TypeError, "second state buffer"),
    (dict(state0=[0.0] * N_PARAMS), TypeError, "first state buffer"),
    (dict(state0=np.zeros(2 * N_PARAMS)[::2]), ValueError, "first state buffer"),
    (dict(t=0), ValueError, "counts from 1"),
])
def test_a_bad_rule_is_refused_before_the_step(fields, error, match, rng):
    model = _model((5, 7, 4), "float64", tc.SGD(lr=0.1))
    n = model.param_buffer.size
    assert n == N_PARAMS
    X, y = _data(rng, (5, 7, 4), 9, "float64")
    before = model.param_buffer.copy()
    rule = _rule(_optim.RuleKind.RULE_ADAM, n, "float64", **fields)
    with pytest.raises(error, match=match):
        model._plan.train_step(X, y, 0.0, True, False, False, rule)
    assert_array_equal(model.param_buffer, before)


def test_a_read_only_state_buffer_and_an_unknown_rule_are_refused(rng):
    model = _model((5, 7, 4), "float64", tc.SGD(lr=0.1))
    X, y = _data(rng, (5, 7, 4), 9, "float64")
    frozen = np.zeros(N_PARAMS)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        model._plan.train_step(X, y, 0.0, True, False, False,
                               _rule(_optim.RuleKind.RULE_ADAGRAD, N_PARAMS, "float64",
                                     state0=frozen))
    with pytest.raises(ValueError, match="unknown update rule"):
        model._plan.train_step(X, y, 0.0, True, False, False, _rule(9, N_PARAMS, "float64"))
    with pytest.raises(ValueError, match="14 fields"):
        model._plan.train_step(X, y, 0.0, True, False, False, (1, 0.1))
    # Plain SGD needs no state buffer.
    rule = _rule(_optim.RuleKind.RULE_SGD, N_PARAMS, "float64", state0=None, state1=None)
    assert model._plan.train_step(X, y, 0.0, True, False, False, rule) == _plan.Status.OK
