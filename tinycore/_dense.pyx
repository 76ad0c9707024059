"""Dense (fully connected) layer: forward and backward passes.

Rows are samples.  With X of shape (batch, in) and W of shape (in, out):

    forward     Z = X @ W + b,   A = act(Z)
    backward    dZ = dA * act'(Z)           (softmax: its Jacobian-vector product)
                dW = X^T @ dZ,   db = sum over rows of dZ,   dX = dZ @ W^T

Both matrix products of the backward pass and the one of the forward pass are
single BLAS calls made without the GIL.
"""
from cython cimport floating

from ._blas cimport _column_sums, _gemm, _gemm_bias, NoTrans, Trans
from ._activations cimport Activation, _bias_activation, _activation_backward


def dense_forward(int activation, double alpha,
                  const floating[:, ::1] x,      # IN  (batch, in)
                  const floating[:, ::1] w,      # IN  (in, out)
                  const floating[::1] b,         # IN  (out,) or None
                  floating[:, ::1] z,            # OUT (batch, out) pre-activation
                  floating[:, ::1] a):           # OUT (batch, out) activation; may be z
    """Z = X @ W + b and A = act(Z) for one layer."""
    cdef int batch = x.shape[0], n_in = x.shape[1], n_out = w.shape[1]
    cdef const floating *bias = NULL
    if b is not None:
        bias = &b[0]
    with nogil:
        # z is overwritten, its previous contents never read.
        _gemm_bias(batch, n_out, n_in, &x[0, 0], n_in, &w[0, 0], n_out, bias,
                   &z[0, 0], n_out)
        _bias_activation(<Activation>activation, alpha, &z[0, 0], NULL,
                         &a[0, 0], batch, n_out)


def dense_activation_backward(int activation, double alpha,
                              const floating[:, ::1] a,     # IN  (batch, out) layer output
                              const floating[:, ::1] da,    # IN  dL/dA
                              floating[:, ::1] dz):         # OUT dL/dZ; may be da
    """dZ = dL/dZ from dL/dA, through the activation's derivative."""
    with nogil:
        _activation_backward(<Activation>activation, alpha, &a[0, 0], &da[0, 0],
                             &dz[0, 0], a.shape[0], a.shape[1])


def dense_param_backward(const floating[:, ::1] x,     # IN  (batch, in)
                         const floating[:, ::1] w,     # IN  (in, out)
                         const floating[:, ::1] dz,    # IN  (batch, out)
                         floating[:, ::1] dw,          # OUT (in, out)
                         floating[::1] db,             # OUT (out,) or None
                         floating[:, ::1] dx):         # OUT (batch, in) or None
    """dW = X^T @ dZ, db = column sums of dZ, dX = dZ @ W^T (when dx is given)."""
    cdef int batch = x.shape[0], n_in = x.shape[1], n_out = w.shape[1]
    cdef floating *db_ptr = NULL
    cdef floating *dx_ptr = NULL
    if db is not None:
        db_ptr = &db[0]
    if dx is not None:
        dx_ptr = &dx[0, 0]
    with nogil:
        # dW (in, out) = X^T (in, batch) @ dZ (batch, out); beta = 0 overwrites.
        _gemm(Trans, NoTrans, n_in, n_out, batch,
              1.0, &x[0, 0], n_in, &dz[0, 0], n_out, 0.0, &dw[0, 0], n_out)
        if db_ptr != NULL:
            _column_sums(&dz[0, 0], batch, n_out, db_ptr)
        if dx_ptr != NULL:
            # dX (batch, in) = dZ (batch, out) @ W^T (out, in).
            _gemm(NoTrans, Trans, batch, n_in, n_out,
                  1.0, &dz[0, 0], n_out, &w[0, 0], n_out, 0.0, dx_ptr, n_in)
