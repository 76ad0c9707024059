import enum

import numpy as np
import numpy.typing as npt

def all_finite(x: npt.NDArray[np.float32] | npt.NDArray[np.float64]) -> bool: ...
def _helper_counts() -> tuple[int, int]: ...

class LossKind(enum.IntEnum):
    LOSS_MSE = 0
    LOSS_SSE = 1
    LOSS_MAE = 2
    LOSS_BCE = 3
    LOSS_CE = 4

class Status(enum.IntEnum):
    OK = 0
    NEEDS_CONVERSION = 1
    NOT_FINITE_INPUT = 2
    NOT_FINITE_TARGET = 3
    LABEL_OUT_OF_RANGE = 4
    BUSY = 5
    DIVERGED = 6

class Plan:
    last_loss: float
    last_correct: int
    last_bad_layer: int
    def __init__(self, layer_table: list[tuple[int, int, int, float, bool]],
                 params: npt.NDArray[np.floating], grads: npt.NDArray[np.floating],
                 loss_kind: int) -> None: ...
    def splits(self, batch: int) -> bool: ...
    def helper_allowed(self) -> bool: ...
    def helper_costs(self) -> tuple[float, float]: ...
    def workspace_bytes(self) -> int: ...
    def clear_workspaces(self) -> None: ...
    def train_step(self, X: object, y: object, lr: float, update: bool,
                   count: bool = ..., guard: bool = ...,
                   rule: tuple[object, ...] | None = ...) -> int: ...
    def train_rows(self, X: npt.NDArray[np.floating], y: npt.NDArray[np.generic],
                   rows: npt.NDArray[np.int64], lr: float, update: bool,
                   count: bool = ..., guard: bool = ...,
                   rule: tuple[object, ...] | None = ...) -> int: ...
    def set_tracking(self, enabled: bool) -> None: ...
    def take_tracking(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
    def predict(self, X: npt.NDArray[np.floating], out: npt.NDArray[np.floating],
                batch_size: int) -> int: ...
