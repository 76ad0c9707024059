import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def _gemm_memview(trans_a: bool, trans_b: bool, alpha: float, a: _Float, b: _Float,
                  beta: float, c: _Float) -> None: ...
