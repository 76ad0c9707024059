"""Hypothesis strategies for fuzzing tinycore's public entry points (thinc's
``strategies.py``, blis's ``blis_tests_common.py``): shapes, dtypes, memory
layouts, values and wrong Python types, in one module.

Every array strategy returns what a user could pass; the tests decide with
:func:`expected_real_array` what tinycore must make of it (a result, or a
ValueError/TypeError).  Arrays are built with NumPy warnings silenced: the
test suite turns warnings into errors, and an overflowing cast while
*building* a fuzz case is not what is under test.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

#: BLAS takes dimensions as 32-bit signed integers (tinycore's limit too).
BLAS_INT_MAX = 2**31 - 1

# ---------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------

#: Real dtypes tinycore converts: bool, every integer, every float.
REAL_DTYPES = [np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.longdouble,
)]
FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
#: Dtypes that must be refused with a TypeError.
BAD_DTYPES = [
    np.dtype(np.complex64), np.dtype(np.complex128), np.dtype(object),
    np.dtype([("a", "<f8"), ("b", "<i4")]), np.dtype("U5"), np.dtype("S5"),
    np.dtype("datetime64[s]"), np.dtype("timedelta64[ms]"), np.dtype("V8"),
]


def real_dtypes() -> st.SearchStrategy[np.dtype]:
    return st.sampled_from(REAL_DTYPES)


def bad_dtypes() -> st.SearchStrategy[np.dtype]:
    return st.sampled_from(BAD_DTYPES)


def any_dtypes() -> st.SearchStrategy[np.dtype]:
    return st.sampled_from(REAL_DTYPES + BAD_DTYPES)


def model_dtypes() -> st.SearchStrategy[str]:
    return st.sampled_from(["float32", "float64"])


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------

#: Finite values that stress the kernels: zeros, subnormals, the float32 edge.
EDGE_FINITE = [0.0, -0.0, 5e-324, -5e-324, 1.4e-45, 1e-300, 1e-38, 1.0, -1.0,
               1e4, -1e4, 1e38, -1e38, 3.4e38]
#: Values that are not finite in float32, or not at all.
EDGE_NON_FINITE = [np.nan, np.inf, -np.inf, 1e39, -1e300, 1.8e308]


def moderate_floats() -> st.SearchStrategy[float]:
    """Finite values where a network's output stays finite."""
    return st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False, width=32)


def edge_floats() -> st.SearchStrategy[float]:
    """Anything: edge values, NaN, infinities, subnormals."""
    return st.one_of(st.sampled_from(EDGE_FINITE + EDGE_NON_FINITE),
                     st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True))


# ---------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------

def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 0,
           max_side: int = 6) -> st.SearchStrategy[tuple]:
    """Small shapes of any rank, 0-sized sides included."""
    return st.lists(st.integers(min_side, max_side), min_size=min_dims,
                    max_size=max_dims).map(tuple)


def batch_shapes(n_features: int, max_batch: int = 9) -> st.SearchStrategy[tuple]:
    """(batch, n_features) with batch >= 1: the valid shape of a model input."""
    return st.integers(1, max_batch).map(lambda n: (n, n_features))


def wrong_shapes(n_features: int) -> st.SearchStrategy[tuple]:
    """Shapes a model taking ``n_features`` inputs must refuse: wrong rank,
    0-sized, wrong feature count."""
    return st.one_of(
        st.just(()),                                         # 0-d
        st.integers(0, 6).map(lambda n: (n,)),               # 1-D
        st.just((0, n_features)),                            # empty batch
        st.integers(1, 5).map(lambda n: (n, 0)),             # no features
        st.tuples(st.integers(1, 5), st.integers(1, 8)
                  .filter(lambda k: k != n_features)),       # wrong feature count
        st.tuples(st.integers(1, 3), st.just(n_features), st.integers(1, 3)),   # 3-D
        st.tuples(st.just(1), st.just(1), st.just(1), st.just(n_features)),     # 4-D
    )


#: Shapes with a side beyond BLAS's int32: must be refused before any copy.
HUGE_SHAPES = [(2**31, 3), (3, 2**31), (2**40, 2), (1, 2**50), (2**31 + 7, 1)]


def huge_arrays(n_features: int) -> st.SearchStrategy[np.ndarray]:
    """Arrays of enormous shape that use one element of memory (zero strides,
    read-only).  Converting one would need terabytes, so tinycore must refuse
    the shape first."""
    def build(shape):
        if shape[1] == 3:
            shape = (shape[0], n_features)
        return np.broadcast_to(np.zeros(1), shape)
    return st.sampled_from(HUGE_SHAPES).map(build)


def huge_ints() -> st.SearchStrategy[int]:
    """Integer arguments far beyond any buffer: int32 edge, int64 edge, bigger."""
    return st.sampled_from([2**31, 2**31 + 1, 2**32, 2**53, 2**63 - 1, 2**63, 2**64, 10**30])


# ---------------------------------------------------------------------------
# layouts
# ---------------------------------------------------------------------------

LAYOUTS = ["C", "F", "reversed_rows", "reversed_cols", "readonly", "strided",
           "unaligned", "byteswapped", "readonly_F", "transposed_copy"]


def layouts() -> st.SearchStrategy[str]:
    return st.sampled_from(LAYOUTS)


def _unaligned_copy(array: np.ndarray) -> np.ndarray:
    """A view of ``array``'s values at an odd byte offset of a byte buffer."""
    size = array.dtype.itemsize
    raw = np.zeros(array.nbytes + size + 1, dtype=np.uint8)
    view = np.frombuffer(raw.data, dtype=array.dtype, count=array.size,
                         offset=1).reshape(array.shape)
    view[...] = array
    return view


def with_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The same values as ``array`` (C-ordered), laid out as ``layout`` says."""
    array = np.ascontiguousarray(array)
    if array.ndim == 0 or array.size == 0:
        return array.copy()
    if layout == "C":
        return array.copy()
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "reversed_rows":             # negative stride on axis 0
        return np.ascontiguousarray(array[::-1])[::-1]
    if layout == "reversed_cols":             # negative stride on the last axis
        return np.ascontiguousarray(array[..., ::-1])[..., ::-1]
    if layout in ("readonly", "readonly_F"):
        out = np.asfortranarray(array) if layout == "readonly_F" else array.copy()
        out.flags.writeable = False
        return out
    if layout == "strided":                   # every other element of a bigger array
        big = np.zeros(tuple(2 * n for n in array.shape), dtype=array.dtype)
        view = big[tuple(slice(None, None, 2) for _ in array.shape)]
        view[...] = array
        return view
    if layout == "unaligned":
        if array.dtype.itemsize == 1 or array.dtype.kind in "OUSV":
            return array.copy()
        return _unaligned_copy(array)
    if layout == "byteswapped":               # non-native byte order, same values
        if array.dtype.itemsize == 1 or array.dtype.kind in "OUSV":
            return array.copy()
        return array.astype(array.dtype.newbyteorder())
    if layout == "transposed_copy":           # the transpose of a C array: F-ordered
        return np.ascontiguousarray(array.T).T
    raise ValueError(layout)


# ---------------------------------------------------------------------------
# arrays
# ---------------------------------------------------------------------------

def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float64 ``values`` in ``dtype`` (quietly: overflow and NaN casts allowed)."""
    with np.errstate(all="ignore"):
        if dtype.kind == "b":
            return values != 0
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            clean = np.nan_to_num(values, nan=0.0, posinf=info.max, neginf=info.min)
            return np.clip(clean, info.min, info.max).astype(dtype)
        if dtype.kind == "c":
            return (values + 1j * values).astype(dtype)
        if dtype.kind == "O":
            return np.array(values.tolist() if values.ndim else values.item(), dtype=object)
        if dtype.kind in "US":
            return values.astype(dtype)
        if dtype.kind == "M":
            return np.nan_to_num(values, nan=0, posinf=0, neginf=0).astype("int64").astype(dtype)
        if dtype.kind == "m":
            return np.nan_to_num(values, nan=0, posinf=0, neginf=0).astype("int64").astype(dtype)
        if dtype.kind == "V":
            out = np.zeros(values.shape, dtype=dtype)
            if dtype.names:
                out[dtype.names[0]] = values
            return out
        return values.astype(dtype)


@st.composite
def float_values(draw, shape: tuple, elements=None) -> np.ndarray:
    """A float64 array of ``shape`` filled from ``elements`` (moderate floats)."""
    elements = moderate_floats() if elements is None else elements
    size = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(elements, min_size=size, max_size=size))
    return np.array(values, dtype=np.float64).reshape(shape)


@st.composite
def arrays(draw, shape=None, dtype=None, layout=None, elements=None) -> np.ndarray:
    """An array of the given (or drawn) shape, dtype, layout and values."""
    shape = draw(shapes()) if shape is None else shape
    shape = draw(shape) if isinstance(shape, st.SearchStrategy) else shape
    dtype = draw(any_dtypes()) if dtype is None else dtype
    dtype = draw(dtype) if isinstance(dtype, st.SearchStrategy) else np.dtype(dtype)
    layout = draw(layouts()) if layout is None else layout
    values = draw(float_values(shape, elements))
    return with_layout(_cast(values, dtype), layout)


@st.composite
def valid_batches(draw, n_features: int, max_batch: int = 9, elements=None) -> np.ndarray:
    """A batch every model with ``n_features`` inputs must accept: real dtype,
    any layout, moderate finite values."""
    shape = draw(batch_shapes(n_features, max_batch))
    dtype = draw(real_dtypes())
    layout = draw(layouts())
    return draw(arrays(shape=shape, dtype=dtype, layout=layout, elements=elements))


# ---------------------------------------------------------------------------
# wrong Python types
# ---------------------------------------------------------------------------

class _Opaque:
    """An object that is not array-like at all."""

    def __repr__(self):
        return "<opaque>"


def wrong_python_objects(n_features: int = 3) -> st.SearchStrategy:
    """Things that are not an array of numbers: None, str, bytes, dict, set,
    lists of strings, ragged lists, nested lists of the wrong depth, objects."""
    row = [0.5] * n_features
    return st.sampled_from([
        None, "abc", "", b"\x00\x01", {"a": 1}, {}, {1, 2}, _Opaque(), object(),
        [["a"] * n_features], [[None] * n_features],
        [row, row[:-1] or [1.0, 2.0]],            # ragged
        [row, [row]],                             # ragged depth
        [[row]],                                  # 3-D list
        [],                                       # empty
        [[]],                                     # (1, 0)
        row,                                      # 1-D list
        1.5, 7, True,                             # scalars
        [[1 + 2j] * n_features],                  # complex
        [[object()] * n_features],
    ])


def wrong_scalars() -> st.SearchStrategy:
    """Bad values for numeric hyper-parameters (each one must be refused)."""
    return st.sampled_from([
        None, "0.1", [0.1], {"lr": 0.1}, np.array([0.1, 0.2]), 1 + 1j,
        float("nan"), float("inf"), -float("inf"), -1.0, 0.0, -1e-300, 10**400,
        -(10**400), np.float32("nan"), np.float64("-inf"),
    ])


def wrong_ints() -> st.SearchStrategy:
    """Bad values for integer arguments (sizes, epochs, batch_size)."""
    return st.one_of(
        st.sampled_from([None, "3", 3.0, 2.5, True, False, [3], 0, -1, -(2**63),
                         np.float64(3.0), 1 + 0j, float("nan")]),
        huge_ints(),
    )


# ---------------------------------------------------------------------------
# the oracle
# ---------------------------------------------------------------------------

def expected_real_array(data, dtype, *, ndim=2, allow_empty=False):
    """What tinycore's validation must make of ``data``.

    Returns the converted C-contiguous array (finite, in ``dtype``) that a
    valid input stands for, or the exception class it must raise
    (TypeError for a non-numeric input, ValueError for a bad shape, an empty
    array or a non-finite value).  Independent of tinycore's own code.
    """
    if data is None or isinstance(data, (str, bytes, dict, set)):
        return TypeError
    try:
        with np.errstate(all="ignore"):
            array = np.asarray(data)
    except (ValueError, TypeError):
        return ValueError
    if array.dtype.kind not in "biuf":
        return TypeError
    if ndim is not None and array.ndim != ndim:
        return ValueError
    if array.size == 0 and not allow_empty:
        return ValueError
    if any(side > BLAS_INT_MAX for side in array.shape):
        return ValueError
    with np.errstate(all="ignore"):
        converted = np.array(array, dtype=dtype, order="C")
    if not np.isfinite(converted).all():
        return ValueError
    return converted
