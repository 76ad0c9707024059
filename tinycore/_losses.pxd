# Pointer-level loss kernels shared with the fused training plan.
# Arrays are contiguous; n counts all elements, n_rows x n_cols a matrix.
# The softmax + cross-entropy kernels compute prob = softmax(logits) themselves
# with prob_from_logits (else prob is the softmax, read only).
from libc.stdint cimport int64_t
from cython cimport floating

cdef double _squared_error_sum(const floating *pred, const floating *target,
                               Py_ssize_t n) noexcept nogil
cdef double _absolute_error_sum(const floating *pred, const floating *target,
                                Py_ssize_t n) noexcept nogil
cdef void _scaled_difference(double scale, const floating *pred,
                             const floating *target, floating *out,
                             Py_ssize_t n) noexcept nogil
cdef void _scaled_sign_difference(double scale, const floating *pred,
                                  const floating *target, floating *out,
                                  Py_ssize_t n) noexcept nogil
cdef double _softmax_cross_entropy_labels(
    double scale, const floating *logits, floating *prob, bint prob_from_logits,
    const int64_t *labels, floating *dz,
    Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil
cdef double _softmax_cross_entropy_rows(
    double scale, const floating *logits, floating *prob, bint prob_from_logits,
    const floating *target, floating *dz,
    Py_ssize_t n_rows, Py_ssize_t n_cols) noexcept nogil
cdef double _sigmoid_binary_cross_entropy(
    double scale, const floating *logits, const floating *prob,
    const floating *target, floating *dz, Py_ssize_t n) noexcept nogil
