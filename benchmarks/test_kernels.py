"""Kernel micro-benchmarks: tinycore's public building blocks against the
NumPy expression that does the same thing, float32.

Groups (engines side by side):

    dense-forward-b{batch}-{in}x{out}    Dense.forward  vs  matmul(out=) + bias + relu
    dense-backward-b{batch}-{in}x{out}   Dense.backward vs  relu' + X^T dZ + colsum + dZ W^T
    act-{name}-256x1024                  tc.activations.<name>       vs the NumPy formula
    act-{name}_grad-256x1024             tc.activations.<name>_grad  vs the NumPy formula
    sgd-{n_params}                       tc.SGD(lr).step(model)      vs  w -= lr * g per array
    sgemm-1024                           np.matmul float32 (the peak), scipy's sgemm,
                                         torch.mm and jax.jit(matmul)
    gemm-{NN|TN|NT}-{m}x{n}x{k}          the products of a T2 / T5 training step:
                                         tinycore's _gemm (kernel or BLAS, as the
                                         crossover says), its small-product kernel
                                         forced, and np.matmul

tinycore's public functions validate their input and allocate their output
on every call (that is their API); the NumPy side of the dense benchmarks
writes into preallocated arrays, as numpy_mlp.py does, and the activation
formulas allocate like tinycore does.  Inputs are made outside the timed call.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinycore as tc

F32 = np.float32

# -- dense layer ------------------------------------------------------------------

DENSE_SIZES = [(128, 784, 256), (256, 1024, 2048)]   # (batch, in, out)
_dense_ids = [f"b{b}-{i}x{o}" for b, i, o in DENSE_SIZES]


def _dense_case(batch, n_in, n_out, seed):
    rng = np.random.default_rng([seed, batch, n_in, n_out])
    layer = tc.Dense(n_in, n_out, activation="relu").build(dtype="float32", seed=seed)
    X = rng.standard_normal((batch, n_in), dtype=F32)
    dA = rng.standard_normal((batch, n_out), dtype=F32)
    return layer, X, dA


@pytest.mark.parametrize("engine", ["tinycore", "numpy"])
@pytest.mark.parametrize("size", DENSE_SIZES, ids=_dense_ids)
def test_dense_forward(benchmark, size, engine, seed):
    batch, n_in, n_out = size
    layer, X, _ = _dense_case(batch, n_in, n_out, seed)
    benchmark.group = f"dense-forward-b{batch}-{n_in}x{n_out}"
    benchmark.extra_info.update(engine=engine, flops=2 * batch * n_in * n_out)
    if engine == "tinycore":
        benchmark(layer.forward, X)
        return
    W, b = layer.W.copy(), layer.b.copy()
    Z = np.empty((batch, n_out), F32)
    A = np.empty_like(Z)

    def forward():
        np.matmul(X, W, out=Z)
        np.add(Z, b, out=Z)
        np.maximum(Z, 0.0, out=A)
        return A
    np.testing.assert_allclose(forward(), layer.forward(X), rtol=1e-4, atol=1e-4)
    benchmark(forward)


@pytest.mark.parametrize("engine", ["tinycore", "numpy"])
@pytest.mark.parametrize("size", DENSE_SIZES, ids=_dense_ids)
def test_dense_backward(benchmark, size, engine, seed):
    batch, n_in, n_out = size
    layer, X, dA = _dense_case(batch, n_in, n_out, seed)
    A_ref = layer.forward(X)          # keeps X, Z, A for backward
    benchmark.group = f"dense-backward-b{batch}-{n_in}x{n_out}"
    benchmark.extra_info.update(engine=engine, flops=4 * batch * n_in * n_out)
    if engine == "tinycore":
        benchmark(layer.backward, dA)
        return
    W = layer.W.copy()
    A = A_ref.copy()
    mask = np.empty(A.shape, bool)
    dZ = np.empty_like(A)
    dW = np.empty_like(W)
    db = np.empty(n_out, F32)
    dX = np.empty_like(X)

    def backward():
        np.greater(A, 0.0, out=mask)          # relu' from the output
        np.multiply(dA, mask, out=dZ)
        np.matmul(X.T, dZ, out=dW)
        np.sum(dZ, axis=0, out=db)
        np.matmul(dZ, W.T, out=dX)
        return dX
    np.testing.assert_allclose(backward(), layer.backward(dA), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dW, layer.dW, rtol=1e-4, atol=1e-3)
    benchmark(backward)


# -- activations ------------------------------------------------------------------

ACT_SHAPE = (256, 1024)
ALPHA = 0.01


def _np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_sigmoid_grad(z):
    s = _np_sigmoid(z)
    return s * (1.0 - s)


def _np_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_softmax_grad(z, g):
    p = _np_softmax(z)
    return p * (g - (g * p).sum(axis=1, keepdims=True))


# name -> (tinycore function, NumPy formula); every function takes (z, g).
ACTIVATIONS = {
    "sigmoid": (lambda z, g: tc.activations.sigmoid(z), lambda z, g: _np_sigmoid(z)),
    "sigmoid_grad": (lambda z, g: tc.activations.sigmoid_grad(z),
                     lambda z, g: _np_sigmoid_grad(z)),
    "tanh": (lambda z, g: tc.activations.tanh(z), lambda z, g: np.tanh(z)),
    "tanh_grad": (lambda z, g: tc.activations.tanh_grad(z),
                  lambda z, g: 1.0 - np.tanh(z) ** 2),
    "relu": (lambda z, g: tc.activations.relu(z), lambda z, g: np.maximum(z, 0.0)),
    "relu_grad": (lambda z, g: tc.activations.relu_grad(z),
                  lambda z, g: (z > 0).astype(F32)),
    "leaky_relu": (lambda z, g: tc.activations.leaky_relu(z, ALPHA),
                   lambda z, g: np.where(z > 0, z, ALPHA * z)),
    "leaky_relu_grad": (lambda z, g: tc.activations.leaky_relu_grad(z, ALPHA),
                        lambda z, g: np.where(z > 0, F32(1.0), F32(ALPHA))),
    "linear": (lambda z, g: tc.activations.linear(z), lambda z, g: z.copy()),
    "linear_grad": (lambda z, g: tc.activations.linear_grad(z),
                    lambda z, g: np.ones_like(z)),
    "step": (lambda z, g: tc.activations.step(z), lambda z, g: (z >= 0).astype(F32)),
    "step_grad": (lambda z, g: tc.activations.step_grad(z),
                  lambda z, g: np.zeros_like(z)),
    "softmax": (lambda z, g: tc.activations.softmax(z), lambda z, g: _np_softmax(z)),
    "softmax_grad": (lambda z, g: tc.activations.softmax_grad(z, g),
                     lambda z, g: _np_softmax_grad(z, g)),
}


@pytest.mark.parametrize("engine", ["tinycore", "numpy"])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation(benchmark, name, engine, seed):
    rng = np.random.default_rng([seed, 1])
    z = rng.standard_normal(ACT_SHAPE, dtype=F32)
    g = rng.standard_normal(ACT_SHAPE, dtype=F32)
    ours, numpy_formula = ACTIVATIONS[name]
    fn = ours if engine == "tinycore" else numpy_formula
    result = fn(z, g)
    assert result.dtype == F32 and result.shape == ACT_SHAPE, (name, engine)
    np.testing.assert_allclose(result, numpy_formula(z, g), rtol=1e-5, atol=1e-6)
    benchmark.group = f"act-{name}-{ACT_SHAPE[0]}x{ACT_SHAPE[1]}"
    benchmark.extra_info.update(engine=engine)
    benchmark(fn, z, g)


# -- SGD update -------------------------------------------------------------------

SGD_MODELS = {   # sizes of the T3 and T4 training configurations
    "T3": (784, 256, 128, 10),
    "T4": (1024, 2048, 2048, 10),
}


@pytest.mark.parametrize("engine", ["tinycore", "numpy"])
@pytest.mark.parametrize("sizes", list(SGD_MODELS.values()), ids=list(SGD_MODELS))
def test_sgd_update(benchmark, sizes, engine, seed):
    model = tc.Sequential([tc.Dense(i, o, activation="relu")
                           for i, o in zip(sizes, sizes[1:])], seed=seed)
    rng = np.random.default_rng([seed, 2])
    model.grad_buffer[:] = rng.standard_normal(model.n_params, dtype=F32)
    lr = 1e-4
    benchmark.group = f"sgd-{model.n_params}"
    benchmark.extra_info.update(engine=engine, n_params=model.n_params)
    if engine == "tinycore":
        optimizer = tc.SGD(lr=lr)
        benchmark(optimizer.step, model)
        return
    pairs = [(w.copy(), g.copy()) for w, g in zip(model.parameters(), model.gradients())]

    def step():
        for w, g in pairs:
            w -= lr * g
    benchmark(step)


# -- sgemm peak ---------------------------------------------------------------------

GEMM_N = 1024


def _sgemm(engine, A, B, n_threads):
    """A no-argument function computing C = A B through ``engine``'s matrix
    product, and a function turning its result into a NumPy array."""
    n = A.shape[0]
    if engine == "numpy":
        C = np.empty((n, n), F32)
        return (lambda: np.matmul(A, B, out=C)), np.asarray
    if engine == "scipy":
        from scipy.linalg.blas import sgemm
        # Row-major C = A B is column-major C^T = B^T A^T: A.T and B.T are
        # Fortran-ordered views, so sgemm copies nothing.
        C = np.empty((n, n), F32, order="F")
        return (lambda: sgemm(1.0, B.T, A.T, beta=0.0, c=C, overwrite_c=True)), \
            (lambda result: np.asarray(result).T)
    if engine == "torch":
        torch = pytest.importorskip("torch", reason="PyTorch not installed")
        torch.set_num_threads(n_threads)
        a, b = torch.from_numpy(A), torch.from_numpy(B)
        c = torch.empty((n, n))
        return (lambda: torch.mm(a, b, out=c)), (lambda result: result.numpy())
    jax = pytest.importorskip("jax", reason="JAX not installed")
    a, b = jax.numpy.asarray(A), jax.numpy.asarray(B)
    product = jax.jit(jax.numpy.matmul)
    return (lambda: product(a, b).block_until_ready()), np.asarray


@pytest.mark.parametrize("engine", ["numpy", "scipy", "torch", "jax"])
def test_sgemm_peak(benchmark, engine, seed, n_threads):
    """C = A B for n x n float32: 2 n^3 flops.  NumPy's matmul is the peak the
    report compares the training steps with; SciPy's sgemm is the BLAS that
    tinycore's kernels call (a different OpenBLAS build); PyTorch's (MKL)
    and JAX's (XLA) are the peers' own, for reference: the fastest of the
    four is the most this machine's BLAS libraries reach."""
    n = GEMM_N
    rng = np.random.default_rng([seed, 3])
    A = rng.standard_normal((n, n), dtype=F32)
    B = rng.standard_normal((n, n), dtype=F32)
    flops = 2 * n ** 3
    benchmark.group = f"sgemm-{n}"
    benchmark.extra_info.update(engine=engine, flops=flops, n=n)
    fn, as_numpy = _sgemm(engine, A, B, n_threads)
    np.testing.assert_allclose(as_numpy(fn()), A @ B, rtol=1e-3, atol=1e-2)
    benchmark(fn)
    if benchmark.stats is not None:        # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflops"] = flops / median / 1e9


# -- optimizer updates ----------------------------------------------------------------
#
# Groups optim-{name}-{n_params}: tinycore's optimizer.step(model), one kernel
# over the model's flat parameter buffer, against the same rule written as
# in-place NumPy ufuncs (out=) over one flat buffer with preallocated state
# and scratch arrays, the best that NumPy can do without a fused loop.  The
# model sizes are SGD_MODELS' (the T3 and T4 configurations).  Plain SGD is
# test_sgd_update above.

OPTIM_LR = 1e-4        # small: thousands of timed steps must keep the weights finite


def _np_sgd_momentum(w, g, mu, nesterov):
    """w -= lr * b, b = mu * b + g (w -= lr * (g + mu * b) with nesterov)."""
    b = np.zeros_like(w)
    tmp = np.empty_like(w)

    def step():
        np.multiply(b, mu, out=b)
        np.add(b, g, out=b)
        if nesterov:
            np.multiply(b, mu, out=tmp)
            np.add(tmp, g, out=tmp)
            np.multiply(tmp, OPTIM_LR, out=tmp)
        else:
            np.multiply(b, OPTIM_LR, out=tmp)
        np.subtract(w, tmp, out=w)
    return step


def _np_adagrad(w, g, eps):
    """s += g * g;  w -= lr * g / (sqrt(s) + eps)."""
    s = np.zeros_like(w)
    tmp = np.empty_like(w)

    def step():
        np.multiply(g, g, out=tmp)
        np.add(s, tmp, out=s)
        np.sqrt(s, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(g, tmp, out=tmp)
        np.multiply(tmp, OPTIM_LR, out=tmp)
        np.subtract(w, tmp, out=w)
    return step


def _np_rmsprop(w, g, rho, eps):
    """v = rho * v + (1 - rho) * g * g;  w -= lr * g / (sqrt(v) + eps)."""
    v = np.zeros_like(w)
    tmp = np.empty_like(w)

    def step():
        np.multiply(v, rho, out=v)
        np.multiply(g, g, out=tmp)
        np.multiply(tmp, 1.0 - rho, out=tmp)
        np.add(v, tmp, out=v)
        np.sqrt(v, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(g, tmp, out=tmp)
        np.multiply(tmp, OPTIM_LR, out=tmp)
        np.subtract(w, tmp, out=w)
    return step


def _np_adam(w, g, beta1, beta2, eps, decoupled_decay):
    """PyTorch's Adam (AdamW: w *= 1 - lr * decay first), bias-corrected at step t."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    tmp = np.empty_like(w)
    t = 0

    def step():
        nonlocal t
        t += 1
        if decoupled_decay:
            np.multiply(w, 1.0 - OPTIM_LR * decoupled_decay, out=w)
        np.multiply(m, beta1, out=m)
        np.multiply(g, 1.0 - beta1, out=tmp)
        np.add(m, tmp, out=m)
        np.multiply(v, beta2, out=v)
        np.multiply(g, g, out=tmp)
        np.multiply(tmp, 1.0 - beta2, out=tmp)
        np.add(v, tmp, out=v)
        # w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps);
        # the two corrections are scalars, computed once per step.
        np.sqrt(v, out=tmp)
        np.multiply(tmp, 1.0 / np.sqrt(1.0 - beta2 ** t), out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(m, tmp, out=tmp)
        np.multiply(tmp, OPTIM_LR / (1.0 - beta1 ** t), out=tmp)
        np.subtract(w, tmp, out=w)
    return step


# name -> (tinycore optimizer, NumPy step builder taking (w, g)); the
# hyper-parameters are the usual ones (momentum 0.9) and the classes' defaults.
OPTIMIZER_CASES = {
    "sgd_momentum": (lambda: tc.SGD(lr=OPTIM_LR, momentum=0.9),
                     lambda w, g: _np_sgd_momentum(w, g, 0.9, nesterov=False)),
    "nesterov": (lambda: tc.SGD(lr=OPTIM_LR, momentum=0.9, nesterov=True),
                 lambda w, g: _np_sgd_momentum(w, g, 0.9, nesterov=True)),
    "adagrad": (lambda: tc.Adagrad(lr=OPTIM_LR, eps=1e-10),
                lambda w, g: _np_adagrad(w, g, 1e-10)),
    "rmsprop": (lambda: tc.RMSProp(lr=OPTIM_LR, rho=0.9, eps=1e-7),
                lambda w, g: _np_rmsprop(w, g, 0.9, 1e-7)),
    "adam": (lambda: tc.Adam(lr=OPTIM_LR, beta1=0.9, beta2=0.999, eps=1e-8),
             lambda w, g: _np_adam(w, g, 0.9, 0.999, 1e-8, decoupled_decay=0.0)),
    "adamw": (lambda: tc.AdamW(lr=OPTIM_LR, beta1=0.9, beta2=0.999, eps=1e-8,
                               weight_decay=0.01),
              lambda w, g: _np_adam(w, g, 0.9, 0.999, 1e-8, decoupled_decay=0.01)),
}


@pytest.mark.parametrize("engine", ["tinycore", "numpy"])
@pytest.mark.parametrize("sizes", list(SGD_MODELS.values()), ids=list(SGD_MODELS))
@pytest.mark.parametrize("name", list(OPTIMIZER_CASES))
def test_optimizer_update(benchmark, name, sizes, engine, seed):
    model = tc.Sequential([tc.Dense(i, o, activation="relu")
                           for i, o in zip(sizes, sizes[1:])], seed=seed)
    rng = np.random.default_rng([seed, 4])
    model.grad_buffer[:] = rng.standard_normal(model.n_params, dtype=F32)
    make_optimizer, make_numpy_step = OPTIMIZER_CASES[name]
    w = model.param_buffer.copy()
    numpy_step = make_numpy_step(w, model.grad_buffer.copy())
    optimizer = make_optimizer()
    # Two steps from the same weights must agree (the second one reads the
    # state, and Adam's bias correction changes with t); they also allocate
    # tinycore's state buffers, so that no timed step does.
    for _ in range(2):
        optimizer.step(model)
        numpy_step()
        np.testing.assert_allclose(w, model.param_buffer, rtol=1e-5, atol=1e-7,
                                   err_msg=name)
    benchmark.group = f"optim-{name}-{model.n_params}"
    benchmark.extra_info.update(engine=engine, n_params=model.n_params)
    if engine == "tinycore":
        benchmark(optimizer.step, model)
    else:
        benchmark(numpy_step)


# -- softmax + cross-entropy ----------------------------------------------------------
#
# Groups softmax-ce-b{batch}x{classes}: the end of a training step with a
# softmax output and cross-entropy, from the logits Z and int64 labels:
# P = softmax(Z), the mean loss, and dL/dZ = (P - onehot(y)) / batch.

LOSS_SHAPES = [(128, 10), (256, 1000)]   # T3's output layer; a 1000-class one


@pytest.mark.parametrize("engine", ["tinycore", "numpy"])
@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=[f"b{b}x{c}" for b, c in LOSS_SHAPES])
def test_softmax_cross_entropy(benchmark, shape, engine, seed):
    batch, classes = shape
    rng = np.random.default_rng([seed, 5, classes])
    Z = 3.0 * rng.standard_normal(shape, dtype=F32)
    y = rng.integers(0, classes, size=batch, dtype=np.int64)
    dZ = np.empty(shape, F32)
    if engine == "tinycore":
        loss = tc.losses.CrossEntropy()

        # What train_step runs: the softmax kernel (here through the public
        # function, which validates and allocates P), then the fused value
        # and gradient from the logits.  _fused is the loss's private hook
        # for the model; the public loss.value/grad take probabilities and
        # are the unfused path that train_step does not use.
        def step():
            P = tc.activations.softmax(Z)
            return loss._fused(Z, P, y, dZ)
    else:
        P = np.empty(shape, F32)
        row_max = np.empty((batch, 1), F32)
        row_sum = np.empty((batch, 1), F32)
        rows = np.arange(batch)

        # numpy_mlp.py's fused softmax + cross-entropy, into preallocated arrays.
        def step():
            np.max(Z, axis=1, keepdims=True, out=row_max)
            np.subtract(Z, row_max, out=P)
            shifted_label = P[rows, y]
            np.exp(P, out=P)
            np.sum(P, axis=1, keepdims=True, out=row_sum)
            value = float(np.mean(np.log(row_sum[:, 0]) - shifted_label))
            np.divide(P, row_sum, out=P)
            np.multiply(P, 1.0 / batch, out=dZ)
            dZ[rows, y] -= 1.0 / batch
            return value
    value = step()
    reference = Z.astype(np.float64)
    reference -= reference.max(axis=1, keepdims=True)
    log_p = reference - np.log(np.exp(reference).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(value, -log_p[np.arange(batch), y].mean(), rtol=1e-5)
    expected = np.exp(log_p)
    expected[np.arange(batch), y] -= 1.0
    np.testing.assert_allclose(dZ, expected / batch, rtol=1e-4, atol=1e-7)
    benchmark.group = f"softmax-ce-b{batch}x{classes}"
    benchmark.extra_info.update(engine=engine, batch=batch, classes=classes)
    benchmark(step)


# -- small products of the training steps ---------------------------------------------

# (trans_a, trans_b, m, n, k) of the T2 (64-32-10, batch 32) and T5 (32-10x32-10,
# batch 64) steps: forward Z = X W (NN), dW = X^T dZ (TN), dX = dZ W^T (NT).
TRAIN_GEMMS = [
    (False, False, 32, 32, 64), (False, False, 32, 10, 32), (True, False, 64, 32, 32),
    (True, False, 32, 10, 32), (False, True, 32, 32, 10),                    # T2
    (False, False, 64, 32, 32), (False, False, 64, 10, 32), (True, False, 32, 32, 64),
    (True, False, 32, 10, 64), (False, True, 64, 32, 32), (False, True, 64, 32, 10),  # T5
]


def _gemm_id(case):
    trans_a, trans_b, m, n, k = case
    return f"{'NT'[trans_a]}{'NT'[trans_b]}-{m}x{n}x{k}"


@pytest.mark.parametrize("engine", ["tinycore", "kernel", "numpy"])
@pytest.mark.parametrize("case", TRAIN_GEMMS, ids=_gemm_id)
def test_small_gemm(benchmark, case, engine, seed):
    """C = op(A) op(B), float32, through the same Python-level call for the
    first two engines (the hooks of tinycore._blas), so that their difference
    is the product itself: "tinycore" is what a training step runs, "kernel"
    the small-product loop whichever side of the crossover the shape is on."""
    from tinycore import _simd

    _blas = _simd.load("_blas")      # the SIMD set in use, as in a training step

    trans_a, trans_b, m, n, k = case
    rng = np.random.default_rng([seed, 4, m, n, k])
    A = rng.standard_normal((k, m) if trans_a else (m, k), dtype=F32)
    B = rng.standard_normal((n, k) if trans_b else (k, n), dtype=F32)
    C = np.empty((m, n), F32)
    benchmark.group = f"gemm-{_gemm_id(case)}"
    benchmark.extra_info.update(engine=engine, flops=2 * m * n * k,
                                kernel=_blas._gemm_uses_kernel(True, trans_a, trans_b, m, n, k))
    if engine == "numpy":
        op_a, op_b = (A.T if trans_a else A), (B.T if trans_b else B)
        fn = lambda: np.matmul(op_a, op_b, out=C)
    else:
        hook = _blas._gemm_memview if engine == "tinycore" else _blas._small_gemm_memview
        fn = lambda: hook(trans_a, trans_b, 1.0, A, B, 0.0, C)
    fn()
    np.testing.assert_allclose(C, (A.T if trans_a else A) @ (B.T if trans_b else B),
                               rtol=1e-4, atol=1e-4)
    benchmark(fn)
