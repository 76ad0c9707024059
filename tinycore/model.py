"""A stack of dense layers trained by backpropagation and gradient descent."""
from __future__ import annotations

import functools
import numbers
import threading

import numpy as np

from tinycore import _simd, losses, optimizers, training
from tinycore._buffers import aligned_empty, aligned_zeros
from tinycore._validation import check_dtype, check_input, check_positive_int, check_same_shape
from tinycore.activations import CODES
from tinycore.layers import Dense

from tinycore.training import History, TrainingDivergedError, _n_predictions

_plan = _simd.load("_plan")

__all__ = ["Sequential", "History"]

# Which loss expects which output activation (its input must be probabilities).
_REQUIRED_OUTPUT = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}

# The losses the compiled plan computes itself (exact classes: a subclass may
# change the formulas, and then takes the per-layer path).
_PLAN_LOSSES = {
    losses.MSE: int(_plan.LossKind.LOSS_MSE),
    losses.SSE: int(_plan.LossKind.LOSS_SSE),
    losses.MAE: int(_plan.LossKind.LOSS_MAE),
    losses.BinaryCrossEntropy: int(_plan.LossKind.LOSS_BCE),
    losses.CrossEntropy: int(_plan.LossKind.LOSS_CE),
}
# Plan status codes, as plain ints for cheap comparisons on the hot path.
_OK = int(_plan.Status.OK)
_BUSY = int(_plan.Status.BUSY)
_DIVERGED = int(_plan.Status.DIVERGED)


_BUSY_MESSAGE = ("this model is being used by another thread; a model trains or "
                 "predicts in one thread at a time")


def _exclusive(method):
    """Run ``method`` holding the model's lock; another thread meanwhile gets
    a RuntimeError instead of interleaving with it (re-entrant, so fit may
    call evaluate)."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(_BUSY_MESSAGE)
        try:
            return method(self, *args, **kwargs)
        finally:
            self._lock.release()
    return guarded


def _check_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


class Sequential:
    """Dense layers applied one after the other.

    All parameters of the model live in one contiguous buffer and all
    gradients in another (``param_buffer``, ``grad_buffer``); each layer's
    ``W``, ``b``, ``dW`` and ``db`` are views into them.

    Parameters
    ----------
    layers : sequence of Dense
        Each layer's ``in_features`` must equal the previous ``out_features``.
        A layer belongs to one model only.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the parameters and of all computation; input of another
        dtype is converted.
    seed : int or None, default None
        Seeds the weight initialisation and the shuffling of
        :meth:`fit`: the same seed gives the same weights and the same
        training run.  None draws fresh entropy.

    Examples
    --------
    >>> import numpy as np, tinycore as tc
    >>> model = tc.Sequential([tc.Dense(2, 8, activation="tanh"),
    ...                        tc.Dense(8, 1, activation="sigmoid")], seed=0)
    >>> model.compile(loss="binary_cross_entropy", optimizer=tc.SGD(lr=0.5))
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]]); y = np.array([0, 1, 1, 0])
    >>> history = model.fit(X, y, epochs=2000, batch_size=4, verbose=0)
    >>> (model.predict(X).ravel() > 0.5).astype(int)
    array([0, 1, 1, 0])
    """

    def __init__(self, layers, *, dtype="float32", seed=None):
        self.dtype = check_dtype(dtype)
        self.seed = _check_seed(seed)
        self.layers = self._check_layers(layers)
        sizes = [layer.n_params for layer in self.layers]
        # On cache lines: a split step's two threads each update half.
        self._params = aligned_empty(sum(sizes), self.dtype)
        self._grads = aligned_zeros(sum(sizes), self.dtype)
        self._rng = np.random.default_rng(self.seed)
        offset = 0
        saved = [layer._saved_binding() for layer in self.layers]
        try:
            for layer, size in zip(self.layers, sizes):
                was_built = layer.built
                layer._bind(self._params[offset:offset + size],
                            self._grads[offset:offset + size])
                layer._owner = self
                if not was_built:
                    layer.init_params(self._rng)
                offset += size
        except BaseException:
            # A failed initialiser must leave the layers as they were, not
            # claimed by (and viewing the buffers of) a model never made.
            for layer, binding in zip(self.layers, saved):
                layer._restore_binding(binding)
            raise
        self.loss: losses.Loss | None = None
        self._optimizer: optimizers.Optimizer | None = None
        self._sgd_fusable = False
        self._plan_steps = False
        self._plan = None
        self._lock = threading.RLock()
        #: Set to True (by a callback) to end fit() after the current batch.
        self.stop_training = False
        # Whether the layers' X, Z, A come from the last forward(): a
        # train_step through the plan leaves them stale.
        self._forward_current = False

    @staticmethod
    def _check_layers(layers) -> tuple:
        if isinstance(layers, Dense):
            raise TypeError("layers must be a list of Dense layers, got a single Dense")
        try:
            layers = tuple(layers)
        except TypeError:
            raise TypeError(
                f"layers must be a list of Dense layers, got {type(layers).__name__}"
            ) from None
        if not layers:
            raise ValueError("a Sequential model needs at least one layer")
        for index, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise TypeError(f"layer {index} is a {type(layer).__name__}, not a Dense")
            if layer._owner is not None or layers.index(layer) != index:
                raise ValueError(f"layer {index} {layer!r} already belongs to a model")
        for index in range(1, len(layers)):
            before, after = layers[index - 1], layers[index]
            if after.in_features != before.out_features:
                raise ValueError(
                    f"layer {index} {after!r} expects {after.in_features} inputs, but "
                    f"layer {index - 1} {before!r} gives {before.out_features}"
                )
        return layers

    # -- parameters -------------------------------------------------------

    @property
    def param_buffer(self) -> np.ndarray:
        """Every parameter of the model, layer after layer (W then b), in one array."""
        return self._params

    @property
    def grad_buffer(self) -> np.ndarray:
        """Every gradient, laid out like :attr:`param_buffer`."""
        return self._grads

    @property
    def n_params(self) -> int:
        """Number of trainable scalars."""
        return self._params.size

    @property
    def in_features(self) -> int:
        """Number of input features."""
        return self.layers[0].in_features

    @property
    def out_features(self) -> int:
        """Number of outputs."""
        return self.layers[-1].out_features

    def parameters(self) -> list[np.ndarray]:
        """All parameter arrays, layer by layer: [W0, b0, W1, b1, ...]."""
        return [array for layer in self.layers for array in layer.parameters()]

    def gradients(self) -> list[np.ndarray]:
        """All gradient arrays, matching :meth:`parameters`."""
        return [array for layer in self.layers for array in layer.gradients()]

    # -- forward and backward ---------------------------------------------

    def _check_X(self, X) -> np.ndarray:
        return check_input(X, self.dtype, self.in_features, f"layer 0 {self.layers[0]!r}")

    @_exclusive
    def forward(self, X) -> np.ndarray:
        """Run the layers on a batch X (batch, in_features); return the output.

        Every layer keeps its input, pre-activation and output for
        :meth:`backward`.  The returned array is the last layer's ``A``.
        """
        out = self._forward(self._check_X(X))
        self._forward_current = True
        return out

    def _forward(self, X: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            X = layer._forward(X)
        return X

    @_exclusive
    def backward(self, grad_out) -> np.ndarray:
        """Backpropagate dL/d(output) through every layer, last to first.

        Overwrites each layer's ``dW`` and ``db``; returns dL/dX.
        """
        last = self.layers[-1]
        if not self._forward_current or last.A is None:
            raise RuntimeError("call forward before backward (train_step, predict "
                               "and evaluate do not keep a forward pass)")
        grad = check_same_shape(grad_out, last.A.shape, self.dtype, "grad_out",
                                f"backward from the last layer {last!r}")
        for layer in reversed(self.layers):
            grad = layer._backward(grad, need_dx=True)
        return grad

    def _backward_loss(self, out: np.ndarray, target: np.ndarray) -> float:
        """Loss of ``out`` against ``target``; backpropagate it.  Return the loss."""
        last = self.layers[-1]
        need_dx = len(self.layers) > 1
        if self.loss.fuses_with == last.activation:
            # Softmax + cross-entropy (sigmoid + BCE): dL/dZ = (A - T) / n,
            # straight from the logits, without the loss's own 1/p.
            dZ = np.empty_like(out)
            value = self.loss._fused(last.Z, out, target, dZ)
            grad = last._backward_from_dz(dZ, need_dx)
        else:
            denominator = self.loss._denominator(out.shape)
            value = self.loss._value_sum(out, target) / denominator
            dA = np.empty_like(out)
            self.loss._grad(1.0 / denominator, out, target, dA)
            grad = last._backward(dA, need_dx)
        for index in range(len(self.layers) - 2, -1, -1):
            grad = self.layers[index]._backward(grad, need_dx=index > 0)
        return float(value)

    # -- training -----------------------------------------------------------

    def compile(self, loss="mse", optimizer="sgd") -> None:
        """Choose the loss and the optimizer used by :meth:`train_step` and :meth:`fit`.

        Parameters
        ----------
        loss : str or tinycore.losses.Loss
            ``cross_entropy`` needs a softmax output layer and
            ``binary_cross_entropy`` a sigmoid one (they take probabilities).
        optimizer : str or tinycore.optimizers.Optimizer
        """
        loss = losses.get(loss)
        required = _REQUIRED_OUTPUT.get(loss.name)
        if required is not None and self.layers[-1].activation != required:
            raise ValueError(
                f"{loss.name} takes probabilities: the last layer must use "
                f"activation={required!r}, not {self.layers[-1].activation!r}"
            )
        optimizer = optimizers.get(optimizer)
        # An optimizer whose state belongs to another model fails here, not
        # at the first step.
        optimizer._bind(self._params, self._grads)
        self.loss = loss
        self.optimizer = optimizer
        self._plan = self._make_plan()

    @property
    def optimizer(self):
        """The optimizer that compile() set (assignable, like Keras')."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer) -> None:
        self._optimizer = optimizer
        # Whether the plan may take the optimizer's steps itself: one of
        # tinycore's rules, not a subclass with its own step or rule; and
        # whether the rule is tc.SGD's, whose plain form (w -= lr * g) has a
        # faster way in (checked once, not every step).
        kind = type(optimizer)
        self._plan_steps = optimizers._plan_can_step(kind)
        self._sgd_fusable = self._plan_steps and kind._update is optimizers.SGD._update

    def _make_plan(self):
        """The fused training plan for this model and loss, or None if the
        loss is not one the plan computes."""
        kind = _PLAN_LOSSES.get(type(self.loss))
        if kind is None:
            return None
        table = [(layer.in_features, layer.out_features, CODES[layer.activation],
                  layer.alpha, layer.use_bias) for layer in self.layers]
        return _plan.Plan(table, self._params, self._grads, kind)

    def _require_compiled(self) -> None:
        if self.loss is None:
            raise RuntimeError("call model.compile(loss=..., optimizer=...) first")

    def _check_data(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        X = self._check_X(X)
        y = self.loss.check_target(y, (X.shape[0], self.out_features), self.dtype)
        return X, y

    def train_step(self, X, y, *, check_finite: bool = False) -> float:
        """One step of gradient descent on the batch (X, y).

        Forward pass, loss, backward pass, optimizer update.  Returns the loss
        of the batch before the update.

        Parameters
        ----------
        X, y : array_like
            A batch of samples and its targets.
        check_finite : bool, default False
            Check every gradient before updating, as ``fit`` always does: if
            one is NaN or infinite, raise :class:`TrainingDivergedError` and
            leave the weights unchanged.  A loss that is NaN or infinite (the
            forward pass overflowed) raises it whatever this says.
        """
        # The model's lock, taken here rather than by @_exclusive: this is the
        # hot path of small networks, where a wrapper call shows.
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(_BUSY_MESSAGE)
        try:
            return self._train_step(X, y, check_finite)
        finally:
            self._lock.release()

    def _train_step(self, X, y, check_finite: bool) -> float:
        self._require_compiled()
        self._forward_current = False
        plan = self._plan
        if plan is None:
            X, y = self._check_data(X, y)
            return self._train_batch(X, y, check_finite)[0]
        lr = self._plan_lr()
        rule = self._plan_rule() if lr is None else None
        in_plan = lr is not None or rule is not None
        try:
            status = plan.train_step(X, y, lr or 0.0, in_plan, False, check_finite, rule)
            if status != _OK and status != _DIVERGED:
                # Not in the exact form, or a check in the kernel failed: the
                # full validation converts, or raises the error that explains why.
                self._raise_if_busy(status)
                X, y = self._check_data(X, y)
                status = plan.train_step(X, y, lr or 0.0, in_plan, False, check_finite,
                                         rule)
                self._raise_if_busy(status)
            if status == _DIVERGED:
                raise TrainingDivergedError(plan.last_bad_layer, plan.last_loss)
        except BaseException:
            if rule is not None:
                self.optimizer._forget_untaken_step()
            raise
        self._finish_step(in_plan)
        return plan.last_loss

    def _plan_lr(self):
        """The learning rate if the optimizer's next step is plain SGD
        (w -= lr * g), which the plan applies itself, else None."""
        if not self._sgd_fusable:
            return None          # another rule, or a subclass with its own step
        return self.optimizer._plan_sgd_lr()

    def _plan_rule(self):
        """The optimizer's next step as a rule the plan applies itself (see
        Optimizer._plan_rule), or None if only its step() can take it."""
        if not self._plan_steps:
            return None
        return self.optimizer._plan_rule(self._params, self._grads)

    def _finish_step(self, in_plan: bool) -> None:
        # After the plan's forward and backward: count the step the plan
        # took, or let the optimizer update from the gradients it left.
        if in_plan:
            self.optimizer.iterations += 1
        else:
            self.optimizer.step(self)

    @staticmethod
    def _raise_if_busy(status) -> None:
        if status == _BUSY:
            raise RuntimeError(_BUSY_MESSAGE)

    def _train_batch(self, X: np.ndarray, y: np.ndarray,
                     check_finite: bool) -> tuple[float, np.ndarray]:
        """Per-layer path: forward, loss, backward, update (for custom losses)."""
        out = self._forward(X)
        value = self._backward_loss(out, y)
        if check_finite or not np.isfinite(value):
            self._check_finite_step(value)
        self.optimizer.step(self)
        return value, out

    def _check_finite_step(self, value: float) -> None:
        # The per-layer path's twin of the plan's guard (same tracing rule).
        if not np.isfinite(value):
            bad = [i for i, layer in enumerate(self.layers) if not np.isfinite(layer.A).all()]
            raise TrainingDivergedError(bad[0] if bad else len(self.layers) - 1, value)
        for index in range(len(self.layers) - 1, -1, -1):
            if not all(np.isfinite(g).all() for g in self.layers[index].gradients()):
                raise TrainingDivergedError(index, value)

    @_exclusive
    def fit(self, X, y, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            validation_data=None, validation_split: float = 0.0, callbacks=None,
            verbose: int = 1, restarts: int = 1, track_gradients: bool = False,
            comm=None, sharded: bool = False) -> History:
        """Train for ``epochs`` passes over (X, y) in mini-batches.

        Parameters
        ----------
        X : array_like (n_samples, in_features)
        y : array_like
            Targets: class labels (n_samples,) or rows for the classification
            losses, (n_samples, out_features) or (n_samples,) for one output.
        epochs : int, default 1
        batch_size : int, default 32
            The last batch of an epoch holds the remainder; it is used.
        shuffle : bool, default True
            Visit the samples in a new random order each epoch (from ``seed``).
        validation_data : (X_val, y_val), optional
            Evaluated after every epoch: "val_loss" (and "val_accuracy").
        validation_split : float, default 0.0
            Hold out this fraction of the samples (the last ones, before
            shuffling) as validation data instead.
        callbacks : list of tinycore.callbacks.Callback, optional
        verbose : {0, 1, 2}, default 1
            0 prints nothing; 1 shows a progress bar per epoch (with tqdm,
            else a line); 2 prints one line per epoch.
        restarts : int, default 1
            Train this many times from different initial weights and keep
            the run with the lowest final loss (val_loss if there is
            validation data); the returned History says which one won.
        track_gradients : bool, default False
            Record per-layer gradient norms, update/weight ratios and the
            share of saturated or dead units for each epoch (see History):
            the vanishing-gradient problem, measured.
        comm : mpi4py.MPI.Intracomm, optional
            Train data-parallel on every rank of ``comm`` (start the script
            with ``mpiexec -n N``; needs ``pip install "tinycore[mpi]"``).
            ``batch_size`` is then per rank: each step averages the gradients
            of N * batch_size samples with one ``Allreduce``, and the weights
            stay identical on every rank.  Rank 0 alone prints progress,
            writes checkpoints and returns the full History.  See
            :mod:`tinycore.distributed` (not with ``restarts`` or
            ``track_gradients``).
        sharded : bool, default False
            With ``comm``: each rank passes only its own rows (e.g. from
            ``tc.data.load_npy(path, comm=comm)``) instead of the whole data set.

        Returns
        -------
        History
            ``history.history["loss"]`` holds one value per epoch: the loss of
            each batch before its update, averaged over the epoch.
        """
        self._require_compiled()
        if comm is not None:
            from tinycore import distributed    # imports mpi4py only when asked
            return distributed.fit(self, X, y, comm=comm, sharded=sharded, epochs=epochs,
                                   batch_size=batch_size, shuffle=shuffle,
                                   validation_data=validation_data,
                                   validation_split=validation_split, callbacks=callbacks,
                                   verbose=verbose, restarts=restarts,
                                   track_gradients=track_gradients)
        if sharded:
            raise ValueError("sharded=True needs comm")
        return training.fit(self, X, y, epochs=epochs, batch_size=batch_size,
                            shuffle=shuffle, validation_data=validation_data,
                            validation_split=validation_split, callbacks=callbacks,
                            verbose=verbose, restarts=restarts,
                            track_gradients=track_gradients)

    def _fit_batch(self, X, y, rows) -> tuple[float, int]:
        """One step on X[rows], y[rows]; return the loss and the correct count."""
        classification = self.loss.is_classification
        plan = self._plan
        if plan is None:
            X_batch, y_batch = X[rows], y[rows]
            value, out = self._train_batch(X_batch, y_batch, True)
            return value, (_count_correct(self.loss, out, y_batch) if classification else 0)
        lr = self._plan_lr()
        rule = self._plan_rule() if lr is None else None
        in_plan = lr is not None or rule is not None
        try:
            status = plan.train_rows(X, y, rows, lr or 0.0, in_plan, classification, True,
                                     rule)
            self._raise_if_busy(status)
            if status == _DIVERGED:
                raise TrainingDivergedError(plan.last_bad_layer, plan.last_loss)
        except BaseException:
            if rule is not None:
                self.optimizer._forget_untaken_step()
            raise
        self._finish_step(in_plan)
        return plan.last_loss, plan.last_correct

    # -- inference ------------------------------------------------------------

    @_exclusive
    def predict(self, X, batch_size: int = 1024) -> np.ndarray:
        """The model's output for X, computed ``batch_size`` rows at a time.

        Returns a new array of shape (n_samples, out_features).
        """
        X = self._check_X(X)
        batch_size = check_positive_int(batch_size, "batch_size")
        out = np.empty((X.shape[0], self.out_features), dtype=self.dtype)
        self._forward_current = False
        if self._plan is not None:
            self._raise_if_busy(self._plan.predict(X, out, batch_size))
            return out
        for start in range(0, X.shape[0], batch_size):     # uncompiled, or custom loss
            out[start:start + batch_size] = self._forward(X[start:start + batch_size])
        return out

    @_exclusive
    def evaluate(self, X, y, batch_size: int = 1024) -> dict[str, float]:
        """Loss (and accuracy, for classification) of the model on (X, y).

        Returns
        -------
        dict
            ``{"loss": ...}``, plus ``"accuracy"`` for the classification losses.
        """
        self._require_compiled()
        X, y = self._check_data(X, y)
        out = self.predict(X, batch_size)
        n_samples = X.shape[0]
        result = {"loss": self.loss._value_sum(out, y)
                  / self.loss._denominator((n_samples, self.out_features))}
        if self.loss.is_classification:
            result["accuracy"] = (_count_correct(self.loss, out, y)
                                  / _n_predictions(self.loss, n_samples, self.out_features))
        return result

    # -- saving -------------------------------------------------------------------

    def save(self, path, *, include_optimizer: bool = False) -> None:
        """Write the model to one ``.safetensors`` file (see :func:`tinycore.load`).

        Parameters
        ----------
        path : str or os.PathLike
        include_optimizer : bool, default False
            Also store the optimizer's state and step count, to resume training
            exactly.  The loss and the optimizer's hyper-parameters of a
            compiled model are always stored.
        """
        from tinycore import serialization
        serialization.save(self, path, include_optimizer=include_optimizer)

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n], dtype={self.dtype.name!r}, seed={self.seed!r})"


def _count_correct(loss, out: np.ndarray, target: np.ndarray) -> int:
    """Correct predictions in a batch: the arg-max class for cross-entropy
    (labels or class rows), p >= 0.5 per output unit for binary cross-entropy."""
    if loss.name == "cross_entropy":
        classes = target if target.ndim == 1 else target.argmax(axis=1)
        return int(np.count_nonzero(out.argmax(axis=1) == classes))
    return int(np.count_nonzero((out >= 0.5) == (target >= 0.5)))
