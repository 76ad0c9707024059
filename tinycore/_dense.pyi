import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def dense_forward(activation: int, alpha: float, x: _Float, w: _Float, b: _Float | None,
                  z: _Float, a: _Float) -> None: ...
def dense_activation_backward(activation: int, alpha: float, a: _Float, da: _Float,
                              dz: _Float) -> None: ...
def dense_param_backward(x: _Float, w: _Float, dz: _Float, dw: _Float, db: _Float | None,
                         dx: _Float | None) -> None: ...
