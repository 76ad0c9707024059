import enum

import numpy as np
import numpy.typing as npt

_Float = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def sgd_update(lr: float, param: _Float, grad: _Float) -> None: ...
def global_norm(x: _Float) -> float: ...
def sgd_step(lr: float, weight_decay: float, grad_scale: float, param: _Float,
             grad: _Float) -> None: ...
def sgd_momentum_step(lr: float, momentum: float, nesterov: bool, weight_decay: float,
                      grad_scale: float, param: _Float, grad: _Float, buf: _Float) -> None: ...
def adagrad_step(lr: float, eps: float, grad_scale: float, param: _Float, grad: _Float,
                 sum_sq: _Float) -> None: ...
def rmsprop_step(lr: float, rho: float, eps: float, momentum: float, grad_scale: float,
                 param: _Float, grad: _Float, sq_avg: _Float,
                 buf: _Float | None = ...) -> None: ...
def adam_step(lr: float, beta1: float, beta2: float, eps: float, l2: float, decay: float,
              t: int, grad_scale: float, param: _Float, grad: _Float, m: _Float,
              v: _Float) -> None: ...

class RuleKind(enum.IntEnum):
    RULE_SGD = 1
    RULE_ADAGRAD = 2
    RULE_RMSPROP = 3
    RULE_ADAM = 4
