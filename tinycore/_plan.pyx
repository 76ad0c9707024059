"""The execution plan: a whole training step in one call, without the GIL.

``Sequential.compile`` builds a :class:`Plan` over the model's flat parameter
and gradient buffers.  For each batch size it meets, the plan allocates one
workspace holding every layer's Z and A and two gradient scratch buffers, and
keeps it; a training step then runs

    forward      Z_l = A_{l-1} W_l + b_l,  A_l = act(Z_l)         for every layer
    loss         value, and dZ_L (fused with softmax / sigmoid where it applies)
    backward     dW_l = A_{l-1}^T dZ_l,  db_l = colsum(dZ_l),
                 dZ_{l-1} = (dZ_l W_l^T) * act'(A_{l-1}),
                 then the update of layer l (its W_l is no longer needed)

in one nogil function, allocating nothing.  The same kernels as the per-layer
API (``_dense``, ``_activations``, ``_losses``, ``_optim``) do the work.
"""
cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport NAN, sqrt
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from cython cimport floating

import numpy as np

from ._activations cimport (
    Activation, LINEAR, RELU, SIGMOID, SOFTMAX, TANH, _activation_backward, _all_finite,
    _bias_activation,
)
from ._blas cimport NoTrans, Trans, _column_sums, _gemm, _gemm_bias
from ._losses cimport (
    _absolute_error_sum, _scaled_difference, _scaled_sign_difference,
    _sigmoid_binary_cross_entropy, _softmax_cross_entropy_labels,
    _softmax_cross_entropy_rows, _squared_error_sum,
)
from ._optim cimport _sgd_update

cnp.import_array()


cpdef enum LossKind:
    LOSS_MSE = 0
    LOSS_SSE = 1
    LOSS_MAE = 2
    LOSS_BCE = 3    # after a sigmoid output layer: fused, from the logits
    LOSS_CE = 4     # after a softmax output layer: fused, from the logits


cpdef enum Status:
    OK = 0
    NEEDS_CONVERSION = 1     # not in the plan's exact dtype/shape/layout
    NOT_FINITE_INPUT = 2
    NOT_FINITE_TARGET = 3
    LABEL_OUT_OF_RANGE = 4
    BUSY = 5                 # another thread is inside this plan
    DIVERGED = 6             # loss or a gradient not finite: no update made


cdef struct LayerSpec:
    int n_in
    int n_out
    Activation activation
    double alpha
    Py_ssize_t w_offset      # W at params + w_offset, shape (n_in, n_out)
    Py_ssize_t b_offset      # b at params + b_offset; -1 without a bias
    Py_ssize_t n_params      # W and b, contiguous from w_offset
    Py_ssize_t z_cols        # Z at workspace + batch * z_cols
    Py_ssize_t a_cols        # A at workspace + batch * a_cols (= z_cols if linear)


cdef struct Problem:
    # Everything one step needs, as raw pointers, so the nogil code below can
    # be written once for float and double.
    LayerSpec *layers
    int n_layers
    int loss_kind
    Py_ssize_t batch
    Py_ssize_t grad0_cols    # the two gradient scratch buffers, each
    Py_ssize_t grad1_cols    # batch x max width, in the workspace
    Py_ssize_t n_params      # all layers' parameters
    bint has_labels


# ---------------------------------------------------------------------------
# nogil building blocks
# ---------------------------------------------------------------------------

def all_finite(const floating[::1] x):
    """Whether every element of the contiguous vector ``x`` is finite."""
    cdef bint ok = True
    if x.shape[0] > 0:
        with nogil:
            ok = _all_finite(&x[0], x.shape[0])
    return ok


cdef inline bint _labels_in_range(const int64_t *labels, Py_ssize_t n,
                                  int64_t n_classes) noexcept nogil:
    cdef Py_ssize_t i
    cdef bint bad = 0
    for i in range(n):
        bad |= (labels[i] < 0) | (labels[i] >= n_classes)
    return not bad


cdef inline bint _softmax_left_to_loss(const Problem *p) noexcept nogil:
    # Softmax + cross-entropy: the loss kernel takes the output layer's
    # softmax from the exps its log-sum-exp needs, so a training step's
    # forward pass stops at that layer's Z.
    return p.loss_kind == LOSS_CE and p.layers[p.n_layers - 1].activation == SOFTMAX


cdef void _forward(const Problem *p, const floating *x, floating *params,
                   floating *ws, bint training) noexcept nogil:
    """Every layer's Z and A; in ``training``, the output layer's A may be left
    to the loss (see :func:`_softmax_left_to_loss`)."""
    cdef int l
    cdef const LayerSpec *layer
    cdef const floating *inp = x
    cdef floating *z
    cdef floating *a
    for l in range(p.n_layers):
        layer = &p.layers[l]
        z = ws + p.batch * layer.z_cols
        a = ws + p.batch * layer.a_cols
        # Z = X W + b (Z overwritten, its previous contents never read), the
        # bias added as the product is stored where the small kernel takes it.
        _gemm_bias(<int>p.batch, layer.n_out, layer.n_in, inp, layer.n_in,
                   params + layer.w_offset, layer.n_out,
                   params + layer.b_offset if layer.b_offset >= 0 else NULL,
                   z, layer.n_out)
        if training and l == p.n_layers - 1 and _softmax_left_to_loss(p):
            return
        _bias_activation(layer.activation, layer.alpha, z, NULL, a, p.batch, layer.n_out)
        inp = a


cdef double _output_gradient(const Problem *p, const floating *target,
                             const int64_t *labels, floating *ws) noexcept nogil:
    """Loss value; dL/dZ of the last layer written to the first scratch buffer
    (and the last layer's A, if the forward pass left it to the loss)."""
    cdef const LayerSpec *last = &p.layers[p.n_layers - 1]
    cdef const floating *z = ws + p.batch * last.z_cols
    cdef floating *a = ws + p.batch * last.a_cols
    cdef floating *dz = ws + p.batch * p.grad0_cols
    cdef Py_ssize_t n = p.batch * last.n_out
    cdef double value
    cdef bint softmax_here = _softmax_left_to_loss(p)
    if p.loss_kind == LOSS_CE:
        if p.has_labels:
            value = _softmax_cross_entropy_labels(1.0 / p.batch, z, a, softmax_here,
                                                  labels, dz, p.batch, last.n_out)
        else:
            value = _softmax_cross_entropy_rows(1.0 / p.batch, z, a, softmax_here,
                                                target, dz, p.batch, last.n_out)
        return value / p.batch
    if p.loss_kind == LOSS_BCE:
        return _sigmoid_binary_cross_entropy(1.0 / n, z, a, target, dz, n) / n
    # Regression losses: dL/dA first, then through the activation to dL/dZ.
    if p.loss_kind == LOSS_MSE:
        value = _squared_error_sum(a, target, n) / n
        _scaled_difference(2.0 / n, a, target, dz, n)
    elif p.loss_kind == LOSS_SSE:
        value = 0.5 * _squared_error_sum(a, target, n)
        _scaled_difference(1.0, a, target, dz, n)
    else:
        value = _absolute_error_sum(a, target, n) / n
        _scaled_sign_difference(1.0 / n, a, target, dz, n)
    _activation_backward(last.activation, last.alpha, a, dz, dz, p.batch, last.n_out)
    return value


cdef void _backward_and_update(const Problem *p, const floating *x, floating *params,
                               floating *grads, floating *ws, double lr,
                               bint update) noexcept nogil:
    cdef int l
    cdef const LayerSpec *layer
    cdef const LayerSpec *below
    cdef const floating *inp
    cdef floating *dz = ws + p.batch * p.grad0_cols
    cdef floating *dx = ws + p.batch * p.grad1_cols
    cdef floating *swap
    for l in range(p.n_layers - 1, -1, -1):
        layer = &p.layers[l]
        inp = x if l == 0 else ws + p.batch * p.layers[l - 1].a_cols
        # dW (in, out) = inp^T (in, batch) @ dZ (batch, out)
        _gemm(Trans, NoTrans, layer.n_in, layer.n_out, <int>p.batch,
              1.0, inp, layer.n_in, dz, layer.n_out, 0.0,
              grads + layer.w_offset, layer.n_out)
        if layer.b_offset >= 0:
            _column_sums(dz, p.batch, layer.n_out, grads + layer.b_offset)
        if l > 0:
            # dX (batch, in) = dZ (batch, out) @ W^T, with W before its update;
            # then through the activation of the layer below: its dZ.
            below = &p.layers[l - 1]
            _gemm(NoTrans, Trans, <int>p.batch, layer.n_in, layer.n_out,
                  1.0, dz, layer.n_out, params + layer.w_offset, layer.n_out,
                  0.0, dx, layer.n_in)
            _activation_backward(below.activation, below.alpha, inp, dx, dx,
                                 p.batch, layer.n_in)
        if update:
            # This layer's gradients are final and its W is no longer needed.
            _sgd_update(lr, params + layer.w_offset, grads + layer.w_offset,
                        layer.n_params)
        swap = dz
        dz = dx
        dx = swap


cdef Py_ssize_t _count_correct(const Problem *p, const floating *target,
                               const int64_t *labels, const floating *ws) noexcept nogil:
    """Correct predictions: arg-max class (cross-entropy), p >= 0.5 (BCE)."""
    cdef const LayerSpec *last = &p.layers[p.n_layers - 1]
    cdef const floating *a = ws + p.batch * last.a_cols
    cdef Py_ssize_t i, j, best, wanted, n_out = last.n_out, count = 0
    if p.loss_kind == LOSS_BCE:
        for i in range(p.batch * n_out):
            count += (a[i] >= 0.5) == (target[i] >= 0.5)
        return count
    for i in range(p.batch):
        best = 0
        for j in range(1, n_out):
            if a[i * n_out + j] > a[i * n_out + best]:
                best = j
        if p.has_labels:
            wanted = labels[i]
        else:
            wanted = 0
            for j in range(1, n_out):
                if target[i * n_out + j] > target[i * n_out + wanted]:
                    wanted = j
        count += best == wanted
    return count


cdef int _first_non_finite_layer(const Problem *p, double value, const floating *grads,
                                 const floating *ws) noexcept nogil:
    """Where a step went wrong: -1 if the loss and every gradient are finite.

    A non-finite loss is traced to the first layer whose output is not
    finite (the last layer if all are); a non-finite gradient to the layer
    nearest the output that has one, where backpropagation met it first.
    """
    cdef int l
    cdef const LayerSpec *layer
    if not (value - value == 0):
        for l in range(p.n_layers):
            layer = &p.layers[l]
            if not _all_finite(ws + p.batch * layer.a_cols, p.batch * layer.n_out):
                return l
        return p.n_layers - 1
    for l in range(p.n_layers - 1, -1, -1):
        layer = &p.layers[l]
        if not _all_finite(grads + layer.w_offset, layer.n_params):
            return l
    return -1


cdef double _train(const Problem *p, const floating *x, const floating *target,
                   const int64_t *labels, floating *params, floating *grads,
                   floating *ws, double lr, bint update, bint count, bint guard,
                   Py_ssize_t *n_correct, int *bad_layer) noexcept nogil:
    """One step.  No update if the loss is not finite; with ``guard``, none
    unless every gradient is finite too (``bad_layer`` then names where)."""
    cdef double value
    _forward(p, x, params, ws, True)
    value = _output_gradient(p, target, labels, ws)
    if count:
        n_correct[0] = _count_correct(p, target, labels, ws)
    if not (value - value == 0):
        # The forward pass overflowed (finite input can do it: 1e38 times a
        # weight of 10).  Its gradient would write NaN into every weight, and
        # checking one number costs nothing, so this holds with or without
        # the guard.
        bad_layer[0] = _first_non_finite_layer(p, value, grads, ws)
        return value
    if not guard:
        _backward_and_update(p, x, params, grads, ws, lr, update)
        return value
    # Guarded: all gradients first, then the check, then one update pass.
    _backward_and_update(p, x, params, grads, ws, lr, False)
    bad_layer[0] = _first_non_finite_layer(p, value, grads, ws)
    if bad_layer[0] < 0 and update:
        _sgd_update(lr, params, grads, p.n_params)
    return value


cdef void _predict(const Problem *p, const floating *x, floating *params,
                   floating *ws, floating *out) noexcept nogil:
    cdef const LayerSpec *last = &p.layers[p.n_layers - 1]
    _forward(p, x, params, ws, False)
    memcpy(out, ws + p.batch * last.a_cols, p.batch * last.n_out * sizeof(floating))


cdef double _sum_of_squares(const floating *x, Py_ssize_t n) noexcept nogil:
    # Eight independent partial sums: without -ffast-math the compiler may
    # not reorder one running sum, but it may vectorise eight of them.  They
    # are kept in the array's precision (a diagnostic needs no more, and
    # float32 sums run at twice the width of double ones).
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t i, n8 = n - n % 8
    for i in range(0, n8, 8):
        s0 += x[i] * x[i]
        s1 += x[i + 1] * x[i + 1]
        s2 += x[i + 2] * x[i + 2]
        s3 += x[i + 3] * x[i + 3]
        s4 += x[i + 4] * x[i + 4]
        s5 += x[i + 5] * x[i + 5]
        s6 += x[i + 6] * x[i + 6]
        s7 += x[i + 7] * x[i + 7]
    for i in range(n8, n):
        s0 += x[i] * x[i]
    return ((<double>s0 + s1) + (<double>s2 + s3)) + ((<double>s4 + s5) + (<double>s6 + s7))


cdef void _layer_stats(const Problem *p, int l, const floating *params,
                       const floating *grads, const floating *ws,
                       double *out) noexcept nogil:
    """For layer l: out = [||dW||, ||W||, share of saturated or dead units].

    The unit statistic is, for sigmoid and tanh, the fraction of the batch's
    outputs within 0.01 of the bounds (where the derivative is nearly 0),
    for ReLU the fraction of units not active for any sample of the batch
    (dead: they pass no gradient back), else NaN.
    """
    cdef Py_ssize_t i, j, count = 0
    cdef const LayerSpec *layer = &p.layers[l]
    cdef Py_ssize_t n_w = <Py_ssize_t>layer.n_in * layer.n_out
    cdef const floating *a = ws + p.batch * layer.a_cols
    cdef floating low, high
    out[0] = sqrt(_sum_of_squares(grads + layer.w_offset, n_w))
    out[1] = sqrt(_sum_of_squares(params + layer.w_offset, n_w))
    if layer.activation == SIGMOID or layer.activation == TANH:
        # Saturated: within 0.01 of the lower bound (0 or -1) or of 1.
        low = <floating>(0.01 if layer.activation == SIGMOID else -0.99)
        high = <floating>0.99
        for i in range(p.batch * layer.n_out):
            count += (a[i] < low) | (a[i] > high)
        out[2] = count / <double>(p.batch * layer.n_out)
    elif layer.activation == RELU:
        for j in range(layer.n_out):
            for i in range(p.batch):
                if a[i * layer.n_out + j] > 0:
                    break
            else:
                count += 1
        out[2] = count / <double>layer.n_out
    else:
        out[2] = NAN


cdef void _accumulate_stats(const Problem *p, bint is_float, const void *params,
                            const void *grads, const void *work, double lr,
                            double *sums, double *counts) noexcept nogil:
    """Add the step's per-layer statistics to the running sums (see
    ``Plan.set_tracking``); ``lr`` < 0 when the plan did not update."""
    cdef double stats[3]
    cdef int l
    for l in range(p.n_layers):
        if is_float:
            _layer_stats(p, l, <const float *>params, <const float *>grads,
                         <const float *>work, stats)
        else:
            _layer_stats(p, l, <const double *>params, <const double *>grads,
                         <const double *>work, stats)
        sums[3 * l] += stats[0]
        counts[3 * l] += 1
        if lr >= 0 and stats[1] > 0:
            sums[3 * l + 1] += lr * stats[0] / stats[1]
            counts[3 * l + 1] += 1
        if stats[2] == stats[2]:         # not NaN
            sums[3 * l + 2] += stats[2]
            counts[3 * l + 2] += 1


cdef void _gather_rows(const char *source, const int64_t *rows, Py_ssize_t n_rows,
                       Py_ssize_t row_bytes, char *dest) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n_rows):
        memcpy(dest + i * row_bytes, source + rows[i] * row_bytes, row_bytes)


cdef inline bint _all_weights(const floating *t, Py_ssize_t n) noexcept nogil:
    # Cross-entropy target rows: finite and >= 0 (NaN fails the comparison).
    cdef Py_ssize_t i
    cdef bint bad = 0
    for i in range(n):
        bad |= not ((t[i] >= 0) & ((t[i] - t[i]) == 0))
    return not bad


cdef inline bint _all_probabilities(const floating *t, Py_ssize_t n) noexcept nogil:
    # Binary cross-entropy targets: in [0, 1] (NaN fails both comparisons).
    cdef Py_ssize_t i
    cdef bint bad = 0
    for i in range(n):
        bad |= not ((t[i] >= 0) & (t[i] <= 1))
    return not bad


# ---------------------------------------------------------------------------
# The plan object
# ---------------------------------------------------------------------------

cdef inline bint _is_exact(object array, int typenum, Py_ssize_t n_rows_or_minus1,
                           int ndim, Py_ssize_t n_cols) noexcept:
    """Whether ``array`` is an ndarray already in the form the kernels take."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_Check(array):
        return False
    arr = <cnp.ndarray>array
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr)
            or not cnp.PyArray_ISALIGNED(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)):
        return False
    if cnp.PyArray_DIM(arr, 0) < 1:
        return False
    if n_rows_or_minus1 >= 0 and cnp.PyArray_DIM(arr, 0) != n_rows_or_minus1:
        return False
    return ndim == 1 or cnp.PyArray_DIM(arr, 1) == n_cols


cdef class Plan:
    """A compiled model: layer table, loss, and per-batch-size workspaces.

    Parameters
    ----------
    layer_table : list of tuple
        Per layer ``(n_in, n_out, activation_code, alpha, has_bias)``, in order,
        laid out in ``params`` as W then b.
    params, grads : ndarray
        The model's flat parameter and gradient buffers (float32 or float64).
    loss_kind : int
        One of the ``LOSS_*`` codes.
    """

    cdef LayerSpec *layers
    cdef int n_layers
    cdef int loss_kind
    cdef int typenum
    cdef cnp.ndarray params
    cdef cnp.ndarray grads
    cdef Py_ssize_t ws_cols, grad0_cols, grad1_cols, n_in, n_out
    cdef dict workspaces
    cdef bint busy
    cdef readonly double last_loss
    cdef readonly Py_ssize_t last_correct
    cdef readonly int last_bad_layer   # after DIVERGED: the layer it was traced to
    cdef Py_ssize_t last_batch        # batch size of the last step (0: none yet)
    cdef Py_ssize_t n_params
    # Gradient tracking (fit(track_gradients=True)): per-layer running sums
    # and counts of ||dW||, the update ratio and the unit statistic, added
    # after every successful step while ``tracking`` is on.
    cdef bint tracking
    cdef cnp.ndarray track_sums
    cdef cnp.ndarray track_counts

    def __cinit__(self, list layer_table, cnp.ndarray params, cnp.ndarray grads,
                  int loss_kind):
        cdef Py_ssize_t offset = 0, cols = 0, max_width = 0
        cdef int l
        self.n_layers = len(layer_table)
        self.layers = <LayerSpec *>PyMem_Malloc(self.n_layers * sizeof(LayerSpec))
        if self.layers == NULL:
            raise MemoryError()
        for l, (n_in, n_out, activation, alpha, has_bias) in enumerate(layer_table):
            spec = &self.layers[l]
            spec.n_in = n_in
            spec.n_out = n_out
            spec.activation = <Activation>activation
            spec.alpha = alpha
            spec.w_offset = offset
            spec.b_offset = offset + n_in * n_out if has_bias else -1
            spec.n_params = n_in * n_out + (n_out if has_bias else 0)
            offset += spec.n_params
            spec.z_cols = cols
            cols += n_out
            if spec.activation == LINEAR:
                spec.a_cols = spec.z_cols      # A is Z: no copy
            else:
                spec.a_cols = cols
                cols += n_out
            max_width = max(max_width, n_in, n_out)
        if offset != params.shape[0] or params.shape[0] != grads.shape[0]:
            raise ValueError("parameter buffers do not match the layer table")
        self.grad0_cols = cols
        self.grad1_cols = cols + max_width
        self.ws_cols = cols + 2 * max_width
        self.params = params
        self.grads = grads
        self.n_params = offset
        self.typenum = cnp.PyArray_TYPE(params)
        self.loss_kind = loss_kind
        self.n_in = self.layers[0].n_in
        self.n_out = self.layers[self.n_layers - 1].n_out
        self.workspaces = {}
        self.busy = False
        self.last_batch = 0
        self.tracking = False
        self.track_sums = np.zeros((self.n_layers, 3))
        self.track_counts = np.zeros((self.n_layers, 3))

    def __dealloc__(self):
        PyMem_Free(self.layers)

    cdef cnp.ndarray _workspace(self, Py_ssize_t batch):
        # Layout, in elements of the model's dtype, each block batch rows:
        # [Z and A of every layer | 2 gradient scratch | gathered X | gathered
        # float targets], then batch int64 gathered labels, 8-byte aligned.
        ws = self.workspaces.get(batch)
        if ws is None:
            if len(self.workspaces) >= 4:     # a fit uses two sizes; predict one more
                self.workspaces.clear()
            ws = np.empty(self._labels_offset(batch) + batch * sizeof(int64_t),
                          dtype=np.uint8)
            self.workspaces[batch] = ws
        return <cnp.ndarray>ws

    cdef Py_ssize_t _itemsize(self):
        return cnp.PyArray_ITEMSIZE(self.params)

    cdef Py_ssize_t _labels_offset(self, Py_ssize_t batch):
        cdef Py_ssize_t float_bytes = (batch * (self.ws_cols + self.n_in + self.n_out)
                                       * self._itemsize())
        return (float_bytes + 7) // 8 * 8

    cdef Problem _problem(self, Py_ssize_t batch, bint has_labels):
        cdef Problem p
        p.layers = self.layers
        p.n_layers = self.n_layers
        p.loss_kind = self.loss_kind
        p.batch = batch
        p.grad0_cols = self.grad0_cols
        p.grad1_cols = self.grad1_cols
        p.n_params = self.n_params
        p.has_labels = has_labels
        return p

    def workspace_bytes(self):
        """Bytes held by the cached workspaces."""
        return sum(ws.nbytes for ws in self.workspaces.values())

    def clear_workspaces(self):
        """Free the cached workspaces (they are re-made on the next call)."""
        self.workspaces.clear()

    def train_step(self, X, y, double lr, bint update, bint count=False, bint guard=False):
        """One step on a batch already in the plan's exact form.

        Returns a :class:`Status`; the loss is then in ``last_loss`` (and the
        number of correct predictions in ``last_correct`` if ``count``).
        Arrays in another form give ``NEEDS_CONVERSION`` and are not touched.
        A non-finite loss, and with ``guard`` a non-finite gradient, gives
        ``DIVERGED`` and leaves the parameters as they were.
        """
        cdef Py_ssize_t batch, n_target
        cdef bint has_labels
        if not _is_exact(X, self.typenum, -1, 2, self.n_in):
            return NEEDS_CONVERSION
        batch = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
        has_labels = self.loss_kind == LOSS_CE and _is_exact(y, cnp.NPY_INT64, batch, 1, 0)
        if not has_labels and not _is_exact(y, self.typenum, batch, 2, self.n_out):
            return NEEDS_CONVERSION
        if self.busy:
            return BUSY
        self.busy = True
        try:
            return self._checked_step(<cnp.ndarray>X, <cnp.ndarray>y, batch,
                                      has_labels, lr, update, count, guard)
        finally:
            self.busy = False

    cdef int _checked_step(self, cnp.ndarray X, cnp.ndarray y, Py_ssize_t batch,
                           bint has_labels, double lr, bint update, bint count,
                           bint guard):
        cdef cnp.ndarray ws = self._workspace(batch)
        cdef Problem p = self._problem(batch, has_labels)
        cdef void *x = cnp.PyArray_DATA(X)
        cdef void *t = cnp.PyArray_DATA(y)
        cdef bint x_ok, t_ok
        with nogil:
            if self.typenum == cnp.NPY_FLOAT32:
                x_ok = _all_finite(<float *>x, batch * self.n_in)
            else:
                x_ok = _all_finite(<double *>x, batch * self.n_in)
            if has_labels:
                t_ok = _labels_in_range(<int64_t *>t, batch, self.n_out)
            elif self.loss_kind == LOSS_BCE:
                if self.typenum == cnp.NPY_FLOAT32:
                    t_ok = _all_probabilities(<float *>t, batch * self.n_out)
                else:
                    t_ok = _all_probabilities(<double *>t, batch * self.n_out)
            elif self.loss_kind == LOSS_CE:
                if self.typenum == cnp.NPY_FLOAT32:
                    t_ok = _all_weights(<float *>t, batch * self.n_out)
                else:
                    t_ok = _all_weights(<double *>t, batch * self.n_out)
            elif self.typenum == cnp.NPY_FLOAT32:
                t_ok = _all_finite(<float *>t, batch * self.n_out)
            else:
                t_ok = _all_finite(<double *>t, batch * self.n_out)
        if not x_ok:
            return NOT_FINITE_INPUT
        if not t_ok:
            return LABEL_OUT_OF_RANGE if has_labels else NOT_FINITE_TARGET
        return self._run(&p, x, t, ws, lr, update, count, guard)

    cdef int _run(self, const Problem *p, const void *x, const void *t,
                  cnp.ndarray ws, double lr, bint update, bint count, bint guard):
        cdef void *params = cnp.PyArray_DATA(self.params)
        cdef void *grads = cnp.PyArray_DATA(self.grads)
        cdef void *work = cnp.PyArray_DATA(ws)
        cdef const int64_t *labels = <const int64_t *>t if p.has_labels else NULL
        cdef Py_ssize_t n_correct = 0
        cdef int bad_layer = -1
        cdef double value
        cdef bint is_float = self.typenum == cnp.NPY_FLOAT32
        cdef bint tracking = self.tracking
        cdef double *sums = <double *>cnp.PyArray_DATA(self.track_sums)
        cdef double *counts = <double *>cnp.PyArray_DATA(self.track_counts)
        with nogil:
            if is_float:
                value = _train(p, <const float *>x, <const float *>t, labels,
                               <float *>params, <float *>grads, <float *>work,
                               lr, update, count, guard, &n_correct, &bad_layer)
            else:
                value = _train(p, <const double *>x, <const double *>t, labels,
                               <double *>params, <double *>grads, <double *>work,
                               lr, update, count, guard, &n_correct, &bad_layer)
            if tracking and bad_layer < 0:
                # In the same GIL-free stretch: tracking adds no call.
                _accumulate_stats(p, is_float, params, grads, work,
                                  lr if update else -1.0, sums, counts)
        self.last_loss = value
        self.last_correct = n_correct
        self.last_batch = p.batch
        self.last_bad_layer = bad_layer
        return DIVERGED if bad_layer >= 0 else OK

    def train_rows(self, cnp.ndarray X, cnp.ndarray y, cnp.ndarray rows,
                   double lr, bint update, bint count=False, bint guard=False):
        """One step on the rows ``rows`` (int64) of a validated data set (X, y).

        The rows are copied into the workspace first, so a shuffled epoch
        needs no fancy indexing and allocates nothing.  X and y must be in the
        plan's exact form and already checked (finite, labels in range).
        """
        cdef Py_ssize_t batch = rows.shape[0]
        cdef bint has_labels = cnp.PyArray_NDIM(y) == 1
        cdef Py_ssize_t itemsize = self._itemsize()
        cdef Py_ssize_t x_row_bytes = self.n_in * itemsize
        cdef Py_ssize_t t_row_bytes = sizeof(int64_t) if has_labels else self.n_out * itemsize
        cdef cnp.ndarray ws
        cdef Problem p = self._problem(batch, has_labels)
        cdef const int64_t *row_ptr = <const int64_t *>cnp.PyArray_DATA(rows)
        cdef char *work
        cdef char *x_rows
        cdef char *t_rows
        if self.busy:
            return BUSY
        self.busy = True
        try:
            ws = self._workspace(batch)
            work = <char *>cnp.PyArray_DATA(ws)
            x_rows = work + batch * self.ws_cols * itemsize
            if has_labels:
                t_rows = work + self._labels_offset(batch)
            else:
                t_rows = x_rows + batch * x_row_bytes
            with nogil:
                _gather_rows(<const char *>cnp.PyArray_DATA(X), row_ptr, batch,
                             x_row_bytes, x_rows)
                _gather_rows(<const char *>cnp.PyArray_DATA(y), row_ptr, batch,
                             t_row_bytes, t_rows)
            return self._run(&p, x_rows, t_rows, ws, lr, update, count, guard)
        finally:
            self.busy = False

    def predict(self, cnp.ndarray X, cnp.ndarray out, Py_ssize_t batch_size):
        """out = the model's output for X, ``batch_size`` rows at a time.

        X (n, n_in) and out (n, n_out) must be in the plan's exact form.
        """
        cdef Py_ssize_t start, batch, n = X.shape[0], itemsize = self._itemsize()
        cdef Problem p
        cdef cnp.ndarray ws
        cdef char *x = <char *>cnp.PyArray_DATA(X)
        cdef char *y = <char *>cnp.PyArray_DATA(out)
        cdef void *params = cnp.PyArray_DATA(self.params)
        cdef void *work
        if self.busy:
            return BUSY
        self.busy = True
        try:
            for start in range(0, n, batch_size):
                batch = min(batch_size, n - start)
                ws = self._workspace(batch)
                work = cnp.PyArray_DATA(ws)
                p = self._problem(batch, False)
                with nogil:
                    if self.typenum == cnp.NPY_FLOAT32:
                        _predict(&p, <const float *>(x + start * self.n_in * itemsize),
                                 <float *>params, <float *>work,
                                 <float *>(y + start * self.n_out * itemsize))
                    else:
                        _predict(&p, <const double *>(x + start * self.n_in * itemsize),
                                 <double *>params, <double *>work,
                                 <double *>(y + start * self.n_out * itemsize))
            return OK
        finally:
            self.busy = False

    def set_tracking(self, bint enabled):
        """Start (with zeroed sums) or stop adding per-layer statistics after
        every step: ||dW||, the update ratio lr ||dW|| / ||W|| when the plan
        applies plain SGD itself, and the saturated or dead unit share."""
        self.tracking = enabled
        self.track_sums[...] = 0
        self.track_counts[...] = 0

    def take_tracking(self):
        """Return copies of the (n_layers, 3) sums and counts; zero them."""
        sums, counts = self.track_sums.copy(), self.track_counts.copy()
        self.track_sums[...] = 0
        self.track_counts[...] = 0
        return sums, counts
