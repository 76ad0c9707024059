"""One full training step (forward, loss, backward, SGD update), fp32.

Each configuration is one pytest-benchmark group holding every engine, so the
engines share a table and are measured in the same run:

    tinycore   Sequential.train_step
    numpy      benchmarks/numpy_mlp.py (vectorised, preallocated, fused softmax-CE)
    torch      eager torch.nn.Sequential + torch.optim.SGD (skipped if absent)
    jax        jax.jit of the whole step, value_and_grad + SGD (skipped if absent)

Per configuration, a group times tinycore's step as ``fit`` takes it, every
gradient checked before the update (``check_finite=True``).

For the GEMM-bound configurations (T3, T4), a further group per configuration
times the step's matrix products alone, in step order and on the same
operands, each engine through the matrix-product library it trains with:
the part of a step that no fusion can shorten, so that the report can show
how much of each engine's step is its library's and how much its own.

Every engine starts from the same weights (tinycore's Glorot initialisation
for the suite's seed) and trains on the same seeded batch.  Before timing, each engine
takes one step whose loss is checked against a float64 NumPy forward pass, so
no engine is measured doing different work.  Nothing is timed but the step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
from numpy_mlp import NumpyMLP

import tinycore as tc
from tinycore import _simd

LR = 0.01
F32 = np.float32

#: How long each engine runs its step, untimed, before pytest-benchmark starts.
SETTLE_SECONDS = 0.2


def _settle(benchmark, run) -> None:
    """Run ``run`` untimed for SETTLE_SECONDS (not when timing is disabled).

    pytest-benchmark sizes its rounds from one calibration call
    (max-time / its duration).  Right after the previous engine that call
    was seen to be far slower than the steps after it, and a slow phase to
    follow: tinycore's T3 (the first engine after JAX's T2) got 45 and 46
    rounds (a 33 ms calibration call for a 1 ms step), all at 1.5-1.9 ms, in
    two of three runs, against 1,022 rounds and a 1.0 ms minimum in the
    third.  Running each engine for a moment first gives every one the same
    settled start.
    """
    if not benchmark.enabled:
        return                 # --benchmark-disable: one call, timed by nobody
    end = time.perf_counter() + SETTLE_SECONDS
    while time.perf_counter() < end:
        run()


@dataclass(frozen=True)
class Config:
    key: str                  # "T3"
    sizes: tuple              # (784, 256, 128, 10)
    hidden: str               # activation of every hidden layer
    output: str               # activation of the last layer
    loss: str                 # "sse" or "cross_entropy"
    batch: int
    label: str = ""           # sizes as shown in the group name, if not all listed

    @property
    def activations(self) -> tuple:
        return (self.hidden,) * (len(self.sizes) - 2) + (self.output,)

    @property
    def group(self) -> str:
        shape = self.label or "-".join(map(str, self.sizes))
        return f"train-{self.key}-{shape}-b{self.batch}"

    @property
    def flops(self) -> int:
        # Forward X W (2 b i o), backward dW and dX (2 b i o each).
        return 6 * self.batch * sum(i * o for i, o in zip(self.sizes, self.sizes[1:]))


CONFIGS = [
    Config("T1", (1, 1, 1), "sigmoid", "sigmoid", "sse", 1),
    Config("T2", (64, 32, 10), "relu", "softmax", "cross_entropy", 32),
    Config("T3", (784, 256, 128, 10), "relu", "softmax", "cross_entropy", 128),
    Config("T4", (1024, 2048, 2048, 10), "relu", "softmax", "cross_entropy", 256),
    Config("T5", (32,) + (32,) * 10 + (10,), "sigmoid", "softmax", "cross_entropy", 64,
           label="32-10x32-10"),
]

ENGINES = ["tinycore", "numpy", "torch", "jax"]


@dataclass
class Problem:
    X: np.ndarray             # (batch, in) float32, C-contiguous
    y: np.ndarray             # int64 labels (batch,) or float32 targets (batch, out)
    weights: list             # [(W (in, out), b (out,)), ...] float32, initial values
    seed: int                 # of the data and of tinycore's initialisation
    loss0: float              # loss of the first step, float64 reference


def _tinycore_model(config: Config, seed: int) -> tc.Sequential:
    layers = [tc.Dense(i, o, activation=act)
              for i, o, act in zip(config.sizes, config.sizes[1:], config.activations)]
    model = tc.Sequential(layers, dtype="float32", seed=seed)
    model.compile(loss=config.loss, optimizer=tc.SGD(lr=LR))
    return model


def _reference_loss(config: Config, X, y, weights) -> float:
    """Loss of the initial weights, float64 NumPy, the textbook formulas."""
    a = X.astype(np.float64)
    for (W, b), act in zip(weights, config.activations):
        z = a @ W.astype(np.float64) + b
        if act == "relu":
            a = np.maximum(z, 0.0)
        elif act == "sigmoid":
            a = 1.0 / (1.0 + np.exp(-z))
        else:   # softmax
            z = z - z.max(axis=1, keepdims=True)
            log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    if config.loss == "cross_entropy":
        return float(-log_p[np.arange(len(y)), y].mean())
    return float(0.5 * np.sum((a - y) ** 2))


_PROBLEMS: dict = {}


def _problem(config: Config, seed: int) -> Problem:
    """The seeded batch and initial weights of a configuration (built once)."""
    if (config.key, seed) not in _PROBLEMS:
        rng = np.random.default_rng([seed, int(config.key[1:])])
        X = rng.standard_normal((config.batch, config.sizes[0]), dtype=np.float32)
        n_out = config.sizes[-1]
        if config.loss == "cross_entropy":
            y = rng.integers(0, n_out, size=config.batch, dtype=np.int64)
        else:
            y = rng.uniform(0.0, 1.0, size=(config.batch, n_out)).astype(np.float32)
        model = _tinycore_model(config, seed)
        weights = [(layer.W.copy(), layer.b.copy()) for layer in model.layers]
        _PROBLEMS[config.key, seed] = Problem(X, y, weights, seed,
                                              _reference_loss(config, X, y, weights))
    return _PROBLEMS[config.key, seed]


# -- one builder per engine: returns a no-argument step() -> float loss ----------

def _build_tinycore(config, problem, n_threads, check_finite=False):
    model = _tinycore_model(config, problem.seed)   # same seed, same initial weights
    X, y = problem.X, problem.y
    return lambda: model.train_step(X, y, check_finite=check_finite)


def _build_numpy(config, problem, n_threads):
    mlp = NumpyMLP(problem.weights, config.activations, config.loss, LR)
    X, y = problem.X, problem.y
    return lambda: mlp.train_step(X, y)


def _build_torch(config, problem, n_threads):
    torch = pytest.importorskip(
        "torch", reason="PyTorch not installed (pip install torch==2.13.0, the CPU wheel)")
    torch.set_num_threads(n_threads)
    modules = []
    for (W, b), act in zip(problem.weights, config.activations):
        linear = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W.T.copy()))   # torch keeps (out, in)
            linear.bias.copy_(torch.from_numpy(b))
        modules.append(linear)
        if act == "relu":
            modules.append(torch.nn.ReLU())
        elif act == "sigmoid":
            modules.append(torch.nn.Sigmoid())
        # softmax: CrossEntropyLoss takes the logits (softmax + CE fused, the idiom).
    net = torch.nn.Sequential(*modules)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    X = torch.from_numpy(problem.X)
    y = torch.from_numpy(problem.y)
    if config.loss == "cross_entropy":
        loss_fn = torch.nn.CrossEntropyLoss()
    else:
        sse = torch.nn.MSELoss(reduction="sum")
        loss_fn = lambda out, target: 0.5 * sse(out, target)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(X), y)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def _build_jax(config, problem, n_threads):
    jax = pytest.importorskip(
        "jax", reason="JAX not installed (pip install jax jaxlib, CPU)")
    import jax.numpy as jnp

    activations = config.activations

    def loss_fn(params, X, y):
        a = X
        for (W, b), act in zip(params, activations):
            z = a @ W + b
            if act == "relu":
                a = jax.nn.relu(z)
            elif act == "sigmoid":
                a = jax.nn.sigmoid(z)
        if config.loss == "cross_entropy":
            log_p = jax.nn.log_softmax(z, axis=1)
            return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))
        return 0.5 * jnp.sum((a - y) ** 2)

    # The whole step in one XLA computation; the old parameters are donated,
    # so XLA may update them in place.
    @jax.jit
    def train(params, X, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
        params = jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)
        return params, loss

    state = [[(jnp.asarray(W), jnp.asarray(b)) for W, b in problem.weights]]
    X = jnp.asarray(problem.X)
    # JAX runs without 64-bit types by default: give it int32 labels itself.
    y = jnp.asarray(problem.y.astype(np.int32) if config.loss == "cross_entropy"
                    else problem.y)

    def step():
        params, loss = train(state[0], X, y)
        state[0] = jax.block_until_ready(params)
        return float(loss)
    return step


_BUILDERS = {"tinycore": _build_tinycore, "numpy": _build_numpy,
             "torch": _build_torch, "jax": _build_jax}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
def test_train_step(benchmark, config, engine, n_threads, seed):
    problem = _problem(config, seed)
    step = _BUILDERS[engine](config, problem, n_threads)
    _time_step(benchmark, config.group, engine, config, problem, step, n_threads)


def _time_step(benchmark, group, engine, config, problem, step, n_threads) -> None:
    # The first step (also the warm-up, and JAX's compilation) must give the
    # loss of the initial weights: the engines do the same work.
    first = step()
    np.testing.assert_allclose(first, problem.loss0, rtol=1e-3, atol=1e-6,
                               err_msg=f"{engine} on {config.key} ({group})")
    benchmark.group = group
    benchmark.extra_info.update(
        engine=engine, config=config.key, sizes=list(config.sizes),
        batch=config.batch, flops=config.flops, threads=n_threads,
    )
    _settle(benchmark, step)
    benchmark(step)


# -- the step as fit takes it ----------------------------------------------------------
#
# fit checks every gradient before any update (a gradient that overflowed
# leaves the weights as they were): train_step(check_finite=True).  One
# group per configuration, tinycore only; the report sets it beside the
# unguarded step of the same run.

@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.key)
def test_guarded_step(benchmark, config, n_threads, seed):
    problem = _problem(config, seed)
    step = _build_tinycore(config, problem, n_threads, check_finite=True)
    _time_step(benchmark, config.group.replace("train-", "guard-", 1), "tinycore",
               config, problem, step, n_threads)


# -- the matrix products of a step, alone -------------------------------------------

PRODUCT_CONFIGS = [c for c in CONFIGS if c.key in ("T3", "T4")]


@dataclass
class Products:
    """The operands and outputs of one step's matrix products, float32.

    Layer l (1-based) has W_l (s_{l-1}, s_l); A_0 is the batch.  In step order:
    Z_l = A_{l-1} W_l for l = 1..L, then for l = L..1 dW_l = A_{l-1}^T dZ_l and,
    above the first layer, dX = dZ_l W_l^T: 3L - 1 products, 6 b sum(s_{l-1} s_l)
    flops less the first layer's dX.
    """
    A: list                   # A_0 (the batch) .. A_{L-1}: inputs of each layer
    W: list                   # W_1 .. W_L
    dZ: list                  # dZ_1 .. dZ_L, (batch, s_l)
    Z: list                   # outputs of the forward products
    dW: list                  # outputs of the dW products
    dX: list                  # outputs of the dX products (dX[0] unused: None)

    def calls(self) -> list:
        """(trans_a, trans_b, a, b, out) for every product, in step order."""
        L = len(self.W)
        calls = [(False, False, self.A[l], self.W[l], self.Z[l]) for l in range(L)]
        for l in range(L - 1, -1, -1):
            calls.append((True, False, self.A[l], self.dZ[l], self.dW[l]))
            if l > 0:
                calls.append((False, True, self.dZ[l], self.W[l], self.dX[l]))
        return calls


def _products(config: Config, problem: Problem) -> Products:
    rng = np.random.default_rng([problem.seed, 7])
    b, sizes = config.batch, config.sizes
    A = [problem.X] + [np.abs(rng.standard_normal((b, s), dtype=F32)) for s in sizes[1:-1]]
    dZ = [rng.standard_normal((b, s), dtype=F32) * F32(0.01) for s in sizes[1:]]
    return Products(
        A=A, W=[W for W, _ in problem.weights], dZ=dZ,
        Z=[np.empty((b, s), F32) for s in sizes[1:]],
        dW=[np.empty_like(W) for W, _ in problem.weights],
        dX=[None] + [np.empty((b, s), F32) for s in sizes[1:-1]])


def _products_tinycore(products: Products, config: Config, seed: int):
    # Each product as the whole batch's step takes it: through the GEMM
    # every tinycore kernel calls, or, where the plan splits a float32
    # model's products by their output's columns (T3, T4 on two threads), so.
    plan = _simd.load("_plan")
    by_columns = _tinycore_model(config, seed)._plan.splits_columns(config.batch)
    calls = products.calls()

    def run():
        for trans_a, trans_b, a, b, out in calls:
            plan._step_gemm_memview(by_columns, trans_a, trans_b, a, b, out)
        return [out for *_, out in calls]
    return run


def _matmul_into(products: Products, matmul, wrap=lambda x: x):
    """A run() of every product as ``matmul(op(a), op(b), out=out)`` on the
    engine's views (``wrap``) of the arrays, transposes as views."""
    calls = [(wrap(a).T if ta else wrap(a), wrap(b).T if tb else wrap(b), wrap(out))
             for ta, tb, a, b, out in products.calls()]

    def run():
        for a, b, out in calls:
            matmul(a, b, out=out)
        return [out for *_, out in calls]
    return run


def _products_numpy(products: Products, n_threads):
    return _matmul_into(products, np.matmul)


def _products_torch(products: Products, n_threads):
    torch = pytest.importorskip(
        "torch", reason="PyTorch not installed (pip install torch==2.13.0, the CPU wheel)")
    torch.set_num_threads(n_threads)
    return _matmul_into(products, torch.matmul, torch.from_numpy)   # shares the memory


def _products_jax(products: Products, n_threads):
    jax = pytest.importorskip("jax", reason="JAX not installed (pip install jax jaxlib, CPU)")
    calls = products.calls()
    flags = [(ta, tb) for ta, tb, *_ in calls]
    operands = [(jax.numpy.asarray(a), jax.numpy.asarray(b)) for _, _, a, b, _ in calls]

    @jax.jit
    def all_products(operands):
        return [(a.T if ta else a) @ (b.T if tb else b)
                for (ta, tb), (a, b) in zip(flags, operands)]

    def run():
        return jax.block_until_ready(all_products(operands))
    return run


_PEER_PRODUCT_BUILDERS = {"numpy": _products_numpy, "torch": _products_torch,
                          "jax": _products_jax}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("config", PRODUCT_CONFIGS, ids=lambda c: c.key)
def test_step_products(benchmark, config, engine, n_threads, seed):
    """The step's matrix products alone (no bias, activation, loss or update)."""
    products = _products(config, _problem(config, seed))
    if engine == "tinycore":
        run = _products_tinycore(products, config, seed)
    else:
        run = _PEER_PRODUCT_BUILDERS[engine](products, n_threads)
    # Every product of the first run against float64 NumPy: the same work.
    for (ta, tb, a, b, _), got in zip(products.calls(), run()):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want = (a64.T if ta else a64) @ (b64.T if tb else b64)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3,
                                   atol=1e-3 * np.abs(want).max(),
                                   err_msg=f"{engine} on {config.key}")
    flops = sum(2 * out.size * (a.shape[0] if ta else a.shape[1])
                for ta, _, a, _, out in products.calls())
    benchmark.group = config.group.replace("train-", "products-", 1)
    benchmark.extra_info.update(engine=engine, config=config.key, flops=flops,
                                threads=n_threads)
    _settle(benchmark, run)
    benchmark(run)
