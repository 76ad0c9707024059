"""The dense (fully connected) layer."""
from __future__ import annotations

import numpy as np

from tinycore import _simd, initializers
from tinycore._buffers import aligned_empty, aligned_zeros
from tinycore._validation import (
    check_dtype, check_input, check_positive_int, check_real, check_same_shape,
)
from tinycore.activations import CODES, check_activation

_dense = _simd.load("_dense")

__all__ = ["Dense"]


class Dense:
    """A fully connected layer: A = act(X @ W + b).

    Rows are samples: X is (batch, in_features), W is (in_features,
    out_features) and b is (out_features,).

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the layer's input and output.
    activation : str, default "linear"
        One of ``tinycore.activations.NAMES``.
    bias : bool, default True
        Whether the layer has a bias b.
    alpha : float, default 0.01
        Slope of leaky ReLU for negative inputs (other activations ignore it).
    init : str or callable, default "auto"
        How W starts: a name from ``tinycore.initializers.INITIALIZERS``, a
        function ``(shape, rng) -> ndarray``, or "auto" (He-uniform for ReLU
        and leaky ReLU, Glorot-uniform otherwise).  b starts at 0.

    Attributes
    ----------
    W, b : numpy.ndarray
        The weights and bias: writable views into the parameter buffer of the
        model that owns the layer (``b`` is None without a bias).  They exist
        once the layer is in a :class:`~tinycore.Sequential`, or after
        :meth:`build` for a layer used on its own.
    dW, db : numpy.ndarray
        dL/dW and dL/db from the last :meth:`backward`, views into the
        model's gradient buffer.
    X, Z, A : numpy.ndarray
        The last forward pass: input, pre-activation X @ W + b, and output.

    Examples
    --------
    >>> import numpy as np, tinycore as tc
    >>> layer = tc.Dense(2, 1, activation="sigmoid").build(seed=0)
    >>> layer.W[:] = [[1.0], [1.0]]; layer.b[:] = [-1.0]
    >>> layer.forward(np.array([[0.5, 0.5]]))           # sigmoid(0)
    array([[0.5]], dtype=float32)
    """

    def __init__(self, in_features: int, out_features: int,
                 activation: str = "linear", *, bias: bool = True,
                 alpha: float = 0.01, init="auto"):
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.activation = check_activation(activation)
        self.alpha = check_real(alpha, "alpha", low=0.0)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {type(bias).__name__}")
        self.use_bias = bool(bias)
        if not callable(init):
            initializers.resolve(init, self.activation)   # unknown names fail here
        self.init = init
        self.dtype: np.dtype | None = None
        self._W = self._b = self._dW = self._db = None
        self.X = self.Z = self.A = None
        self._owner = None       # the model whose buffers hold W, b, dW, db

    # -- parameters -------------------------------------------------------

    @property
    def n_params(self) -> int:
        """Number of scalars in W and b."""
        return self.in_features * self.out_features + (self.out_features if self.use_bias else 0)

    # Read-only attributes: the arrays are writable in place, but cannot be
    # replaced by other arrays that the kernels would then trust blindly.
    W = property(lambda self: self._W, doc="Weights (in_features, out_features).")
    b = property(lambda self: self._b, doc="Bias (out_features,), or None.")
    dW = property(lambda self: self._dW, doc="Gradient dL/dW from the last backward.")
    db = property(lambda self: self._db, doc="Gradient dL/db from the last backward.")

    @property
    def built(self) -> bool:
        """Whether the layer has parameters (is in a model, or was built)."""
        return self._W is not None

    def _bind(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Make W, b, dW, db views into the flat slices ``params`` and ``grads``."""
        n_weights = self.in_features * self.out_features
        shape = (self.in_features, self.out_features)
        previous = (self._W, self._b) if self.built else None
        self.dtype = params.dtype
        self._W = params[:n_weights].reshape(shape)
        self._dW = grads[:n_weights].reshape(shape)
        self._b = params[n_weights:] if self.use_bias else None
        self._db = grads[n_weights:] if self.use_bias else None
        if previous is not None:        # keep the weights of a layer built earlier
            self._W[...] = previous[0]
            if self.use_bias:
                self._b[...] = previous[1]

    def _saved_binding(self) -> tuple:
        return (self._W, self._b, self._dW, self._db, self.dtype, self._owner)

    def _restore_binding(self, binding: tuple) -> None:
        self._W, self._b, self._dW, self._db, self.dtype, self._owner = binding

    def init_params(self, rng: np.random.Generator) -> None:
        """Draw W with the layer's initialiser from ``rng``; set b to 0.

        Drawn in float64 and then cast, so float32 and float64 models of one
        seed start alike.
        """
        self._W[...] = initializers.initial_weights(self.init, self.activation,
                                                    self._W.shape, rng)
        if self.use_bias:
            self._b[...] = 0.0

    def build(self, dtype="float32", seed=None) -> "Dense":
        """Give a layer used outside a model its own parameters; return the layer.

        Parameters
        ----------
        dtype : {"float32", "float64"}
        seed : int or None
            Seed of the initialisation (None: fresh entropy).
        """
        if self._owner is not None:
            raise ValueError("this layer belongs to a model; its parameters are the model's")
        dtype = check_dtype(dtype)
        self._W = None     # a rebuild draws new weights instead of keeping the old
        self._bind(aligned_empty(self.n_params, dtype), aligned_zeros(self.n_params, dtype))
        self.init_params(np.random.default_rng(seed))
        return self

    def parameters(self) -> list[np.ndarray]:
        """The layer's parameter arrays: [W, b], or [W] without a bias."""
        return [self._W, self._b] if self.use_bias else [self._W]

    def gradients(self) -> list[np.ndarray]:
        """The gradients matching :meth:`parameters`: [dW, db], or [dW]."""
        return [self._dW, self._db] if self.use_bias else [self._dW]

    # -- forward and backward ---------------------------------------------

    def _require_built(self) -> None:
        if not self.built:
            raise RuntimeError(
                f"{self!r} has no parameters yet: put it in a tinycore.Sequential "
                "or call layer.build()"
            )

    def forward(self, X) -> np.ndarray:
        """A = act(X @ W + b) for a batch X of shape (batch, in_features).

        Keeps X, Z and A for :meth:`backward`; returns A.
        """
        self._require_built()
        return self._forward(check_input(X, self.dtype, self.in_features, repr(self)))

    def _forward(self, X: np.ndarray) -> np.ndarray:
        # X is already validated: 2-D, C-contiguous, self.dtype, finite.
        Z = np.empty((X.shape[0], self.out_features), dtype=self.dtype)
        A = Z if self.activation == "linear" else np.empty_like(Z)
        _dense.dense_forward(CODES[self.activation], self.alpha, X, self._W, self._b, Z, A)
        self.X, self.Z, self.A = X, Z, A
        return A

    def backward(self, dA, *, need_dx: bool = True) -> np.ndarray | None:
        """Backpropagate dL/dA through the layer.

        Overwrites ``dW`` and ``db`` and returns dL/dX (None if ``need_dx`` is
        False).  By the chain rule: dZ = dA * act'(Z), dW = X^T dZ,
        db = sum over the batch of dZ, dX = dZ W^T.
        """
        self._require_built()
        if self.A is None:
            raise RuntimeError(f"{self!r}: call forward before backward")
        dA = check_same_shape(dA, self.A.shape, self.dtype, "dA", repr(self))
        return self._backward(dA, need_dx)

    def _backward(self, dA: np.ndarray, need_dx: bool) -> np.ndarray | None:
        self._check_cached_batch(dA, "dA")
        dZ = np.empty_like(dA)
        _dense.dense_activation_backward(CODES[self.activation], self.alpha, self.A, dA, dZ)
        return self._backward_from_dz(dZ, need_dx)

    def _backward_from_dz(self, dZ: np.ndarray, need_dx: bool) -> np.ndarray | None:
        self._check_cached_batch(dZ, "dZ")
        dX = np.empty_like(self.X) if need_dx else None
        _dense.dense_param_backward(self.X, self._W, dZ, self._dW, self._db, dX)
        return dX

    def _check_cached_batch(self, grad: np.ndarray, name: str) -> None:
        # The kernels trust that the gradient and the stored forward pass
        # have the same batch; a forward on this layer alone with another
        # batch in between would otherwise make them read past a buffer.
        if self.A is None or grad.shape != self.A.shape:
            stored = None if self.A is None else self.A.shape
            raise ValueError(
                f"{self!r}: {name} has shape {grad.shape} but the layer's last "
                f"forward pass gave {stored}; call forward again before backward"
            )

    def __repr__(self) -> str:
        extras = "" if self.use_bias else ", bias=False"
        if self.init != "auto":
            extras += f", init={getattr(self.init, '__name__', self.init)!r}"
        if self.activation == "leaky_relu":
            extras += f", alpha={self.alpha:g}"
        return (f"Dense({self.in_features}, {self.out_features}, "
                f"activation={self.activation!r}{extras})")
