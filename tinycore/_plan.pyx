"""The execution plan: a whole training step in one call, without the GIL.

``Sequential.compile`` builds a :class:`Plan` over the model's flat parameter
and gradient buffers.  For each batch size it meets, the plan allocates one
workspace holding every layer's Z and A and two gradient scratch buffers, and
keeps it; a training step then runs

    forward      Z_l = A_{l-1} W_l + b_l,  A_l = act(Z_l)         for every layer
    loss         value, and dZ_L (fused with softmax / sigmoid where it applies)
    backward     dW_l = A_{l-1}^T dZ_l,  db_l = colsum(dZ_l),
                 dZ_{l-1} = (dZ_l W_l^T) * act'(A_{l-1}),
                 then the optimizer's update of layer l (its W_l is no
                 longer needed): SGD, momentum, Adagrad, RMSProp, Adam

in one nogil function, allocating nothing.  The same kernels as the per-layer
API (``_dense``, ``_activations``, ``_losses``, ``_optim``) do the work.
"""
cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport NAN, sqrt
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from cython cimport floating

import os

import numpy as np

from tinycore._buffers import aligned_empty

from ._activations cimport (
    Activation, LINEAR, RELU, SIGMOID, SOFTMAX, TANH, _activation_backward, _all_finite,
    _bias_activation,
)
from ._blas cimport (
    BLAS_ONE_THREAD_WORK, BLAS_Trans, NoTrans, Trans, _blas_can_hold_one_thread,
    _blas_hold_one_thread, _blas_release_threads, _blas_threads, _column_sums, _gemm,
    _gemm_bias, _gemm_is_small, _gemm_tiles_fuse,
)
from ._losses cimport (
    _absolute_error_sum, _scaled_difference, _scaled_sign_difference,
    _sigmoid_binary_cross_entropy, _softmax_cross_entropy_labels,
    _softmax_cross_entropy_rows, _squared_error_sum,
)
from ._optim cimport RULE_SGD, UpdateRule, _apply_rule, _read_rule, _set_grad_scale

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
    bint split_columns       # large products in two chunks of C's columns ...
    bint column_helper       # ... the second on the helper thread (see _plan_gemm)


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
                   floating *ws, bint training, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Every layer's Z and A for rows r0 <= i < r1 of the batch (x is the whole
    batch); in ``training``, the output layer's A may be left to the loss
    (see :func:`_softmax_left_to_loss`)."""
    cdef int l
    cdef const LayerSpec *layer
    cdef const floating *inp = x + r0 * p.layers[0].n_in
    cdef floating *z
    cdef floating *a
    cdef Py_ssize_t rows = r1 - r0
    for l in range(p.n_layers):
        layer = &p.layers[l]
        z = ws + p.batch * layer.z_cols + r0 * layer.n_out
        a = ws + p.batch * layer.a_cols + r0 * layer.n_out
        # Z = X W + b (Z overwritten, its previous contents never read), the
        # bias added as the product is stored where the small kernel takes it.
        _plan_gemm(p, NoTrans, NoTrans, <int>rows, layer.n_out, layer.n_in, inp,
                   layer.n_in, params + layer.w_offset, layer.n_out,
                   params + layer.b_offset if layer.b_offset >= 0 else NULL,
                   z, layer.n_out)
        if training and l == p.n_layers - 1 and _softmax_left_to_loss(p):
            return
        _bias_activation(layer.activation, layer.alpha, z, NULL, a, rows, layer.n_out)
        inp = a


cdef double _output_gradient(const Problem *p, const floating *target,
                             const int64_t *labels, floating *ws, Py_ssize_t r0,
                             Py_ssize_t r1, floating *dz) noexcept nogil:
    """The loss of rows r0 <= i < r1 (its share of the batch's mean or sum);
    their dL/dZ of the last layer written to ``dz`` (r1 - r0 rows), and the
    last layer's A, if the forward pass left it to the loss."""
    cdef const LayerSpec *last = &p.layers[p.n_layers - 1]
    cdef Py_ssize_t offset = r0 * last.n_out
    cdef const floating *z = ws + p.batch * last.z_cols + offset
    cdef floating *a = ws + p.batch * last.a_cols + offset
    cdef Py_ssize_t rows = r1 - r0
    cdef Py_ssize_t n = rows * last.n_out
    cdef Py_ssize_t n_all = p.batch * last.n_out    # what the mean is over
    cdef double value
    cdef bint softmax_here = _softmax_left_to_loss(p)
    if p.has_labels:
        labels = labels + r0
    else:
        target = target + offset
    if p.loss_kind == LOSS_CE:
        if p.has_labels:
            value = _softmax_cross_entropy_labels(1.0 / p.batch, z, a, softmax_here,
                                                  labels, dz, rows, last.n_out)
        else:
            value = _softmax_cross_entropy_rows(1.0 / p.batch, z, a, softmax_here,
                                                target, dz, rows, last.n_out)
        return value / p.batch
    if p.loss_kind == LOSS_BCE:
        return _sigmoid_binary_cross_entropy(1.0 / n_all, z, a, target, dz, n) / n_all
    # Regression losses: dL/dA first, then through the activation to dL/dZ.
    if p.loss_kind == LOSS_MSE:
        value = _squared_error_sum(a, target, n) / n_all
        _scaled_difference(2.0 / n_all, a, target, dz, n)
    elif p.loss_kind == LOSS_SSE:
        value = 0.5 * _squared_error_sum(a, target, n)
        _scaled_difference(1.0, a, target, dz, n)
    else:
        value = _absolute_error_sum(a, target, n) / n_all
        _scaled_sign_difference(1.0 / n_all, a, target, dz, n)
    _activation_backward(last.activation, last.alpha, a, dz, dz, rows, last.n_out)
    return value


cdef inline floating *_rows_scratch(const Problem *p, floating *ws, Py_ssize_t cols,
                                    Py_ssize_t r0) noexcept nogil:
    # A scratch buffer's part for the rows from r0 on, as wide as the widest
    # layer: each chunk's gradients stay in its own part whatever layer the
    # other chunk is at (a buffer holds matrices of different widths).
    return ws + p.batch * cols + r0 * (p.grad1_cols - p.grad0_cols)


cdef void _backward_and_update(const Problem *p, const floating *x, floating *params,
                               floating *grads, floating *ws, const UpdateRule *rule,
                               Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Backpropagation through rows r0 <= i < r1 of the batch (all of it, or
    one half of a split step), from their dZ of the last layer, which
    :func:`_output_gradient` left in the rows' part of the first scratch
    buffer: into ``grads`` the dW and db of those rows (the sums over them),
    and unless ``rule`` is NULL each layer's update as soon as its gradients
    are final."""
    cdef int l
    cdef const LayerSpec *layer
    cdef const LayerSpec *below
    cdef const floating *inp
    cdef Py_ssize_t rows = r1 - r0
    cdef floating *dz = _rows_scratch(p, ws, p.grad0_cols, r0)
    cdef floating *dx = _rows_scratch(p, ws, p.grad1_cols, r0)
    cdef floating *swap
    for l in range(p.n_layers - 1, -1, -1):
        layer = &p.layers[l]
        inp = (x if l == 0 else ws + p.batch * p.layers[l - 1].a_cols) + r0 * layer.n_in
        # dW (in, out) = inp^T (in, rows) @ dZ (rows, out)
        _plan_gemm(p, Trans, NoTrans, layer.n_in, layer.n_out, <int>rows,
                   inp, layer.n_in, dz, layer.n_out, NULL, grads + layer.w_offset,
                   layer.n_out)
        if layer.b_offset >= 0:
            _column_sums(dz, rows, layer.n_out, grads + layer.b_offset)
        if l > 0:
            # dX (rows, in) = dZ (rows, out) @ W^T, with W before its update;
            # then through the activation of the layer below: its dZ.
            below = &p.layers[l - 1]
            _plan_gemm(p, NoTrans, Trans, <int>rows, layer.n_in, layer.n_out,
                       dz, layer.n_out, params + layer.w_offset, layer.n_out, NULL,
                       dx, layer.n_in)
            _activation_backward(below.activation, below.alpha, inp, dx, dx,
                                 rows, layer.n_in)
        if rule != NULL:
            # This layer's gradients are final and its W is no longer needed.
            _plan_update(p, rule, params, grads, layer.w_offset, layer.n_params)
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


cdef inline bint _update_after_backward(const UpdateRule *rule, bint guard) noexcept nogil:
    # Whether the update waits for every gradient: the guard checks them all
    # first, and clipping needs their global norm.
    return guard or (rule != NULL and rule.clipnorm > 0)


cdef void _update_all(const Problem *p, UpdateRule *rule, floating *params,
                      const floating *grads) noexcept nogil:
    # The update of a step whose gradients are all final (none if rule is
    # NULL): one pass over the parameters, with clipping scaled by their norm.
    if rule != NULL:
        _set_grad_scale(rule, grads, p.n_params)
        _plan_update(p, rule, params, grads, 0, p.n_params)


cdef void _final_update(const Problem *p, double value, floating *params,
                        const floating *grads, const floating *ws, UpdateRule *rule,
                        bint guard, int *bad_layer) noexcept nogil:
    # _update_all, with ``guard`` only if every gradient is finite (bad_layer
    # names where one is not).
    if guard and not _plan_all_finite(p, grads, p.n_params):
        bad_layer[0] = _first_non_finite_layer(p, value, grads, ws)
        return
    _update_all(p, rule, params, grads)


cdef double _train(const Problem *p, const floating *x, const floating *target,
                   const int64_t *labels, floating *params, floating *grads,
                   floating *ws, UpdateRule *rule, bint count, bint guard,
                   Py_ssize_t *n_correct, int *bad_layer) noexcept nogil:
    """One step, updated by ``rule`` (none if NULL).  No update if the loss
    is not finite; with ``guard``, none unless every gradient is finite too
    (``bad_layer`` then names where)."""
    cdef double value
    _forward(p, x, params, ws, True, 0, p.batch)
    value = _output_gradient(p, target, labels, ws, 0, p.batch,
                             _rows_scratch(p, ws, p.grad0_cols, 0))
    if count:
        n_correct[0] = _count_correct(p, target, labels, ws)
    if not (value - value == 0):
        # The forward pass overflowed (finite input can do it: 1e38 times a
        # weight of 10).  Its gradient would write NaN into every weight, and
        # checking one number costs nothing, so this holds with or without
        # the guard.
        bad_layer[0] = _first_non_finite_layer(p, value, grads, ws)
        return value
    if not _update_after_backward(rule, guard):
        _backward_and_update(p, x, params, grads, ws, rule, 0, p.batch)
        return value
    # All gradients first, then the check or the norm, then one update pass.
    _backward_and_update(p, x, params, grads, ws, NULL, 0, p.batch)
    _final_update(p, value, params, grads, ws, rule, guard, bad_layer)
    return value


cdef void _predict(const Problem *p, const floating *x, floating *params,
                   floating *ws, floating *out) noexcept nogil:
    cdef const LayerSpec *last = &p.layers[p.n_layers - 1]
    _forward(p, x, params, ws, False, 0, p.batch)
    memcpy(out, ws + p.batch * last.a_cols, p.batch * last.n_out * sizeof(floating))


# ---------------------------------------------------------------------------
# The helper thread: a small model's step on two cores
# ---------------------------------------------------------------------------
#
# A small network's step (T5: ten 32-wide sigmoid layers, batch 64) is too
# small for BLAS to thread, and on one core it is bound by arithmetic: its
# 2.0 million multiply-adds take 44 us at the 89 GFLOP/s one Zen 4 core
# reaches.  So the plan takes such a step in two halves of the batch's rows
# (_train_split): each half goes through the forward and backward passes
# with its own gradient sums, then the two sums are added and the
# parameters updated, half of them each.  Both phases can give their second
# half to a helper thread.  Splitting the work by layer instead (a barrier
# after each layer, the parameters the same bits as a whole-batch step) was
# tried first: it moved each layer's dZ between the cores and gained a
# tenth at most.  The halves' arithmetic does not depend on which thread
# runs them, so a model trains to the same bits with the helper or without.
# A model of BLAS-sized products but few parameters is taken in the same
# halves in float64, each half's products on one BLAS thread (see
# _split_kind); in float32 (T3) by C's columns now, which took less (below).
# What follows was measured on T3 in halves.
# For T3 the sum of the halves' gradients (47 us of its 822 on the Zen 4)
# was also tried away: the first phase stopping at every layer's dZ of its
# rows, the second computing each dW over the whole batch, split by the
# layer's inputs, and updating it.  That second phase took 380 us where its
# products alone take about 330 (each core reads the other's rows of every
# dZ), and the step 830 us: no gain.  T3's first phase (775 us) is its
# half's products at OpenBLAS's one-thread speed for 64-row products, 83-89
# GFLOP/s (760 us measured apart, operands in cache).
# On a 2-core Xeon (model 167) T3's summing phase costs about 100 us of a
# 550-590 us step (the step without it, results wrong: 430-460 us), though
# its arithmetic takes a few: the second half's gradients cross to the core
# that sums them, and the updated weights back for the next forward pass.
# Two ways round it gained nothing there (builds alternated, 3 runs each):
# the sum and the SGD update in one pass, 576-647 us against 556-603; and
# the first layer by columns (each core keeping half of its columns for Z,
# A, dW and the update over the whole batch, the layers above in halves as
# now, one phase more), 552-597 against 558-590: the update of its columns
# cost about what it did, and the extra phase's wait took the rest.
# Nor is it the gradients' way back: a probe (results wrong) whose second
# core summed its half into its own buffer, so that no line of ``grads``
# crossed to it and back each step, took 532-591 us against 540-570
# (builds alternated, 4 runs each).
#
# The protocol, for one phase (the caller is the only writer of ``posted``):
#   caller: job := the phase; posted := g; run chunk 0; then claim chunk 1
#           (taken: g - 1 -> g): if the helper has not, run it too, else
#           wait until done == g.
#   helper: wait until posted changes; claim chunk 1 of the phase it sees
#           (taken: g - 1 -> g); if that succeeds, run it and set done := g.
# Exactly one of the two claims succeeds, and a helper that comes late (the
# caller ran both chunks and moved on) finds taken past g - 1 and claims
# nothing.  So a helper that is never scheduled costs the caller nothing
# but the claim: the step then runs on one core, never waits on the other.
# The helper spins for a while after each phase (steps come back to back in
# a training loop) and then sleeps on a condition variable.  Whether the
# helper pays is measured as the plan goes (Plan._helper_pays): on a
# machine whose second core is busy, or shared with another machine's, a
# helper that runs at half speed makes the step slower than on one core.
cdef extern from *:
    """
    #include <pthread.h>
    #include <stdint.h>
    #include <time.h>
    #include <sched.h>
    #if defined(__x86_64__) || defined(__i386__)
    #include <immintrin.h>
    #define TC_PAUSE() _mm_pause()
    #elif defined(__aarch64__)
    #define TC_PAUSE() __asm__ __volatile__("yield")
    #else
    #define TC_PAUSE() ((void)0)
    #endif

    /* How long the helper spins for the next phase before it sleeps: the
       Python between two steps of a training loop takes microseconds, and
       a sleeping helper takes tens of them to wake. */
    #define TC_HELPER_SPIN_NS 200000

    typedef void (*tc_chunk_fn)(void *job, int chunk);

    static struct {
        pthread_mutex_t mutex;
        pthread_cond_t wake;
        int state;              /* 0 not started, 1 running, -1 could not start */
        int owned;              /* a caller is running a split step */
        int sleeping;           /* the helper waits on ``wake`` */
        uint64_t nudged;        /* wake-ups without a phase (tc_wake_if_asleep) */
        uint64_t posted, taken, done;
        uint64_t helped;        /* phases whose chunk 1 the helper ran */
        tc_chunk_fn fn;
        void *job;
    } tc_helper = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

    #define TC_LOAD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)
    #define TC_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_SEQ_CST)

    static int tc_claim(uint64_t phase)
    {
        uint64_t expected = phase - 1;
        return __atomic_compare_exchange_n(&tc_helper.taken, &expected, phase, 0,
                                           __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }

    static uint64_t tc_now_ns(void)
    {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
    }

    /* The phase posted after ``seen``, or ``seen`` if none came within
       TC_HELPER_SPIN_NS. */
    static uint64_t tc_spin_for_phase(uint64_t seen)
    {
        uint64_t now, until = tc_now_ns() + TC_HELPER_SPIN_NS;
        int i;
        for (;;) {
            for (i = 0; i < 64; i++) {
                now = TC_LOAD(tc_helper.posted);
                if (now != seen)
                    return now;
                TC_PAUSE();
            }
            if (tc_now_ns() > until)
                return seen;
            /* Let a thread that shares this CPU (the caller itself, if
               the scheduler put both here) run before spinning on. */
            sched_yield();
        }
    }

    /* The next phase posted after ``seen``: spin, then sleep until a phase
       is posted or the helper is nudged awake (then spin again). */
    static uint64_t tc_next_phase(uint64_t seen)
    {
        uint64_t now, nudges;
        for (;;) {
            now = tc_spin_for_phase(seen);
            if (now != seen)
                return now;
            pthread_mutex_lock(&tc_helper.mutex);
            /* sleeping before posted is read again, and the caller writes
               posted before it reads sleeping (both sequentially
               consistent): one of the two sees the other's store, so no
               wake-up is lost.  A nudge is counted under the mutex. */
            TC_STORE(tc_helper.sleeping, 1);
            nudges = tc_helper.nudged;
            while ((now = TC_LOAD(tc_helper.posted)) == seen && tc_helper.nudged == nudges)
                pthread_cond_wait(&tc_helper.wake, &tc_helper.mutex);
            TC_STORE(tc_helper.sleeping, 0);
            pthread_mutex_unlock(&tc_helper.mutex);
            if (now != seen)
                return now;
        }
    }

    static void *tc_helper_main(void *unused)
    {
        uint64_t phase = TC_LOAD(tc_helper.posted);
        (void)unused;
        for (;;) {
            phase = tc_next_phase(phase);
            if (tc_claim(phase)) {
                /* Written before the phase was posted, and not changed
                   until it is done. */
                tc_helper.fn(tc_helper.job, 1);
                __atomic_add_fetch(&tc_helper.helped, 1, __ATOMIC_RELAXED);
                TC_STORE(tc_helper.done, phase);
            }
        }
        return NULL;
    }

    /* In a forked child the helper thread does not exist, and the mutex
       may have been held by it: start again from nothing. */
    static void tc_helper_after_fork(void)
    {
        pthread_mutex_init(&tc_helper.mutex, NULL);
        pthread_cond_init(&tc_helper.wake, NULL);
        tc_helper.state = 0;
        tc_helper.owned = 0;
        tc_helper.sleeping = 0;
        tc_helper.posted = tc_helper.taken = tc_helper.done = tc_helper.helped = 0;
        tc_helper.nudged = 0;
    }

    static void tc_helper_init(void)
    {
        pthread_atfork(NULL, NULL, tc_helper_after_fork);
    }

    /* Take the helper for one step: 0 if another thread has it or it
       cannot be started (the step then runs on one thread). */
    static int tc_split_begin(void)
    {
        int expected = 0;
        pthread_t thread;
        pthread_attr_t attr;
        if (!__atomic_compare_exchange_n(&tc_helper.owned, &expected, 1, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            return 0;
        if (tc_helper.state == 0) {
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            tc_helper.state = pthread_create(&thread, &attr, tc_helper_main, NULL) == 0 ? 1 : -1;
            pthread_attr_destroy(&attr);
        }
        if (tc_helper.state < 0) {
            TC_STORE(tc_helper.owned, 0);
            return 0;
        }
        return 1;
    }

    static unsigned long long tc_phases_posted(void) { return TC_LOAD(tc_helper.posted); }
    static unsigned long long tc_phases_helped(void) { return TC_LOAD(tc_helper.helped); }

    static void tc_split_end(void)
    {
        TC_STORE(tc_helper.owned, 0);
    }

    /* For the caller holding the helper: whether it is asleep, and if so,
       wake it without a phase, to spin for the next one.  Woken by a phase,
       it started that phase's half 23-38 us late (a 2-core Xeon, in 5% of
       T5's phases: after any 0.2 ms taken alone), when the caller's own
       half takes about 28; the caller then waited for the helper's whole half.
       Such a step is better taken alone, and the next with the helper. */
    static int tc_wake_if_asleep(void)
    {
        if (!TC_LOAD(tc_helper.sleeping))
            return 0;
        pthread_mutex_lock(&tc_helper.mutex);
        tc_helper.nudged++;
        pthread_cond_signal(&tc_helper.wake);
        pthread_mutex_unlock(&tc_helper.mutex);
        return 1;
    }

    /* Run fn(job, 0) here and fn(job, 1) on the helper (or here, if the
       helper has not claimed it by the time chunk 0 is done). */
    static void tc_split(tc_chunk_fn fn, void *job)
    {
        uint64_t phase = tc_helper.posted + 1;
        long spins = 0;
        tc_helper.fn = fn;
        tc_helper.job = job;
        TC_STORE(tc_helper.posted, phase);
        if (TC_LOAD(tc_helper.sleeping)) {
            pthread_mutex_lock(&tc_helper.mutex);
            pthread_cond_signal(&tc_helper.wake);
            pthread_mutex_unlock(&tc_helper.mutex);
        }
        fn(job, 0);
        if (tc_claim(phase)) {
            fn(job, 1);
            return;
        }
        while (TC_LOAD(tc_helper.done) != phase) {
            /* The helper is inside chunk 1; if it was descheduled there,
               give it the core rather than spin against it. */
            if (++spins > 20000)
                sched_yield();
            else
                TC_PAUSE();
        }
    }
    """
    ctypedef void (*tc_chunk_fn)(void *job, int chunk) noexcept nogil
    void tc_helper_init()
    bint tc_split_begin() nogil
    void tc_split_end() nogil
    bint tc_wake_if_asleep() nogil
    void tc_split(tc_chunk_fn fn, void *job) nogil
    unsigned long long tc_phases_posted()
    unsigned long long tc_phases_helped()
    unsigned long long tc_now_ns() nogil

tc_helper_init()


def _helper_counts():
    """Test hook: (phases posted, phases whose second chunk the helper thread
    ran) since the process started (or forked)."""
    return int(tc_phases_posted()), int(tc_phases_helped())



# Splitting a step: when, and in what chunks.  Rows of the batch are split
# at a multiple of the GEMM tile's 4 rows (the short tile's: the split, and so
# the gradient sums, must be the same at every SIMD level, and AVX-512's
# 8-row tiles still fill every 8 rows of a chunk), the flat buffers at a
# multiple of 16 elements (64 bytes of float32: the two threads never write
# one cache line).
# Measured on a 2-core Zen 4 EPYC: below the two minimums a split step lost
# to one thread.
cdef enum:
    _ROW_ALIGN = 4
    _PARAM_ALIGN = 16
    _MIN_SPLIT_ROWS = 16            # rows of the batch
    _MIN_SPLIT_WORK = 131072        # multiply-adds of the forward pass
    _PROBE_FIRST = 16               # steps between tries of the other way, at first
    _PROBE_LONGEST = 256            # at most, doubling while the helper holds the choice
    _MAX_BLAS_SPLIT_BYTES = 1048576 # parameters of a split step with BLAS-sized products


cdef enum SplitKind:
    SPLIT_NONE = 0              # the whole batch at once
    SPLIT_HALVES = 1            # two halves; no product reaches the BLAS's threads
    SPLIT_ONE_BLAS_THREAD = 2   # two halves, the BLAS held to one thread meanwhile
    SPLIT_COLUMNS = 3           # the whole batch, large products by C's columns


cdef inline bint _in_halves(SplitKind kind) noexcept nogil:
    # Whether the step's batch goes in two halves.
    return kind == SPLIT_HALVES or kind == SPLIT_ONE_BLAS_THREAD


cdef inline bint _holds_one_blas_thread(SplitKind kind) noexcept nogil:
    # Whether the BLAS is held to one thread for the step.
    return kind == SPLIT_ONE_BLAS_THREAD or kind == SPLIT_COLUMNS


cdef enum:
    PHASE_ROWS = 0          # forward, loss and backward of one chunk of rows
    PHASE_SUM = 1           # the two halves' gradients summed (and the update)


cdef struct SplitJob:
    # One phase of a split step, as both threads read it.
    const Problem *p
    bint is_float
    const void *x
    const void *target
    const int64_t *labels
    void *params
    void *grads
    void *partial           # chunk 1's gradients, n_params (training only)
    void *ws                # the first half's workspace ...
    void *ws1               # ... and the second's (see _train_split)
    void *out               # predict: the outputs' rows (NULL in training)
    bint training
    const UpdateRule *rule  # the update in the summing phase, or NULL
    bint check              # the summing phase checks that the sums are finite
    bint alone              # both chunks on the calling thread
    int phase
    double loss[2]          # each chunk's share of the loss
    bint finite[2]          # each chunk's sums all finite (if ``check``)


cdef inline Py_ssize_t _split_at(Py_ssize_t n, Py_ssize_t align) noexcept nogil:
    # Where the second of two chunks of n items starts: half of n rounded up
    # to a multiple of align, at most n.
    cdef Py_ssize_t half = ((n + 1) // 2 + align - 1) // align * align
    return half if half < n else n


cdef inline void _chunk_range(Py_ssize_t n, Py_ssize_t align, int chunk,
                              Py_ssize_t *start, Py_ssize_t *stop) noexcept nogil:
    cdef Py_ssize_t middle = _split_at(n, align)
    start[0] = 0 if chunk == 0 else middle
    stop[0] = middle if chunk == 0 else n


cdef inline bint _unthreaded(bint is_float, BLAS_Trans trans_a, BLAS_Trans trans_b,
                             Py_ssize_t m, int n, int k) noexcept nogil:
    # Whether this product runs on the calling thread, without the BLAS
    # lock: in the small-product kernel, or in a BLAS call small enough that
    # OpenBLAS keeps it to one thread.
    return m <= 0 or _gemm_is_small(is_float, trans_a, trans_b, <int>m, n, k) or (
        m * n * k <= BLAS_ONE_THREAD_WORK)


cdef SplitKind _split_kind(const Problem *p, bint is_float) noexcept nogil:
    """How a step is taken (see _train_split).

    In halves (SPLIT_HALVES) past the measured crossover in rows and work,
    where no product of either half goes to the BLAS's threads.  This
    depends on the model and the batch alone, not on the threads, so a
    model trains to the same bits with the helper thread or without it.

    A model with products for the BLAS's threads is taken in halves too
    (SPLIT_ONE_BLAS_THREAD) where the BLAS runs on exactly the two threads
    a split uses and the parameters take at most _MAX_BLAS_SPLIT_BYTES;
    each half's products then run on one BLAS thread, with the helper or
    without, so these bits too are the same either way (those of a whole
    batch on two BLAS threads differ from one thread's, so a model of this
    size already trained to other bits on another thread count).  Measured
    on the 2-core Zen 4 EPYC, T3 (784-256-128-10, batch 128, 0.94 MB of
    float32 parameters): the whole batch on two BLAS threads took 0.80-0.93
    ms a step, and 1.6-1.9 ms while the host ran the two vCPUs far apart (a
    cache line's round trip between them 310-340 ns instead of 55-65: the
    BLAS's threads share packed panels, the halves share only the
    parameters and gradients); in halves, 0.80-0.92 ms either way.  With
    2.1 MB of parameters (784-512-256-10) the halves lost 5-10%, with 8.4
    MB (1024-1024-1024-10) up to half: past one core's L2 (1 MB here) each
    half reads the weights from farther away.

    But a float32 model of such products, whatever its size, is taken whole
    where the tiles fuse multiply-adds and the BLAS runs on exactly two
    threads: each product that would go to the BLAS's threads is split by
    C's columns between the two threads instead (SPLIT_COLUMNS, see
    :func:`_plan_gemm`), which took less than the halves for T3 and lets T4
    (25 MB) use both cores without the BLAS's threads.
    """
    cdef int l, chunk
    cdef const LayerSpec *layer
    cdef long long work = 0
    cdef Py_ssize_t start, stop, rows
    cdef bint threaded = False
    cdef Py_ssize_t itemsize = sizeof(float) if is_float else sizeof(double)
    if p.batch < _MIN_SPLIT_ROWS:
        return SPLIT_NONE
    for l in range(p.n_layers):
        layer = &p.layers[l]
        for chunk in range(2):
            _chunk_range(p.batch, _ROW_ALIGN, chunk, &start, &stop)
            rows = stop - start
            if not (_unthreaded(is_float, NoTrans, NoTrans, rows, layer.n_out, layer.n_in)
                    and _unthreaded(is_float, Trans, NoTrans, layer.n_in, layer.n_out,
                                    <int>rows)
                    and (l == 0 or _unthreaded(is_float, NoTrans, Trans, rows,
                                               layer.n_in, layer.n_out))):
                threaded = True
        work += <long long>p.batch * layer.n_in * layer.n_out
    if not threaded:
        return SPLIT_HALVES if work >= _MIN_SPLIT_WORK else SPLIT_NONE
    if not (_blas_threads() == 2 and _blas_can_hold_one_thread()):
        return SPLIT_NONE
    if is_float and _gemm_tiles_fuse():
        return SPLIT_COLUMNS
    if p.n_params * itemsize <= _MAX_BLAS_SPLIT_BYTES:
        return SPLIT_ONE_BLAS_THREAD
    return SPLIT_NONE


# --- large products by C's columns ---------------------------------------------
#
# A float32 model with products for the BLAS's threads (T3, T4) takes its
# batch whole, and each product that the BLAS would split across its two
# threads goes to the tiles instead, in two chunks of C's columns, the
# second on the helper thread: the BLAS is held to one thread meanwhile, so
# its workers do not spin against the helper.
# Every element of C is the same sum in the same order whichever chunk, and
# whichever thread, computes it (_blas's tiles), so the chunks are taken
# alike with the helper or without.  On a 2-core Xeon (family 6, model 167),
# T4's products in step order through SciPy's OpenBLAS 0.3.30 on two
# threads took 33.9-35.5 ms, in chunks of tiles on two threads 31.1-34.3
# (3 processes each): the library's forward products (256x1024x2048,
# 256x2048x2048 NN: 5.0 and 9.3-9.8 ms) lag its dX ones of the same size
# (NT: 7.3-7.6), and the tiles took 3.8-4.2 and 7.4-8.1.  The helper
# also takes half of each large layer's update (T4's weights, 25 MB, are
# read and written once a step): the T4 step took 35.1-36.5 ms against
# 37.3-37.4 with the update on one thread (builds alternated, 4 runs each).
# T4's 25 MB of parameters are past what the halves take; T3 (0.94 MB) was
# taken in halves before, each half's products on one BLAS thread and the
# halves' gradients summed: by columns, T3 took 577-665 us a step against
# 649-707 in halves, with the update split from 16,384 parameters of a
# layer (so both of T3's large layers) 659-738 against 708-819 with it
# split from 262,144 (none of T3's); 6 runs each, builds alternated.
cdef enum:
    _COLUMN_ALIGN = 64      # C's columns are split at a multiple of this
    _MIN_SPLIT_UPDATE = 16384   # parameters of a layer whose update is split


cdef struct ColumnJob:
    # One product C = op(A) @ op(B) (+ bias), in two chunks of C's columns.
    bint is_float
    BLAS_Trans trans_a
    BLAS_Trans trans_b
    int m, n, k
    const void *a
    int lda
    const void *b
    int ldb
    const void *bias        # n values added to every row (the forward product), or NULL
    void *c
    int ldc


cdef inline void _product(BLAS_Trans trans_a, BLAS_Trans trans_b, int m, int n, int k,
                          const floating *a, int lda, const floating *b, int ldb,
                          const floating *bias, floating *c, int ldc) noexcept nogil:
    # C := op(A) @ op(B) (+ bias, which requires A and B untransposed).
    if bias != NULL:
        _gemm_bias(m, n, k, a, lda, b, ldb, bias, c, ldc)
    else:
        _gemm(trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc)


cdef void _column_chunk(const ColumnJob *job, const floating *a, const floating *b,
                        const floating *bias, floating *c, int chunk) noexcept nogil:
    # Columns start <= j < stop of C: those of op(B), and of the bias.
    cdef Py_ssize_t start, stop
    _chunk_range(job.n, _COLUMN_ALIGN, chunk, &start, &stop)
    if stop <= start:
        return
    _product(job.trans_a, job.trans_b, job.m, <int>(stop - start), job.k, a, job.lda,
             b + start * (job.ldb if job.trans_b == Trans else 1), job.ldb,
             bias + start if bias != NULL else NULL, c + start, job.ldc)


cdef void _run_column_chunk(void *job_ptr, int chunk) noexcept nogil:
    cdef const ColumnJob *job = <const ColumnJob *>job_ptr
    if job.is_float:
        _column_chunk(job, <const float *>job.a, <const float *>job.b,
                      <const float *>job.bias, <float *>job.c, chunk)
    else:
        _column_chunk(job, <const double *>job.a, <const double *>job.b,
                      <const double *>job.bias, <double *>job.c, chunk)


cdef inline bint _by_columns(const Problem *p, bint is_float, BLAS_Trans trans_a,
                             BLAS_Trans trans_b, int m, int n, int k) noexcept nogil:
    # Whether this product of a SPLIT_COLUMNS step goes in two chunks: one
    # that the BLAS would take on its threads, each chunk as wide as a tile
    # block at least.
    return (p.split_columns and n >= 2 * _COLUMN_ALIGN
            and not _unthreaded(is_float, trans_a, trans_b, m, n, k))


cdef void _plan_gemm(const Problem *p, BLAS_Trans trans_a, BLAS_Trans trans_b,
                     int m, int n, int k, const floating *a, int lda,
                     const floating *b, int ldb, const floating *bias,
                     floating *c, int ldc) noexcept nogil:
    """C := op(A) @ op(B) (+ bias: n values added to every row, or NULL; with
    a bias A and B are not transposed) through :func:`_gemm` or
    :func:`_gemm_bias`, by C's columns where the step says so."""
    cdef ColumnJob job
    if not _by_columns(p, floating is float, trans_a, trans_b, m, n, k):
        _product(trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc)
        return
    job.is_float = floating is float
    job.trans_a, job.trans_b = trans_a, trans_b
    job.m, job.n, job.k = m, n, k
    job.a, job.lda, job.b, job.ldb = a, lda, b, ldb
    job.bias, job.c, job.ldc = bias, c, ldc
    if p.column_helper:
        tc_split(_run_column_chunk, &job)
    else:
        _run_column_chunk(&job, 0)
        _run_column_chunk(&job, 1)


cdef struct UpdateJob:
    # One layer's update, in two chunks of its parameters.
    bint is_float
    const UpdateRule *rule
    void *params
    const void *grads
    Py_ssize_t start, n


cdef void _run_update_chunk(void *job_ptr, int chunk) noexcept nogil:
    cdef const UpdateJob *job = <const UpdateJob *>job_ptr
    cdef Py_ssize_t start, stop
    _chunk_range(job.n, _PARAM_ALIGN, chunk, &start, &stop)
    if job.is_float:
        _apply_rule(job.rule, <float *>job.params, <const float *>job.grads,
                    job.start + start, stop - start)
    else:
        _apply_rule(job.rule, <double *>job.params, <const double *>job.grads,
                    job.start + start, stop - start)


cdef inline bint _pass_in_two(const Problem *p, Py_ssize_t n) noexcept nogil:
    # Whether a pass over n parameters (an update, a check) goes in two
    # chunks, the second on the helper thread: where the step's products go
    # by columns with it, and the pass is long enough to pay.
    return p.column_helper and n >= _MIN_SPLIT_UPDATE


cdef void _plan_update(const Problem *p, const UpdateRule *rule, floating *params,
                       const floating *grads, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    """The update of elements start <= i < start + n: in two chunks, the
    second on the helper thread, where the step's products go by columns
    with it (each element's update is its own, whichever thread makes it)."""
    cdef UpdateJob job
    if not _pass_in_two(p, n):
        _apply_rule(rule, params, grads, start, n)
        return
    job.is_float = floating is float
    job.rule = rule
    job.params = params
    job.grads = grads
    job.start = start
    job.n = n
    tc_split(_run_update_chunk, &job)


cdef struct CheckJob:
    # Whether n values are all finite, in two chunks.
    bint is_float
    const void *values
    Py_ssize_t n
    bint finite[2]


cdef void _run_check_chunk(void *job_ptr, int chunk) noexcept nogil:
    cdef CheckJob *job = <CheckJob *>job_ptr
    cdef Py_ssize_t start, stop
    _chunk_range(job.n, _PARAM_ALIGN, chunk, &start, &stop)
    if job.is_float:
        job.finite[chunk] = _all_finite(<const float *>job.values + start, stop - start)
    else:
        job.finite[chunk] = _all_finite(<const double *>job.values + start, stop - start)


cdef bint _plan_all_finite(const Problem *p, const floating *values,
                           Py_ssize_t n) noexcept nogil:
    """Whether values[:n] are all finite: in two chunks as :func:`_plan_update`
    splits an update.

    The guard (``fit``'s, or ``check_finite``) checks every gradient so
    before any update, which then goes over all the parameters in the same
    two chunks.  Both on the calling thread, they added 2.6-3.8 ms to a T4
    step and 69-106 us to a T3 step (a 2-core Xeon, medians, 3 runs); in two
    chunks 0.4-1.9 ms and -2-24 us.  (In halves, each thread checks the sums
    it adds: see _sum_and_update.)
    """
    cdef CheckJob job
    if not _pass_in_two(p, n):
        return _all_finite(values, n)
    job.is_float = floating is float
    job.values = values
    job.n = n
    tc_split(_run_check_chunk, &job)
    return job.finite[0] and job.finite[1]


cdef enum HelperTaken:
    HELPER_BUSY = 0         # another thread has it, or it could not be started
    HELPER_TAKEN = 1        # this call's second half may go to it
    HELPER_WOKEN = 2        # it was asleep: woken for the next call, not this one


cdef inline HelperTaken _take_helper(bint awake_only) noexcept nogil:
    # The helper for one call, if it is free (and, if ``awake_only``,
    # awake); the caller releases it with tc_split_end() when TAKEN.  A
    # half of a step with BLAS-sized products takes far longer than a
    # helper takes to wake (tens of us), and a step alone takes longer than
    # the helper spins awake after it: such steps take the helper asleep.
    if not tc_split_begin():
        return HELPER_BUSY
    if awake_only and tc_wake_if_asleep():
        tc_split_end()
        return HELPER_WOKEN
    return HELPER_TAKEN


cdef inline bint _helper_allowed(int n_cpus) noexcept nogil:
    # The second half may go to the helper thread where the process may run
    # on two CPUs and the BLAS on two threads (so set_num_threads(1) and
    # threadpoolctl's limits hold for tinycore's own thread too).
    return n_cpus >= 2 and _blas_threads() >= 2


def _step_gemm_memview(bint by_columns, bint trans_a, bint trans_b,
                       const float[:, ::1] a,   # IN  (m, k), or (k, m) if trans_a
                       const float[:, ::1] b,   # IN  (k, n), or (n, k) if trans_b
                       float[:, ::1] c):        # OUT (m, n)
    """Benchmark hook: ``c = op(a) @ op(b)`` in float32 as a training step
    takes it: with ``by_columns`` (a plan whose ``splits_columns`` is true),
    where the step would, by C's columns on this thread and the helper, the
    BLAS held to one thread; else through ``_gemm``.  Shapes are not checked
    here.
    """
    cdef Problem p          # (only its two column fields are read)
    cdef int m = c.shape[0]
    cdef int n = c.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    cdef BLAS_Trans ta = Trans if trans_a else NoTrans
    cdef BLAS_Trans tb = Trans if trans_b else NoTrans
    cdef bint allowed = by_columns and _helper_allowed(len(os.sched_getaffinity(0)))
    with nogil:
        p.split_columns = by_columns
        p.column_helper = allowed and _take_helper(False) == HELPER_TAKEN
        if by_columns:
            _blas_hold_one_thread()
        _plan_gemm(&p, ta, tb, m, n, k, &a[0, 0], a.shape[1], &b[0, 0], b.shape[1],
                   NULL, &c[0, 0], c.shape[1])
        if by_columns:
            _blas_release_threads()
        if p.column_helper:
            tc_split_end()


cdef bint _sum_and_update(const UpdateRule *rule, bint check, floating *params,
                          floating *grads, const floating *partial, Py_ssize_t start,
                          Py_ssize_t n) noexcept nogil:
    # grads += partial over elements start <= i < start + n, then (unless
    # rule is NULL) the update of those elements.  With ``check``, whether
    # the sums are all finite (read again while in L1), else True.
    cdef Py_ssize_t i
    for i in range(start, start + n):
        grads[i] = grads[i] + partial[i]
    if rule != NULL:
        _apply_rule(rule, params, grads, start, n)
    return _all_finite(grads + start, n) if check else True


cdef void _chunk(SplitJob *job, const floating *x, const floating *target,
                 floating *params, floating *grads, floating *partial, floating *ws,
                 floating *out, int chunk) noexcept nogil:
    cdef const Problem *p = job.p
    cdef const LayerSpec *last = &p.layers[p.n_layers - 1]
    cdef Py_ssize_t start, stop
    cdef double value
    if job.phase == PHASE_SUM:
        _chunk_range(p.n_params, _PARAM_ALIGN, chunk, &start, &stop)
        job.finite[chunk] = _sum_and_update(job.rule, job.check, params, grads, partial,
                                            start, stop - start)
        return
    _chunk_range(p.batch, _ROW_ALIGN, chunk, &start, &stop)
    job.loss[chunk] = 0.0
    if not job.training:
        _forward(p, x, params, ws, False, start, stop)
        memcpy(out + start * last.n_out, ws + p.batch * last.a_cols + start * last.n_out,
               (stop - start) * last.n_out * sizeof(floating))
        return
    _forward(p, x, params, ws, True, start, stop)
    value = _output_gradient(p, target, job.labels, ws, start, stop,
                             _rows_scratch(p, ws, p.grad0_cols, start))
    job.loss[chunk] = value
    if value - value == 0:
        _backward_and_update(p, x, params, grads if chunk == 0 else partial, ws,
                             NULL, start, stop)


cdef void _second_half_back(const Problem *p, floating *ws, const floating *ws1,
                            int first_layer) noexcept nogil:
    # The second half's rows of A, for the layers from first_layer on, from
    # its workspace ws1 to the whole batch's ws.
    cdef Py_ssize_t start, stop, offset
    cdef const LayerSpec *layer
    cdef int l
    _chunk_range(p.batch, _ROW_ALIGN, 1, &start, &stop)
    for l in range(first_layer, p.n_layers):
        layer = &p.layers[l]
        offset = p.batch * layer.a_cols + start * layer.n_out
        memcpy(ws + offset, ws1 + offset, (stop - start) * layer.n_out * sizeof(floating))


cdef void _run_chunk(void *job_ptr, int chunk) noexcept nogil:
    cdef SplitJob *job = <SplitJob *>job_ptr
    cdef void *ws = job.ws1 if chunk == 1 else job.ws
    if job.is_float:
        _chunk(job, <const float *>job.x, <const float *>job.target, <float *>job.params,
               <float *>job.grads, <float *>job.partial, <float *>ws,
               <float *>job.out, chunk)
    else:
        _chunk(job, <const double *>job.x, <const double *>job.target,
               <double *>job.params, <double *>job.grads, <double *>job.partial,
               <double *>ws, <double *>job.out, chunk)


cdef void _run_phase(SplitJob *job) noexcept nogil:
    if job.alone:
        _run_chunk(job, 0)
        _run_chunk(job, 1)
    else:
        tc_split(_run_chunk, job)


cdef void _start_job(SplitJob *job, const Problem *p, const floating *x,
                     floating *params, floating *ws, floating *ws1,
                     bint alone) noexcept nogil:
    job.alone = alone
    job.p = p
    job.is_float = floating is float
    job.x = x
    job.params = params
    job.ws = ws
    job.ws1 = ws1
    job.target = NULL
    job.labels = NULL
    job.grads = NULL
    job.partial = NULL
    job.out = NULL
    job.training = False
    job.rule = NULL
    job.check = False


cdef double _train_split(const Problem *p, const floating *x, const floating *target,
                         const int64_t *labels, floating *params, floating *grads,
                         floating *partial, floating *ws, floating *ws1,
                         UpdateRule *rule, bint count, bint guard, Py_ssize_t *n_correct,
                         int *bad_layer, bint alone) noexcept nogil:
    """:func:`_train` in two halves of the batch, on the helper thread and
    this one (the caller holds the helper), or both here if ``alone``: each
    half's rows go through the forward and backward passes with their own
    gradient sums (``partial`` holds the second half's); then the two are
    added for each half of the parameters, which are updated by ``rule``
    (none if NULL).

    The second half's rows of Z, A and the scratch buffers are in ``ws1``,
    a workspace of the same layout as ``ws`` (its first half's rows unused),
    and come back to ``ws`` only where the whole batch's are read: the last
    layer's A to count the correct predictions, every A to trace a
    non-finite loss.  In one workspace the halves' rows of a block are
    neighbours in one page, though no line is written by both; most likely
    a core's prefetchers, running on past its own rows, took lines of the
    other's.  On a 2-core Xeon (family 6, model 167) each half of a T5 step
    took 29-31 us on its core with the helper against 20-21 alone, 26-27
    with the halves in different workspaces, and 26-29 with one workspace
    starting a page.  A T5 step, one workspace against two, alternated in
    one process: 37.0-38.1 against 35.2-36.2 us (10 rounds, each round's
    difference 1.5-2.7 us).
    """
    cdef SplitJob job
    cdef double value
    _start_job(&job, p, x, params, ws, ws1, alone)
    job.target = target
    job.labels = labels
    job.grads = grads
    job.partial = partial
    job.training = True
    job.rule = NULL if _update_after_backward(rule, guard) else rule
    job.check = guard
    job.phase = PHASE_ROWS
    _run_phase(&job)
    value = job.loss[0] + job.loss[1]
    if count:
        _second_half_back(p, ws, ws1, p.n_layers - 1)
        n_correct[0] = _count_correct(p, target, labels, ws)
    if not (value - value == 0):
        _second_half_back(p, ws, ws1, 0)
        bad_layer[0] = _first_non_finite_layer(p, value, grads, ws)
        return value
    job.phase = PHASE_SUM
    _run_phase(&job)
    if guard and not (job.finite[0] and job.finite[1]):
        bad_layer[0] = _first_non_finite_layer(p, value, grads, ws)
    elif _update_after_backward(rule, guard):
        _update_all(p, rule, params, grads)
    return value


cdef void _predict_split(const Problem *p, const floating *x, floating *params,
                         floating *ws, floating *ws1, floating *out,
                         bint alone) noexcept nogil:
    """:func:`_predict` in the two halves of the batch that a training step
    takes (see :func:`_split_kind`), on the helper thread and this one (the
    caller holds the helper), or both here if ``alone``; the second half in
    ``ws1`` (see :func:`_train_split`)."""
    cdef SplitJob job
    _start_job(&job, p, x, params, ws, ws1, alone)
    job.out = out
    job.phase = PHASE_ROWS
    _run_phase(&job)


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
    ``Plan.set_tracking``); ``lr`` < 0 unless the plan applied plain SGD."""
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
    cdef dict half_workspaces         # the second half's, per batch size (see _train_split)
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
    cdef int n_cpus                   # CPUs the process may run on, at compile()
    cdef cnp.ndarray partial_grads    # a split step's second half of the gradients
    cdef double half_cost[2]          # see _helper_pays
    cdef Py_ssize_t tuned_batch
    cdef int probe_in                 # steps to the next try of the other way
    cdef int probe_every              # steps between the tries, now
    cdef bint chose_helper            # which way the running means favoured last
    cdef bint retry_helper            # the helper was asleep: try it next step
    cdef bint helper_warm             # a step of this plan has had the helper

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
        self.half_workspaces = {}
        self.busy = False
        self.last_batch = 0
        self.tracking = False
        self.track_sums = np.zeros((self.n_layers, 3))
        self.track_counts = np.zeros((self.n_layers, 3))
        self.n_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self.partial_grads = None
        self.half_cost[0] = self.half_cost[1] = 0.0
        self.tuned_batch = 0
        self.probe_in = 0
        self.probe_every = _PROBE_FIRST
        self.chose_helper = True
        self.retry_helper = False
        self.helper_warm = False

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
            ws = aligned_empty(self._labels_offset(batch) + batch * sizeof(int64_t),
                               np.uint8)
            self.workspaces[batch] = ws
        return <cnp.ndarray>ws

    cdef void *_half_workspace(self, Py_ssize_t batch) except NULL:
        # The workspace of a split step's second half: Z, A and the scratch
        # buffers in _workspace's layout, rows of the first half unused.
        ws = self.half_workspaces.get(batch)
        if ws is None:
            if len(self.half_workspaces) >= 4:
                self.half_workspaces.clear()
            ws = aligned_empty(batch * self.ws_cols * self._itemsize(), np.uint8)
            self.half_workspaces[batch] = ws
        return cnp.PyArray_DATA(<cnp.ndarray>ws)

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
        p.split_columns = p.column_helper = False
        return p

    def splits(self, Py_ssize_t batch):
        """Whether a step on ``batch`` rows is taken in two halves of the batch
        (on this thread, or this one and the helper thread)."""
        cdef Problem p = self._problem(batch, False)
        cdef SplitKind kind = _split_kind(&p, self.typenum == cnp.NPY_FLOAT32)
        return _in_halves(kind)

    def splits_columns(self, Py_ssize_t batch):
        """Whether a step on ``batch`` rows takes the batch whole, with its
        large products in two chunks of C's columns (on this thread, or this
        one and the helper thread)."""
        cdef Problem p = self._problem(batch, False)
        return _split_kind(&p, self.typenum == cnp.NPY_FLOAT32) == SPLIT_COLUMNS

    def helper_allowed(self):
        """Whether the second half of a step may go to the helper thread now."""
        return bool(_helper_allowed(self.n_cpus))

    def helper_costs(self):
        """(ns per step with both halves here, ns with the helper), the running
        means the plan chooses by; 0 where not measured yet."""
        return self.half_cost[0], self.half_cost[1]

    cdef bint _helper_pays(self, Py_ssize_t batch):
        """Whether to give this step's second half to the helper thread.

        Measured as the plan goes (running means of both ways, for one batch
        size): on a machine whose second core is busy or shared the helper
        can cost more than it saves.  Each way is tried first (the helper's
        first step for this plan is not counted: see _run), then the one
        not in use every _PROBE_FIRST steps; while the helper holds the
        choice, every twice as many steps each time (up to _PROBE_LONGEST).
        A step alone amid the helper's costs 26 us more than T5's 41 on a
        2-core Zen 4 (the second half's data is in the other core's cache),
        and its running mean is updated at every step the helper runs, so a
        slower helper is seen at once.  Going alone, the tries stay
        _PROBE_FIRST steps apart: the helper sleeps then, and its first
        steps after a wake are slow, so the mean that would bring it back
        needs the tries.
        """
        cdef bint helper_faster
        if batch != self.tuned_batch:
            self.tuned_batch = batch
            self.half_cost[0] = self.half_cost[1] = 0.0
            self.probe_in = self.probe_every = _PROBE_FIRST
            self.chose_helper = True
        if self.retry_helper:
            # The last step chose the helper but found it asleep and ran
            # alone (the helper is awake now): this one takes it.
            self.retry_helper = False
            return True
        if self.half_cost[1] == 0:
            return True
        if self.half_cost[0] == 0:
            return False
        helper_faster = self.half_cost[1] < self.half_cost[0]
        if helper_faster != self.chose_helper:
            self.chose_helper = helper_faster
            self.probe_in = self.probe_every = _PROBE_FIRST
        self.probe_in -= 1
        if self.probe_in <= 0:
            if helper_faster:
                self.probe_every = min(2 * self.probe_every, _PROBE_LONGEST)
            self.probe_in = self.probe_every
            return not helper_faster
        return helper_faster

    def _choose_helper(self, Py_ssize_t batch, double alone_ns, double helper_ns):
        """Test hook: with the running means set to ``alone_ns`` and
        ``helper_ns`` (0: not measured), whether the next step on ``batch``
        rows would take the helper thread."""
        if batch != self.tuned_batch:
            self._helper_pays(batch)        # (a new batch size: the means reset)
        self.half_cost[0] = alone_ns
        self.half_cost[1] = helper_ns
        return bool(self._helper_pays(batch))

    cdef void _record_half_cost(self, bint helper, double ns):
        cdef double mean = self.half_cost[1 if helper else 0]
        self.half_cost[1 if helper else 0] = ns if mean == 0 else mean + 0.25 * (ns - mean)

    def workspace_bytes(self):
        """Bytes held by the cached workspaces."""
        return sum(ws.nbytes for cache in (self.workspaces, self.half_workspaces)
                   for ws in cache.values())

    def clear_workspaces(self):
        """Free the cached workspaces (they are re-made on the next call)."""
        self.workspaces.clear()
        self.half_workspaces.clear()

    def train_step(self, X, y, double lr, bint update, bint count=False, bint guard=False,
                   tuple rule=None):
        """One step on a batch already in the plan's exact form.

        With ``update``, the step ends with the optimizer's update, applied
        here: ``rule`` (what ``Optimizer._plan_rule()`` returns), or plain
        SGD at ``lr`` if ``rule`` is None.  Without, the gradients are left
        for the optimizer's own step().

        Returns a :class:`Status`; the loss is then in ``last_loss`` (and the
        number of correct predictions in ``last_correct`` if ``count``).
        Arrays in another form give ``NEEDS_CONVERSION`` and are not touched.
        A non-finite loss, and with ``guard`` a non-finite gradient, gives
        ``DIVERGED`` and leaves the parameters (and the optimizer's state)
        as they were.
        """
        cdef UpdateRule update_rule
        cdef Py_ssize_t batch, n_target
        cdef bint has_labels
        if not _is_exact(X, self.typenum, -1, 2, self.n_in):
            return NEEDS_CONVERSION
        batch = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
        has_labels = self.loss_kind == LOSS_CE and _is_exact(y, cnp.NPY_INT64, batch, 1, 0)
        if not has_labels and not _is_exact(y, self.typenum, batch, 2, self.n_out):
            return NEEDS_CONVERSION
        self._rule(lr, update, rule, &update_rule)
        if self.busy:
            return BUSY
        self.busy = True
        try:
            return self._checked_step(<cnp.ndarray>X, <cnp.ndarray>y, batch, has_labels,
                                      &update_rule if update else NULL, count, guard)
        finally:
            self.busy = False

    cdef int _rule(self, double lr, bint update, tuple rule, UpdateRule *out) except -1:
        # The step's update rule: plain SGD at lr unless ``rule`` says another.
        if not update:
            return 0
        if rule is not None:
            return _read_rule(rule, self.typenum, self.n_params, out)
        out.kind = RULE_SGD
        out.lr = lr
        out.momentum = out.weight_decay = out.clipnorm = 0.0
        out.nesterov = False
        out.grad_scale = 1.0
        out.state0 = out.state1 = NULL
        return 0

    cdef int _checked_step(self, cnp.ndarray X, cnp.ndarray y, Py_ssize_t batch,
                           bint has_labels, UpdateRule *rule, bint count, bint guard):
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
        return self._run(&p, x, t, ws, rule, count, guard)

    cdef int _run(self, const Problem *p, const void *x, const void *t,
                  cnp.ndarray ws, UpdateRule *rule, bint count, bint guard):
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
        cdef SplitKind kind = _split_kind(p, is_float)
        cdef bint halves = _in_halves(kind)
        cdef bint one_blas_thread = _holds_one_blas_thread(kind)
        cdef bint allowed = kind != SPLIT_NONE and _helper_allowed(self.n_cpus)
        cdef bint helper = allowed and self._helper_pays(p.batch)
        cdef Problem whole = p[0]        # the batch at once (by columns, maybe)
        cdef void *partial = NULL
        cdef void *work1 = NULL          # the second half's workspace
        cdef unsigned long long started = 0
        cdef HelperTaken taken = HELPER_BUSY
        # The update ratio lr ||dW|| / ||W|| of the tracked statistics holds
        # for plain SGD only (-1: not measured here).
        cdef double sgd_lr = -1.0
        if (rule != NULL and rule.kind == RULE_SGD and rule.momentum == 0.0
                and rule.weight_decay == 0.0 and rule.clipnorm == 0.0):
            sgd_lr = rule.lr
        if halves:
            if self.partial_grads is None:
                # Once per plan: the second half's gradient sums.
                self.partial_grads = aligned_empty(self.grads.size, self.grads.dtype)
            partial = cnp.PyArray_DATA(self.partial_grads)
            work1 = self._half_workspace(p.batch)
        with nogil:
            if helper:
                taken = _take_helper(not one_blas_thread)
                helper = taken == HELPER_TAKEN
            started = tc_now_ns()
            whole.split_columns = kind == SPLIT_COLUMNS
            whole.column_helper = whole.split_columns and helper
            if one_blas_thread:
                _blas_hold_one_thread()
            if halves and is_float:
                value = _train_split(p, <const float *>x, <const float *>t, labels,
                                     <float *>params, <float *>grads, <float *>partial,
                                     <float *>work, <float *>work1, rule, count, guard,
                                     &n_correct, &bad_layer, not helper)
            elif halves:
                value = _train_split(p, <const double *>x, <const double *>t, labels,
                                     <double *>params, <double *>grads, <double *>partial,
                                     <double *>work, <double *>work1, rule, count, guard,
                                     &n_correct, &bad_layer, not helper)
            elif is_float:
                value = _train(&whole, <const float *>x, <const float *>t, labels,
                               <float *>params, <float *>grads, <float *>work,
                               rule, count, guard, &n_correct, &bad_layer)
            else:
                value = _train(&whole, <const double *>x, <const double *>t, labels,
                               <double *>params, <double *>grads, <double *>work,
                               rule, count, guard, &n_correct, &bad_layer)
            if one_blas_thread:
                _blas_release_threads()
            if helper:
                tc_split_end()
            started = tc_now_ns() - started
            if tracking and bad_layer < 0:
                # In the same GIL-free stretch: tracking adds no call.
                if halves and is_float:
                    _second_half_back(p, <float *>work, <const float *>work1, 0)
                elif halves:
                    _second_half_back(p, <double *>work, <const double *>work1, 0)
                _accumulate_stats(p, is_float, params, grads, work, sgd_lr, sums, counts)
        if allowed and helper and not self.helper_warm:
            # Not a sample: the plan's first step with the helper first
            # touches the second half's gradients, and may start the thread
            # (and its BLAS buffers).  T3's took 3.0-3.7 ms against 0.9 on a
            # 2-core Zen 4; as the helper's first mean, it sent the steps
            # alone (1.6 ms) for the 100-150 ms the tries took to bring it
            # back down.
            self.helper_warm = True
        elif allowed:
            self._record_half_cost(helper, <double>started)
        self.retry_helper = taken == HELPER_WOKEN
        self.last_loss = value
        self.last_correct = n_correct
        self.last_batch = p.batch
        self.last_bad_layer = bad_layer
        return DIVERGED if bad_layer >= 0 else OK

    def train_rows(self, cnp.ndarray X, cnp.ndarray y, cnp.ndarray rows,
                   double lr, bint update, bint count=False, bint guard=False,
                   tuple rule=None):
        """One step on the rows ``rows`` (int64) of a validated data set (X, y),
        updated as :meth:`train_step` says.

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
        cdef UpdateRule update_rule
        self._rule(lr, update, rule, &update_rule)
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
            return self._run(&p, x_rows, t_rows, ws, &update_rule if update else NULL,
                             count, guard)
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
        cdef void *work1 = NULL
        cdef bint is_float = self.typenum == cnp.NPY_FLOAT32
        cdef SplitKind kind
        cdef bint halves, one_blas_thread, helper
        if self.busy:
            return BUSY
        self.busy = True
        try:
            for start in range(0, n, batch_size):
                batch = min(batch_size, n - start)
                ws = self._workspace(batch)
                work = cnp.PyArray_DATA(ws)
                p = self._problem(batch, False)
                # In halves wherever a training step of this batch is, the
                # helper or not: a BLAS product's rows can round differently
                # with the number of rows in the call (OpenBLAS's Haswell
                # kernels, past the small-product kernel), so predictions
                # would otherwise change with the threads.
                kind = _split_kind(&p, is_float)
                halves = _in_halves(kind)
                if halves:
                    work1 = self._half_workspace(batch)
                with nogil:
                    one_blas_thread = _holds_one_blas_thread(kind)
                    helper = (kind != SPLIT_NONE and _helper_allowed(self.n_cpus)
                              and self.half_cost[1] <= self.half_cost[0]
                              and _take_helper(not one_blas_thread) == HELPER_TAKEN)
                    p.split_columns = kind == SPLIT_COLUMNS
                    p.column_helper = p.split_columns and helper
                    if one_blas_thread:
                        _blas_hold_one_thread()
                    if halves and is_float:
                        _predict_split(&p, <const float *>(x + start * self.n_in * itemsize),
                                       <float *>params, <float *>work, <float *>work1,
                                       <float *>(y + start * self.n_out * itemsize), not helper)
                    elif halves:
                        _predict_split(&p, <const double *>(x + start * self.n_in * itemsize),
                                       <double *>params, <double *>work, <double *>work1,
                                       <double *>(y + start * self.n_out * itemsize), not helper)
                    elif is_float:
                        _predict(&p, <const float *>(x + start * self.n_in * itemsize),
                                 <float *>params, <float *>work,
                                 <float *>(y + start * self.n_out * itemsize))
                    else:
                        _predict(&p, <const double *>(x + start * self.n_in * itemsize),
                                 <double *>params, <double *>work,
                                 <double *>(y + start * self.n_out * itemsize))
                    if one_blas_thread:
                        _blas_release_threads()
                    if helper:
                        tc_split_end()
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
