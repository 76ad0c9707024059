"""The optimizers: against PyTorch, against the NumPy formulas of reference.py,
on a small network, and every way to misuse them."""
import copy
import json
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import reference
import tinycore as tc
from tinycore import _optim
from tinycore.schedules import CosineDecay, StepDecay

N_STEPS = 6

#: tinycore against the float64 closed forms of reference.py.
TOL = {np.dtype("float32"): dict(rtol=1e-4, atol=1e-5),
       np.dtype("float64"): dict(rtol=1e-10, atol=1e-12)}
#: tinycore against torch.optim in the same dtype: the same rule in the same
#: precision, so they differ by a few roundings (order of operations).
TORCH_TOL = {np.dtype("float32"): dict(rtol=2e-6, atol=1e-6),
             np.dtype("float64"): dict(rtol=1e-13, atol=1e-14)}


def model_for(dtype, seed=0):
    """A model of 5*4 + 4 + 4*3 + 3 = 39 parameters."""
    return tc.Sequential([tc.Dense(5, 4, activation="tanh"), tc.Dense(4, 3)],
                         dtype=dtype, seed=seed)


# --- the configurations tested: tinycore, PyTorch and reference.py side by side ------

class Config:
    def __init__(self, name, make, make_torch, rule):
        self.name, self.make, self.make_torch, self.rule = name, make, make_torch, rule


def _sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    def rule(w, g, state, t):
        w, state["b"] = reference.sgd_rule(w, g, state.get("b"), lr, momentum, nesterov,
                                           weight_decay)
        return w
    return Config(f"sgd(lr={lr}, momentum={momentum}, nesterov={nesterov}, wd={weight_decay})",
                  lambda **kw: tc.SGD(lr, momentum, nesterov, weight_decay, **kw),
                  lambda torch, p: torch.optim.SGD(p, lr=lr, momentum=momentum,
                                                   nesterov=nesterov,
                                                   weight_decay=weight_decay, foreach=False),
                  rule)


def _adagrad(lr, eps=1e-10):
    def rule(w, g, state, t):
        w, state["s"] = reference.adagrad_rule(w, g, state.get("s", 0.0), lr, eps)
        return w
    return Config(f"adagrad(lr={lr}, eps={eps})",
                  lambda **kw: tc.Adagrad(lr, eps, **kw),
                  lambda torch, p: torch.optim.Adagrad(p, lr=lr, eps=eps, foreach=False),
                  rule)


def _rmsprop(lr, rho=0.9, eps=1e-7, momentum=0.0):
    def rule(w, g, state, t):
        w, state["v"], state["b"] = reference.rmsprop_rule(
            w, g, state.get("v", 0.0), state.get("b", 0.0), lr, rho, eps, momentum)
        return w
    # PyTorch's alpha is our rho; its defaults differ, so all are passed.
    return Config(f"rmsprop(lr={lr}, rho={rho}, eps={eps}, momentum={momentum})",
                  lambda **kw: tc.RMSProp(lr, rho, eps, momentum, **kw),
                  lambda torch, p: torch.optim.RMSprop(p, lr=lr, alpha=rho, eps=eps,
                                                       momentum=momentum, foreach=False),
                  rule)


def _adam(lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=None, decoupled=False):
    cls = tc.AdamW if decoupled else tc.Adam
    if weight_decay is None:
        weight_decay = 0.01 if decoupled else 0.0     # each class's default

    def rule(w, g, state, t):
        w, state["m"], state["v"] = reference.adam_rule(
            w, g, state.get("m", 0.0), state.get("v", 0.0), t, lr, beta1, beta2, eps,
            weight_decay, decoupled)
        return w

    def make_torch(torch, p):
        torch_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
        return torch_cls(p, lr=lr, betas=(beta1, beta2), eps=eps,
                         weight_decay=weight_decay, foreach=False)
    return Config(f"{cls.__name__.lower()}(lr={lr}, betas=({beta1}, {beta2}), eps={eps}, "
                  f"wd={weight_decay})",
                  lambda **kw: cls(lr, beta1, beta2, eps, weight_decay, **kw),
                  make_torch, rule)


CONFIGS = [
    _sgd(0.1),
    _sgd(0.1, weight_decay=0.05),
    _sgd(0.05, momentum=0.9),
    _sgd(0.05, momentum=0.9, nesterov=True),
    _sgd(0.05, momentum=0.5, nesterov=True, weight_decay=0.01),
    _adagrad(0.1),
    _adagrad(0.05, eps=1e-3),
    _rmsprop(0.01),
    _rmsprop(0.01, rho=0.8, eps=1e-4, momentum=0.5),
    _adam(0.01),
    _adam(0.01, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
    _adam(0.01, decoupled=True),
    _adam(0.02, beta1=0.85, eps=1e-5, weight_decay=0.5, decoupled=True),
]
IDS = [config.name for config in CONFIGS]


def gradient_sequence(rng, n, dtype, steps=N_STEPS):
    # Scales from 0.01 to 10 so that eps, the moments and the decay all matter.
    return [(rng.normal(size=n) * 10.0 ** rng.uniform(-2, 1)).astype(dtype)
            for _ in range(steps)]


def run_tinycore(optimizer, w0, grads, dtype):
    """Parameters after each step of ``optimizer`` from w0 over ``grads``."""
    model = model_for(dtype)
    model.param_buffer[...] = w0
    out = []
    for g in grads:
        model.grad_buffer[...] = g
        optimizer.step(model)
        out.append(model.param_buffer.copy())
    return out


def run_torch(torch, make_torch, w0, grads, clipnorm=None):
    p = torch.tensor(w0.copy(), requires_grad=True)
    optimizer = make_torch(torch, [p])
    out = []
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        if clipnorm is not None:
            torch.nn.utils.clip_grad_norm_([p], clipnorm)
        optimizer.step()
        out.append(p.detach().numpy().copy())
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_matches_torch(config, dtype, rng):
    torch = pytest.importorskip("torch")
    w0 = rng.normal(size=39).astype(dtype)
    grads = gradient_sequence(rng, 39, dtype)
    ours = run_tinycore(config.make(), w0, grads, dtype)
    theirs = run_torch(torch, config.make_torch, w0, grads)
    for step, (got, expected) in enumerate(zip(ours, theirs)):
        assert got.dtype == expected.dtype == dtype
        assert_allclose(got, expected, **TORCH_TOL[dtype], err_msg=f"step {step}")
    assert not np.allclose(ours[-1], w0)                   # the steps did move


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_matches_the_closed_form(config, dtype, rng):
    w0 = rng.normal(size=39).astype(dtype)
    grads = gradient_sequence(rng, 39, dtype)
    ours = run_tinycore(config.make(), w0, grads, dtype)
    w, state = w0.astype(np.float64), {}
    for t, (g, got) in enumerate(zip(grads, ours), start=1):
        w = config.rule(w, g, state, t)
        assert_allclose(got, w, **TOL[dtype], err_msg=f"step {t}")


# --- clipping by global norm ------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_clipnorm_applies_the_clipped_gradient(config, dtype, rng):
    w0 = rng.normal(size=39).astype(dtype)
    grads = gradient_sequence(rng, 39, dtype)
    clipnorm = 0.5 * min(np.linalg.norm(g.astype(np.float64)) for g in grads)
    clipped = [reference.clip_by_global_norm(g, clipnorm).astype(dtype) for g in grads]
    model = model_for(dtype)
    model.param_buffer[...] = w0
    optimizer = config.make(clipnorm=clipnorm)
    ours = []
    for g in grads:
        model.grad_buffer[...] = g
        optimizer.step(model)
        # The gradient buffer is left as the backward pass wrote it.
        assert_array_equal(model.grad_buffer, g)
        ours.append(model.param_buffer.copy())
    # ... and the steps are those of the unclipped optimizer on clipped gradients.
    expected = run_tinycore(config.make(), w0, clipped, dtype)
    assert_allclose(ours, expected, **TORCH_TOL[dtype])
    w, state = w0.astype(np.float64), {}
    for t, (g, got) in enumerate(zip(grads, ours), start=1):
        w = config.rule(w, reference.clip_by_global_norm(g, clipnorm), state, t)
        assert_allclose(got, w, **TOL[dtype], err_msg=f"step {t}")


def test_clipnorm_plain_sgd_step_has_length_lr_times_clipnorm(dtype):
    # g = (3, 4, 0, ...): norm 5; clipnorm 1 scales it to (0.6, 0.8, 0, ...),
    # so with lr 0.5 the weights move by (-0.3, -0.4, 0, ...), a step of length 0.5.
    model = model_for(dtype)
    model.param_buffer[...] = 0.0
    model.grad_buffer[...] = 0.0
    model.grad_buffer[:2] = [3.0, 4.0]
    tc.SGD(lr=0.5, clipnorm=1.0).step(model)
    expected = np.zeros(39)
    expected[:2] = [-0.3, -0.4]
    assert_allclose(model.param_buffer, expected, rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert_array_equal(model.grad_buffer[:2], [3.0, 4.0])


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_clipnorm_below_the_norm_changes_nothing_bit_for_bit(config, dtype, rng):
    w0 = rng.normal(size=39).astype(dtype)
    grads = gradient_sequence(rng, 39, dtype)
    clipnorm = 1.01 * max(np.linalg.norm(g.astype(np.float64)) for g in grads)
    assert_array_equal(run_tinycore(config.make(clipnorm=clipnorm), w0, grads, dtype),
                       run_tinycore(config.make(), w0, grads, dtype))


@pytest.mark.parametrize("config", CONFIGS[::2], ids=IDS[::2])
def test_clipnorm_matches_torch_clip_grad_norm(config, dtype, rng):
    torch = pytest.importorskip("torch")
    w0 = rng.normal(size=39).astype(dtype)
    grads = gradient_sequence(rng, 39, dtype)
    clipnorm = 0.3 * min(np.linalg.norm(g.astype(np.float64)) for g in grads)
    ours = run_tinycore(config.make(clipnorm=clipnorm), w0, grads, dtype)
    theirs = run_torch(torch, config.make_torch, w0, grads, clipnorm=clipnorm)
    # PyTorch scales by clipnorm / (norm + 1e-6), tinycore by clipnorm / norm:
    # a relative difference of 1e-6 / norm in the gradient (norms here >= 0.03).
    tolerance = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-4,
                                                                            atol=1e-7)
    assert_allclose(ours, theirs, **tolerance)


def test_global_norm_kernel(dtype, rng):
    for n in (1, 3, 4, 5, 1000):
        x = rng.normal(size=n).astype(dtype)
        assert _optim.global_norm(x) == pytest.approx(np.linalg.norm(x.astype(np.float64)),
                                                      rel=1e-14)
    # float32 squares are summed in double: 1e30 squared overflows float32, not double.
    assert _optim.global_norm(np.full(4, 1e30, dtype=dtype)) == pytest.approx(2e30, rel=1e-7)
    # float64 squares that overflow even a double: the rescaled second pass.
    if dtype == np.float64:
        big = np.array([3e200, -4e200, 0.0])
        assert _optim.global_norm(big) == pytest.approx(5e200, rel=1e-15)
    assert _optim.global_norm(np.array([1.0, np.inf], dtype=dtype)) == np.inf
    assert np.isnan(_optim.global_norm(np.array([1.0, np.nan, 1e30], dtype=dtype)))


def test_kernels_reject_buffers_of_different_lengths():
    a, b = np.zeros(4), np.zeros(3)
    with pytest.raises(ValueError, match="buffers of different lengths: 4 and 3"):
        _optim.adam_step(0.1, 0.9, 0.999, 1e-8, 0.0, 1.0, 1, 1.0, a, a, a, b)
    with pytest.raises(ValueError, match="needs a momentum buffer"):
        _optim.rmsprop_step(0.1, 0.9, 1e-7, 0.5, 1.0, a, a, a)
    with pytest.raises(ValueError, match="counts from 1"):
        _optim.adam_step(0.1, 0.9, 0.999, 1e-8, 0.0, 1.0, 0, 1.0, a, a, a, a)


# --- SGD by hand ------------------------------------------------------------------------

def test_sgd_momentum_by_hand():
    # lr 0.5, momentum 0.5, g = 1 every step, w from 0, powers of two so all is exact:
    # b1 = 1 (the first step copies g), w1 = -0.5;
    # b2 = 0.5*1 + 1 = 1.5, w2 = -0.5 - 0.75 = -1.25;
    # b3 = 0.75 + 1 = 1.75, w3 = -1.25 - 0.875 = -2.125.
    # Nesterov steps with g + 0.5 b: 1.5, 1.75, 1.875 -> w = -0.75, -1.625, -2.5625.
    for nesterov, expected in ((False, [-0.5, -1.25, -2.125]),
                               (True, [-0.75, -1.625, -2.5625])):
        model = model_for("float64")
        model.param_buffer[...] = 0.0
        model.grad_buffer[...] = 1.0
        optimizer = tc.SGD(lr=0.5, momentum=0.5, nesterov=nesterov)
        for value in expected:
            optimizer.step(model)
            assert_array_equal(model.param_buffer, value)


def test_adam_first_step_is_lr_times_sign():
    # With m = (1-b1) g and v = (1-b2) g^2 the bias corrections give m_hat = g,
    # v_hat = g^2: the first step is lr * g / (|g| + eps), nearly lr * sign(g).
    model = model_for("float64")
    model.param_buffer[...] = 0.0
    model.grad_buffer[...] = np.linspace(-3, 3, 39) + 0.05
    tc.Adam(lr=0.01, eps=1e-8).step(model)
    g = model.grad_buffer
    assert_allclose(model.param_buffer, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12)


# --- the optimizer object ---------------------------------------------------------------

ALL = [tc.SGD, tc.Adagrad, tc.RMSProp, tc.Adam, tc.AdamW]


def test_registry_and_compile_by_name():
    assert tc.optimizers.OPTIMIZERS == {"sgd": tc.SGD, "adagrad": tc.Adagrad,
                                        "rmsprop": tc.RMSProp, "adam": tc.Adam,
                                        "adamw": tc.AdamW}
    for name, cls in tc.optimizers.OPTIMIZERS.items():
        model = model_for("float32")
        model.compile(loss="mse", optimizer=name)
        assert type(model.optimizer) is cls
    for name in ("Optimizer", "SGD", "Adagrad", "RMSProp", "Adam", "AdamW", "schedules"):
        assert name in tc.__all__ and hasattr(tc, name)


def test_repr_lists_the_hyper_parameters():
    assert repr(tc.SGD()) == ("SGD(lr=0.01, momentum=0.0, nesterov=False, "
                              "weight_decay=0.0, clipnorm=None)")
    assert repr(tc.Adagrad()) == "Adagrad(lr=0.01, eps=1e-10, clipnorm=None)"
    assert repr(tc.RMSProp(momentum=0.9, clipnorm=1.0)) == (
        "RMSProp(lr=0.001, rho=0.9, eps=1e-07, momentum=0.9, clipnorm=1.0)")
    assert repr(tc.Adam()) == ("Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, "
                               "weight_decay=0.0, clipnorm=None)")
    assert repr(tc.AdamW(lr=StepDecay(0.1, 10))) == (
        "AdamW(lr=StepDecay(initial_lr=0.1, step_size=10, gamma=0.1), beta1=0.9, "
        "beta2=0.999, eps=1e-08, weight_decay=0.01, clipnorm=None)")


@pytest.mark.parametrize("cls", ALL)
def test_iterations_count_steps_and_state_starts_lazily(cls, dtype):
    model = model_for(dtype)
    optimizer = cls(lr=0.01)
    assert optimizer.iterations == 0
    assert optimizer.state_dict()["state"] == {}
    for expected in (1, 2, 3):
        optimizer.step(model)
        assert optimizer.iterations == expected
    for array in optimizer.state_dict()["state"].values():
        assert array.shape == (39,) and array.dtype == dtype


@pytest.mark.parametrize("cls", ALL)
def test_bound_to_one_buffer_size_and_dtype(cls):
    optimizer = cls(lr=0.01)
    optimizer.step(model_for("float32"))
    other = tc.Sequential([tc.Dense(2, 2)], dtype="float32")          # 6 parameters
    before = other.param_buffer.copy()
    with pytest.raises(ValueError, match=f"this {cls.__name__} optimizer updates 39 "
                                         "float32 parameters .* got a model with 6 float32"):
        optimizer.step(other)
    with pytest.raises(ValueError, match="got a model with 39 float64"):
        optimizer.step(model_for("float64"))
    assert_array_equal(other.param_buffer, before)
    assert optimizer.iterations == 1
    optimizer.step(model_for("float32", seed=1))       # the same layout is fine


def test_lr_can_be_reassigned_between_steps(dtype, rng):
    # What ReduceLROnPlateau does: the next step uses the new value.
    w0, grads = rng.normal(size=39).astype(dtype), gradient_sequence(rng, 39, dtype, 4)
    changed, reference_run = tc.Adam(lr=0.01), tc.Adam(lr=0.01)
    model_a, model_b = model_for(dtype), model_for(dtype)
    model_a.param_buffer[...] = model_b.param_buffer[...] = w0
    for step, g in enumerate(grads):
        if step == 2:
            changed.lr = 0.001
        model_a.grad_buffer[...] = model_b.grad_buffer[...] = g
        changed.step(model_a)
        model_b_before = model_b.param_buffer.copy()
        reference_run.lr = 0.001 if step >= 2 else 0.01
        reference_run.step(model_b)
        assert_array_equal(model_a.param_buffer, model_b.param_buffer)
        assert not np.array_equal(model_b.param_buffer, model_b_before)
    with pytest.raises(ValueError, match="lr must be > 0.0, got -1.0"):
        changed.lr = -1.0
    assert changed.lr == 0.001


def test_schedule_is_evaluated_at_the_step_counter(dtype, rng):
    # An Adam on StepDecay(0.01, 2, 0.5) takes the steps of an Adam whose lr is
    # set by hand to 0.01, 0.01, 0.005, 0.005, 0.0025.
    w0, grads = rng.normal(size=39).astype(dtype), gradient_sequence(rng, 39, dtype, 5)
    scheduled = tc.Adam(lr=StepDecay(0.01, step_size=2, gamma=0.5))
    by_hand = tc.Adam(lr=0.01)
    model_a, model_b = model_for(dtype), model_for(dtype)
    model_a.param_buffer[...] = model_b.param_buffer[...] = w0
    for lr, g in zip([0.01, 0.01, 0.005, 0.005, 0.0025], grads):
        assert scheduled.current_lr() == lr
        by_hand.lr = lr
        model_a.grad_buffer[...] = model_b.grad_buffer[...] = g
        scheduled.step(model_a)
        by_hand.step(model_b)
        assert_array_equal(model_a.param_buffer, model_b.param_buffer)
    assert scheduled.current_lr() == 0.0025                      # step 5: 0.01 * 0.5**2


def test_current_lr_of_a_float_is_the_float():
    assert tc.SGD(lr=0.3).current_lr() == 0.3


def test_plan_hook_says_when_the_step_is_plain_sgd():
    assert tc.SGD(lr=0.2)._plan_sgd_lr() == 0.2
    assert tc.SGD(lr=StepDecay(0.2, 1, 0.5))._plan_sgd_lr() == 0.2
    for optimizer in (tc.SGD(momentum=0.9), tc.SGD(weight_decay=0.1), tc.SGD(clipnorm=1.0),
                      tc.Adam(), tc.Adagrad(), tc.RMSProp(), tc.AdamW()):
        assert optimizer._plan_sgd_lr() is None


# --- bad hyper-parameters --------------------------------------------------------------

BAD_HYPER_PARAMETERS = [
    (tc.SGD, dict(lr=0.0), ValueError, "lr must be > 0.0, got 0.0"),
    (tc.SGD, dict(lr=float("nan")), ValueError, "lr must be finite, got nan"),
    (tc.SGD, dict(lr="0.1"), TypeError, "lr must be a real number, got str"),
    (tc.SGD, dict(lr=lambda step: 0.1), TypeError, "lr must be a real number, got function"),
    (tc.SGD, dict(momentum=-0.1), ValueError, "momentum must be >= 0.0, got -0.1"),
    (tc.SGD, dict(momentum=None), TypeError, "momentum must be a real number, got NoneType"),
    (tc.SGD, dict(nesterov=1), TypeError, "nesterov must be True or False, got int"),
    (tc.SGD, dict(nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
    (tc.SGD, dict(weight_decay=-1e-4), ValueError, "weight_decay must be >= 0.0, got -0.0001"),
    (tc.SGD, dict(clipnorm=0.0), ValueError, "clipnorm must be > 0.0, got 0.0"),
    (tc.SGD, dict(clipnorm=float("inf")), ValueError, "clipnorm must be finite, got inf"),
    (tc.SGD, dict(clipnorm="1"), TypeError, "clipnorm must be a real number, got str"),
    (tc.Adagrad, dict(lr=-1), ValueError, "lr must be > 0.0, got -1.0"),
    (tc.Adagrad, dict(eps=0.0), ValueError, "eps must be > 0.0, got 0.0"),
    (tc.Adagrad, dict(clipnorm=-2), ValueError, "clipnorm must be > 0.0, got -2.0"),
    (tc.RMSProp, dict(rho=1.0), ValueError, "rho must be < 1, got 1.0"),
    (tc.RMSProp, dict(rho=-0.5), ValueError, "rho must be >= 0.0, got -0.5"),
    (tc.RMSProp, dict(eps=-1e-7), ValueError, "eps must be > 0.0, got -1e-07"),
    (tc.RMSProp, dict(momentum=-1), ValueError, "momentum must be >= 0.0, got -1.0"),
    (tc.Adam, dict(beta1=1.0), ValueError, "beta1 must be < 1, got 1.0"),
    (tc.Adam, dict(beta1=-0.1), ValueError, "beta1 must be >= 0.0, got -0.1"),
    (tc.Adam, dict(beta2=1.5), ValueError, "beta2 must be < 1, got 1.5"),
    (tc.Adam, dict(beta2=True), TypeError, "beta2 must be a real number, got bool"),
    (tc.Adam, dict(eps=0), ValueError, "eps must be > 0.0, got 0.0"),
    (tc.Adam, dict(weight_decay=-0.01), ValueError, "weight_decay must be >= 0.0, got -0.01"),
    (tc.AdamW, dict(weight_decay=float("inf")), ValueError, "weight_decay must be finite"),
    (tc.AdamW, dict(beta1=0.9, beta2=1), ValueError, "beta2 must be < 1, got 1.0"),
]


@pytest.mark.parametrize("cls,kwargs,error,message", BAD_HYPER_PARAMETERS)
def test_bad_hyper_parameter(cls, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        cls(**kwargs)


def test_bad_assignment_after_construction_is_rejected():
    optimizer = tc.Adam()
    with pytest.raises(ValueError, match="beta1 must be < 1"):
        optimizer.beta1 = 1.0
    assert optimizer.beta1 == 0.9


def test_hyper_parameters_accept_numpy_scalars():
    optimizer = tc.SGD(lr=np.float32(0.5), momentum=np.float64(0.9), nesterov=np.True_)
    assert type(optimizer.lr) is float and type(optimizer.nesterov) is bool
    assert optimizer.lr == 0.5


# --- state_dict and load_state_dict ------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_state_dict_round_trip_continues_bit_for_bit(config, dtype, rng):
    w0, grads = rng.normal(size=39).astype(dtype), gradient_sequence(rng, 39, dtype, 6)
    original = config.make(clipnorm=3.0)
    model = model_for(dtype)
    model.param_buffer[...] = w0
    for g in grads[:3]:
        model.grad_buffer[...] = g
        original.step(model)
    saved = original.state_dict()
    # Plain data: JSON for the scalars, arrays that are copies.
    json.dumps({key: value for key, value in saved.items() if key != "state"})
    for name, array in saved["state"].items():
        assert not np.shares_memory(array, original._state[name])
    twin_model = model_for(dtype)
    twin_model.param_buffer[...] = model.param_buffer
    fresh = type(original)()                                # default hyper-parameters ...
    fresh.load_state_dict(copy.deepcopy(saved))             # ... replaced by the saved ones
    assert repr(fresh) == repr(original)
    assert fresh.iterations == 3
    rebuilt = tc.optimizers.from_state_dict(copy.deepcopy(saved), model)
    rebuilt_model = model_for(dtype)
    rebuilt_model.param_buffer[...] = model.param_buffer
    for g in grads[3:]:
        for m, optimizer in ((model, original), (twin_model, fresh), (rebuilt_model, rebuilt)):
            m.grad_buffer[...] = g
            optimizer.step(m)
        assert_array_equal(twin_model.param_buffer, model.param_buffer)
        assert_array_equal(rebuilt_model.param_buffer, model.param_buffer)


def test_state_dict_layout():
    model = model_for("float32")
    optimizer = tc.Adam(lr=0.01, weight_decay=0.1)
    optimizer.step(model)
    saved = optimizer.state_dict()
    assert saved["type"] == "Adam"
    assert saved["hyper_parameters"] == {"lr": 0.01, "beta1": 0.9, "beta2": 0.999,
                                         "eps": 1e-8, "weight_decay": 0.1, "clipnorm": None}
    assert saved["iterations"] == 1 and type(saved["iterations"]) is int
    assert sorted(saved["state"]) == ["m", "v"]
    scheduled = tc.SGD(lr=CosineDecay(0.1, 100)).state_dict()
    assert scheduled["hyper_parameters"]["lr"] == {
        "type": "CosineDecay", "config": {"initial_lr": 0.1, "decay_steps": 100, "alpha": 0.0,
                                          "warmup_steps": 0, "warmup_lr": 0.0}}
    restored = tc.optimizers.from_state_dict(json.loads(json.dumps(scheduled)))
    assert repr(restored.lr) == repr(CosineDecay(0.1, 100))


def test_loaded_state_of_another_size_fails_on_the_next_step():
    small = tc.Sequential([tc.Dense(2, 2)], dtype="float32")
    donor = tc.Adam()
    donor.step(small)
    receiver = tc.Adam()
    receiver.load_state_dict(donor.state_dict())
    with pytest.raises(ValueError, match="updates 6 float32 parameters"):
        receiver.step(model_for("float32"))
    with pytest.raises(ValueError, match="state is for 6 float32 parameters, the model has 39"):
        tc.optimizers.from_state_dict(donor.state_dict(), model_for("float32"))
    # Into an optimizer already bound to 39 parameters: refused at once.
    bound = tc.Adam()
    bound.step(model_for("float32"))
    with pytest.raises(ValueError, match="already updates 39 float32 parameters"):
        bound.load_state_dict(donor.state_dict())


def _adam_state():
    optimizer = tc.Adam(lr=0.01)
    optimizer.step(model_for("float64"))
    return optimizer.state_dict()


def _edit(path, value):
    def apply(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value(target[path[-1]]) if callable(value) else value
        return state
    return apply


BAD_STATES = [
    (_edit(("type",), "AdamW"), "the state dict is for 'AdamW', not 'Adam'"),
    (_edit(("iterations",), KeyError), "missing keys ['iterations']"),
    (_edit(("extra",), 1), "unexpected keys ['extra']"),
    (_edit(("iterations",), -1), "iterations must be an integer in [0, 2**62), got -1"),
    (_edit(("iterations",), 1.0), "iterations must be an integer in [0, 2**62), got 1.0"),
    (_edit(("iterations",), True), "iterations must be an integer in [0, 2**62), got True"),
    (_edit(("iterations",), 2**62), "iterations must be an integer in [0, 2**62), got 4611"),
    (_edit(("hyper_parameters",), [0.1]), "hyper_parameters must be a dict, got list"),
    (_edit(("hyper_parameters", "beta1"), KeyError), "missing keys ['beta1']"),
    (_edit(("hyper_parameters", "momentum"), 0.9), "unexpected keys ['momentum']"),
    (_edit(("hyper_parameters", "beta2"), 1.0), "beta2 must be < 1, got 1.0"),
    (_edit(("hyper_parameters", "lr"), "fast"), "lr must be a real number, got str"),
    (_edit(("hyper_parameters", "lr"), {"type": "Warp", "config": {}}), "unknown schedule 'Warp'"),
    (_edit(("hyper_parameters", "lr"), {"type": "StepDecay", "config": {"initial_lr": 0.1}}),
     "bad config for StepDecay"),
    (_edit(("state",), None), "state must be a dict, got NoneType"),
    (_edit(("state", "v"), KeyError), "state ['v'] is missing after 1 steps"),
    (_edit(("state", "momentum"), np.zeros(39)), "unexpected state ['momentum'] for Adam"),
    (_edit(("state", "m"), lambda a: a.tolist()), "state 'm' must be a numpy array, got list"),
    (_edit(("state", "m"), lambda a: a.astype(np.int64)), "must be a 1-D float32 or float64"),
    (_edit(("state", "m"), lambda a: a.reshape(3, 13)), "got shape (3, 13)"),
    (_edit(("state", "m"), lambda a: a[:20]), "the state arrays differ in size or dtype"),
    (_edit(("state", "m"), lambda a: a.astype(np.float32)), "differ in size or dtype"),
    (_edit(("state", "m"), lambda a: np.where(a == a[0], np.nan, a)), "'m' contains NaN"),
    (_edit(("state", "v"), lambda a: -a - 1.0), "state 'v' holds squares and must be >= 0"),
    (_edit(("iterations",), 0), "with iterations 0 must have an empty state"),
]


@pytest.mark.parametrize("edit,message", BAD_STATES, ids=[m for _, m in BAD_STATES])
def test_bad_state_dict(edit, message):
    optimizer = tc.Adam(lr=0.5)
    before = optimizer.state_dict()
    with pytest.raises(ValueError, match=re.escape(message)):
        optimizer.load_state_dict(edit(_adam_state()))
    assert optimizer.state_dict() == before                # nothing was changed


def test_bad_state_dict_types():
    with pytest.raises(TypeError, match="state_dict must be a dict, got list"):
        tc.Adam().load_state_dict([])
    with pytest.raises(ValueError, match="unknown optimizer type 'Lion'"):
        tc.optimizers.from_state_dict({"type": "Lion"})
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        saved = tc.SGD(momentum=0.9, nesterov=True).state_dict()
        saved["hyper_parameters"]["momentum"] = 0.0
        tc.SGD().load_state_dict(saved)


def test_from_state_dict_without_the_state_gives_a_fresh_optimizer():
    # The form tinycore.save writes when include_optimizer=False.
    saved = _adam_state()
    del saved["iterations"]
    saved.update(state={}, with_state=False)
    optimizer = tc.optimizers.from_state_dict(saved)
    assert optimizer.iterations == 0 and optimizer.state_dict()["state"] == {}
    assert optimizer.lr == 0.01


# --- training a small network --------------------------------------------------------

FIT_OPTIMIZERS = [
    lambda: tc.SGD(lr=0.5),
    lambda: tc.Adagrad(lr=0.2),
    lambda: tc.RMSProp(lr=0.01),
    lambda: tc.RMSProp(lr=0.005, momentum=0.5),
    lambda: tc.Adam(lr=0.02),
    lambda: tc.Adam(lr=0.02, weight_decay=1e-4, clipnorm=5.0),
    lambda: tc.AdamW(lr=0.02),
    lambda: tc.AdamW(lr=CosineDecay(0.05, decay_steps=700, warmup_steps=20)),
]


@pytest.mark.parametrize("make", FIT_OPTIMIZERS, ids=lambda make: repr(make()))
def test_small_network_learns(make, dtype):
    X, y = tc.datasets.make_moons(200, noise=0.1, seed=0)
    model = tc.Sequential([tc.Dense(2, 16, activation="tanh"),
                           tc.Dense(16, 2, activation="softmax")], dtype=dtype, seed=0)
    optimizer = make()
    model.compile(loss="cross_entropy", optimizer=optimizer)
    start = model.evaluate(X, y)["loss"]
    model.fit(X, y, epochs=100, batch_size=32, verbose=0)
    end = model.evaluate(X, y)
    assert end["loss"] < 0.15 * start, (start, end)
    assert end["accuracy"] > 0.95
    assert optimizer.iterations == 100 * 7 or type(optimizer) is tc.SGD


@pytest.mark.parametrize("make", [lambda: tc.SGD(lr=0.1, momentum=0.9),
                                  lambda: tc.SGD(lr=0.1, weight_decay=0.5),
                                  lambda: tc.SGD(lr=0.1, clipnorm=1e-3),
                                  lambda: tc.SGD(lr=StepDecay(0.1, 2)),
                                  lambda: tc.Adam(lr=0.01, clipnorm=0.1),
                                  lambda: tc.RMSProp(lr=0.01, momentum=0.9),
                                  lambda: tc.AdamW(lr=StepDecay(0.01, 2))],
                         ids=["sgd-momentum", "sgd-weight_decay", "sgd-clipnorm",
                              "sgd-schedule", "adam", "rmsprop", "adamw"])
def test_train_step_applies_the_whole_rule(make, rng):
    # The compiled plan takes every rule's step itself (a schedule's changing
    # lr included): against step() on the per-layer gradients of the textbook
    # backward pass, worked by hand.
    X, y = rng.normal(size=(10, 5)), rng.normal(size=(10, 3))
    trained = model_for("float64")
    trained.compile(loss="mse", optimizer=make())
    by_hand, optimizer = model_for("float64"), make()
    for _ in range(3):
        trained.train_step(X, y)
        out = by_hand.forward(X)
        by_hand.backward(2.0 * (out - y) / out.size)        # d mean((out - y)^2)
        optimizer.step(by_hand)
    assert_allclose(trained.param_buffer, by_hand.param_buffer, rtol=1e-12)
    assert trained.optimizer.iterations == 3


def test_deepcopy_is_independent():
    model = model_for("float64")
    model.grad_buffer[...] = 1.0
    optimizer = tc.Adam()
    optimizer.step(model)
    twin = copy.deepcopy(optimizer)
    twin.step(model)
    assert optimizer.iterations == 1 and twin.iterations == 2
    assert not np.array_equal(optimizer._state["m"], twin._state["m"])
