"""A plain, vectorised NumPy multi-layer perceptron: the peer every engine is
measured against.

Written the way a careful NumPy user would, so that the comparison is with
good NumPy and not with a straw man:

- float32 throughout (the Python-float learning rate stays a weak scalar under
  NEP 50, so nothing is promoted to float64);
- every activation, pre-activation and gradient buffer is allocated once per
  batch size and reused (``np.matmul(..., out=...)`` and in-place ufuncs), so a
  steady-state step allocates only a few tiny temporaries (row maxima, the
  loss scalar);
- softmax and cross-entropy are fused: dL/dZ = (P - Y) / batch, straight
  from the logits, with no Jacobian product;
- all parameters live in one flat buffer and all gradients in another (views
  per layer), so the SGD update is two in-place passes over the whole model.

Weights are (in, out), rows are samples: Z = A_prev @ W + b, as in tinycore.
"""
from __future__ import annotations

import numpy as np

__all__ = ["NumpyMLP"]

_ACTIVATIONS = ("sigmoid", "relu", "softmax")


class NumpyMLP:
    """Dense layers trained by backpropagation and plain SGD, in NumPy.

    Parameters
    ----------
    weights : sequence of (W, b)
        Initial parameters, W of shape (in, out) and b of shape (out,);
        copied into the model's own float32 buffer.
    activations : sequence of str
        One per layer: "sigmoid" or "relu" for any layer, "softmax" for the
        last one only (it then requires ``loss="cross_entropy"``).
    loss : {"sse", "cross_entropy"}
        "sse" is 1/2 * sum of squared errors over the batch (float targets of
        shape (batch, out)); "cross_entropy" is the mean negative
        log-likelihood of integer labels of shape (batch,).
    lr : float
        SGD learning rate.
    """

    def __init__(self, weights, activations, loss, lr):
        if len(weights) != len(activations):
            raise ValueError("one activation per layer")
        for index, name in enumerate(activations):
            if name not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}")
            if name == "softmax" and index != len(activations) - 1:
                raise ValueError("softmax is for the last layer only")
        if loss not in ("sse", "cross_entropy"):
            raise ValueError(f"unknown loss {loss!r}")
        if loss == "cross_entropy" and activations[-1] != "softmax":
            raise ValueError("cross_entropy expects a softmax output layer")
        self.activations = tuple(activations)
        self.loss = loss
        self.lr = float(lr)
        self.sizes = [np.shape(weights[0][0])[0]] + [np.shape(w)[1] for w, _ in weights]

        n_params = sum(np.size(w) + np.size(b) for w, b in weights)
        self.params = np.empty(n_params, dtype=np.float32)
        self.grads = np.zeros(n_params, dtype=np.float32)
        self.W, self.b, self.dW, self.db = [], [], [], []
        offset = 0
        for w, b in weights:
            n_in, n_out = np.shape(w)
            for flat, views_w, views_b in ((self.params, self.W, self.b),
                                           (self.grads, self.dW, self.db)):
                views_w.append(flat[offset:offset + n_in * n_out].reshape(n_in, n_out))
                views_b.append(flat[offset + n_in * n_out:offset + n_in * n_out + n_out])
            self.W[-1][...] = w
            self.b[-1][...] = b
            offset += n_in * n_out + n_out
        self._batch = None

    def _allocate(self, batch: int) -> None:
        """Buffers for one batch size: Z and A per layer, dZ, dA, masks."""
        f32 = np.float32
        widths = self.sizes[1:]
        self.Z = [np.empty((batch, n), f32) for n in widths]
        # A softmax layer's A holds probabilities; Z keeps the logits.
        self.A = [np.empty((batch, n), f32) for n in widths]
        self.dZ = [np.empty((batch, n), f32) for n in widths]
        # dL/dA of layer l (l < last), written by the matmul with W_{l+1}^T.
        self.dA = [np.empty((batch, n), f32) for n in widths[:-1]]
        # Scratch for the derivative of the activation: sigmoid' = A (1 - A),
        # relu' = (A > 0), kept so the backward pass allocates nothing.
        self.scratch = [np.empty((batch, n), f32) for n in widths]
        self.masks = [np.empty((batch, n), bool) for n in widths]
        self.rows = np.arange(batch)
        self._batch = batch

    # -- the pieces of one step -------------------------------------------

    @staticmethod
    def _activate(name: str, Z: np.ndarray, A: np.ndarray) -> None:
        if name == "relu":
            np.maximum(Z, 0.0, out=A)
        elif name == "sigmoid":
            # sigma(z) = (1 + tanh(z / 2)) / 2: no exp overflow for large |z|.
            np.multiply(Z, 0.5, out=A)
            np.tanh(A, out=A)
            A *= 0.5
            A += 0.5
        # softmax is handled together with the loss.

    def _loss_and_output_grad(self, y: np.ndarray) -> float:
        """Loss of the batch and dL/dZ of the last layer, into self.dZ[-1]."""
        batch = self._batch
        Z, A, dZ = self.Z[-1], self.A[-1], self.dZ[-1]
        if self.loss == "cross_entropy":
            # Stable softmax: subtract the row maximum, exponentiate in place.
            np.subtract(Z, Z.max(axis=1, keepdims=True), out=A)
            # log-sum-exp of the shifted logits minus the shifted logit of the
            # label is -log p_label, without taking the log of a tiny p.
            shifted_label = A[self.rows, y]
            np.exp(A, out=A)
            sums = A.sum(axis=1, keepdims=True)
            loss = float(np.mean(np.log(sums[:, 0]) - shifted_label))
            A /= sums
            # Fused softmax + cross-entropy gradient: (P - onehot(y)) / batch.
            np.multiply(A, 1.0 / batch, out=dZ)
            dZ[self.rows, y] -= 1.0 / batch
            return loss
        # Squared error, 1/2 sum (A - Y)^2: dL/dA = A - Y, then through act'.
        self._activate(self.activations[-1], Z, A)
        np.subtract(A, y, out=dZ)
        loss = 0.5 * float(np.vdot(dZ, dZ))
        self._through_activation(len(self.Z) - 1, dZ, dZ)
        return loss

    def _through_activation(self, layer: int, dA: np.ndarray, dZ: np.ndarray) -> None:
        """dZ = dA * act'(Z) from the layer's output A; dZ may be dA."""
        name, A = self.activations[layer], self.A[layer]
        if name == "relu":
            mask = self.masks[layer]
            np.greater(A, 0.0, out=mask)
            np.multiply(dA, mask, out=dZ)
        elif name == "sigmoid":
            d = self.scratch[layer]
            np.subtract(1.0, A, out=d)     # sigma' = sigma (1 - sigma)
            d *= A
            np.multiply(dA, d, out=dZ)
        else:
            raise AssertionError(name)

    def train_step(self, X: np.ndarray, y: np.ndarray) -> float:
        """Forward, loss, backward and one SGD update; return the loss before it."""
        if X.shape[0] != self._batch:
            self._allocate(X.shape[0])
        n_layers = len(self.W)
        # Forward.
        A_prev = X
        for layer in range(n_layers):
            Z = self.Z[layer]
            np.matmul(A_prev, self.W[layer], out=Z)
            Z += self.b[layer]
            if layer < n_layers - 1:
                self._activate(self.activations[layer], Z, self.A[layer])
            A_prev = self.A[layer]
        loss = self._loss_and_output_grad(y)
        # Backward: dW = A_prev^T dZ, db = colsum dZ, dA_prev = dZ W^T.
        for layer in range(n_layers - 1, -1, -1):
            dZ = self.dZ[layer]
            A_prev = self.A[layer - 1] if layer > 0 else X
            np.matmul(A_prev.T, dZ, out=self.dW[layer])
            np.sum(dZ, axis=0, out=self.db[layer])
            if layer > 0:
                dA = self.dA[layer - 1]
                np.matmul(dZ, self.W[layer].T, out=dA)
                self._through_activation(layer - 1, dA, self.dZ[layer - 1])
        # SGD over the flat buffers: w -= lr * g, two in-place passes.
        self.grads *= self.lr
        self.params -= self.grads
        return loss
