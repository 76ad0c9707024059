"""tinycore: a small, fast deep learning engine for dense networks on the CPU.

Typed Cython kernels (BLAS for the matrix products, without the GIL) under a
thin Python API.

Examples
--------
>>> import tinycore as tc
>>> model = tc.Sequential([tc.Dense(64, 32, activation="relu"),
...                        tc.Dense(32, 10, activation="softmax")], seed=0)
>>> model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
"""
try:
    # Before anything loads SciPy's BLAS: ask for the widest kernels the CPU has.
    from tinycore import _cpu

    _cpu.select_blas_kernels()
    # The widest set of compiled kernels this CPU runs (tinycore._simd).
    from tinycore import _simd

    _simd.load("_activations")
except ImportError as exc:
    import os as _os

    raise ImportError(
        f"tinycore's compiled kernels could not be imported from "
        f"{_os.path.dirname(__file__)} ({exc}). If that is the source checkout, "
        "Python found it before the installed package: run from another folder "
        "(or use the `tinycore` command), or build the kernels in place with "
        "`python setup.py build_ext --inplace`."
    ) from None

from tinycore import activations, callbacks, datasets, initializers, losses, optimizers  # noqa: E402
from tinycore._config import set_num_threads, show_config  # noqa: E402
from tinycore import diagnostics, plot  # noqa: E402  (plot imports matplotlib lazily)
from tinycore.gradcheck import gradcheck  # noqa: E402
from tinycore.layers import Dense  # noqa: E402
from tinycore.model import Sequential  # noqa: E402
from tinycore.training import History, TrainingDivergedError  # noqa: E402
from tinycore.optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSProp  # noqa: E402
from tinycore import schedules  # noqa: E402
from tinycore import data, distributed  # noqa: E402  (mpi4py only when used)
from tinycore.serialization import load  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Dense", "Sequential", "History", "TrainingDivergedError",
    "Optimizer", "SGD", "Adagrad", "RMSProp", "Adam", "AdamW", "schedules",
    "activations", "callbacks", "losses", "optimizers", "datasets", "initializers",
    "load", "show_config", "set_num_threads", "__version__",
    "diagnostics", "plot", "gradcheck", "data", "distributed",
]
