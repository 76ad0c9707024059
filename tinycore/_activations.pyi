import enum

import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

class Activation(enum.IntEnum):
    LINEAR = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    LEAKY_RELU = 4
    STEP = 5
    SOFTMAX = 6


#: The widest vector instruction set the loops of this build use (e.g. "AVX2").
VECTOR_ISA: str
def activation_value(act: int, alpha: float, z: _Float, out: _Float) -> bool: ...
def activation_derivative(act: int, alpha: float, z: _Float, out: _Float) -> bool: ...
def activation_backward(act: int, alpha: float, a: _Float, da: _Float, dz: _Float) -> None: ...
