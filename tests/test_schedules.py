"""Learning-rate schedules: values worked out by hand, validation, saving."""
import math
import re

import pytest

import tinycore as tc
from tinycore.schedules import (SCHEDULES, CosineDecay, ExponentialDecay,
                                LearningRateSchedule, StepDecay, deserialize, serialize)


def test_step_decay_by_hand():
    schedule = StepDecay(0.8, step_size=3, gamma=0.5)
    # steps 0-2: 0.8; 3-5: 0.8*0.5 = 0.4; 6-8: 0.8*0.25 = 0.2; 9: 0.8*0.125 = 0.1
    assert [schedule(s) for s in range(10)] == [0.8] * 3 + [0.4] * 3 + [0.2] * 3 + [0.1]
    # default gamma 0.1: step 20 // 10 = 2 decays -> 1.0 * 0.1**2 = 0.01
    assert StepDecay(1.0, 10)(20) == pytest.approx(0.01, rel=1e-15)


def test_exponential_decay_by_hand():
    schedule = ExponentialDecay(0.8, decay_rate=0.5, decay_steps=4)
    # 0.8 * 0.5**(s/4): s=0 -> 0.8; s=4 -> 0.4; s=8 -> 0.2; s=2 -> 0.8/sqrt(2) = 0.565685...
    assert schedule(0) == 0.8
    assert schedule(4) == 0.4
    assert schedule(8) == 0.2
    assert schedule(2) == pytest.approx(0.8 / math.sqrt(2), rel=1e-15)
    # decay_steps=1: one factor per step, 0.1 * 0.9**3 = 0.0729
    assert ExponentialDecay(0.1, 0.9)(3) == pytest.approx(0.0729, rel=1e-14)


def test_cosine_decay_by_hand():
    schedule = CosineDecay(1.0, decay_steps=4, alpha=0.2)
    # 1.0 * (0.8 * (1 + cos(pi t)) / 2 + 0.2), t = s / 4:
    # s=0: 0.8*1 + 0.2 = 1.0; s=2 (cos = 0): 0.8*0.5 + 0.2 = 0.6; s=4 (cos = -1): 0.2;
    # s=1: 0.8*(1 + 0.70711)/2 + 0.2 = 0.88284; afterwards it stays at alpha: 0.2.
    assert schedule(0) == 1.0
    assert schedule(2) == pytest.approx(0.6, rel=1e-15)
    assert schedule(4) == pytest.approx(0.2, rel=1e-15)
    assert schedule(1) == pytest.approx(0.4 * (1 + math.sqrt(0.5)) + 0.2, rel=1e-15)
    assert schedule(1000) == pytest.approx(0.2, rel=1e-15)
    assert CosineDecay(1.0, 4)(4) == pytest.approx(0.0, abs=1e-16)   # alpha 0: down to 0


def test_cosine_decay_with_warmup_by_hand():
    schedule = CosineDecay(1.0, decay_steps=2, warmup_steps=4, warmup_lr=0.2)
    # warm-up: 0.2 + 0.8 * s/4 -> 0.2, 0.4, 0.6, 0.8; then the cosine from step 4:
    # s=4: 1.0; s=5 (t = 1/2): 0.5; s=6 (t = 1): 0.0; and 0.0 after.
    expected = [0.2, 0.4, 0.6, 0.8, 1.0, 0.5, 0.0, 0.0]
    assert [schedule(s) for s in range(8)] == pytest.approx(expected, abs=1e-15)
    # The default warmup_lr 0 starts from nothing: 0, 0.5 (half way), then the peak.
    assert [CosineDecay(1.0, 10, warmup_steps=2)(s) for s in range(3)] == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("schedule", [StepDecay(0.1, 5, 0.5), ExponentialDecay(0.1, 0.9, 10),
                                      CosineDecay(0.1, 100, 0.1, 10, 0.01)])
def test_config_round_trip_and_repr(schedule):
    config = schedule.get_config()
    rebuilt = type(schedule).from_config(config)
    assert rebuilt.get_config() == config
    assert deserialize(serialize(schedule)).get_config() == config
    assert all(type(value) in (int, float) for value in config.values())
    assert [rebuilt(s) for s in range(0, 300, 7)] == [schedule(s) for s in range(0, 300, 7)]
    assert repr(schedule) == (f"{type(schedule).__name__}("
                              + ", ".join(f"{k}={v!r}" for k, v in config.items()) + ")")
    assert SCHEDULES[type(schedule).__name__] is type(schedule)
    assert isinstance(schedule, LearningRateSchedule)


def test_repr_example():
    assert repr(CosineDecay(0.1, 100)) == ("CosineDecay(initial_lr=0.1, decay_steps=100, "
                                           "alpha=0.0, warmup_steps=0, warmup_lr=0.0)")


@pytest.mark.parametrize("make,error,message", [
    (lambda: StepDecay(0.0, 10), ValueError, "initial_lr must be > 0.0, got 0.0"),
    (lambda: StepDecay("0.1", 10), TypeError, "initial_lr must be a real number, got str"),
    (lambda: StepDecay(0.1, 0), ValueError, "step_size must be >= 1, got 0"),
    (lambda: StepDecay(0.1, 2.5), TypeError, "step_size must be an integer, got float"),
    (lambda: StepDecay(0.1, 10, gamma=0.0), ValueError, "gamma must be > 0.0, got 0.0"),
    (lambda: StepDecay(0.1, 10, gamma=1.5), ValueError, "gamma must be <= 1, got 1.5"),
    (lambda: ExponentialDecay(float("inf"), 0.5), ValueError, "initial_lr must be finite"),
    (lambda: ExponentialDecay(0.1, -0.5), ValueError, "decay_rate must be > 0.0, got -0.5"),
    (lambda: ExponentialDecay(0.1, 0.5, decay_steps=0), ValueError,
     "decay_steps must be >= 1, got 0"),
    (lambda: CosineDecay(0.1, 0), ValueError, "decay_steps must be >= 1, got 0"),
    (lambda: CosineDecay(0.1, 10, alpha=1.1), ValueError, "alpha must be <= 1, got 1.1"),
    (lambda: CosineDecay(0.1, 10, alpha=-0.1), ValueError, "alpha must be >= 0.0, got -0.1"),
    (lambda: CosineDecay(0.1, 10, warmup_steps=-1), ValueError,
     "warmup_steps must be >= 0, got -1"),
    (lambda: CosineDecay(0.1, 10, warmup_steps=True), TypeError,
     "warmup_steps must be an integer, got bool"),
    (lambda: CosineDecay(0.1, 10, warmup_lr=-0.1), ValueError,
     "warmup_lr must be >= 0.0, got -0.1"),
])
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=re.escape(message)):
        make()


@pytest.mark.parametrize("step,error,message", [
    (-1, ValueError, "step must be >= 0, got -1"),
    (1.0, TypeError, "step must be an integer, got float"),
    (True, TypeError, "step must be an integer, got bool"),
])
def test_bad_step(step, error, message):
    with pytest.raises(error, match=re.escape(message)):
        StepDecay(0.1, 10)(step)


def test_bad_serialized_schedules():
    with pytest.raises(ValueError, match="keys 'type' and 'config'"):
        deserialize({"type": "StepDecay"})
    with pytest.raises(ValueError, match="unknown schedule 'Linear'; expected one of"):
        deserialize({"type": "Linear", "config": {}})
    with pytest.raises(ValueError, match="bad config for CosineDecay"):
        deserialize({"type": "CosineDecay", "config": {"initial_lr": 0.1, "steps": 3}})
    with pytest.raises(TypeError, match="expected a LearningRateSchedule, got float"):
        serialize(0.1)


def test_numpy_integer_steps_are_accepted():
    np = pytest.importorskip("numpy")
    assert StepDecay(0.8, 3, 0.5)(np.int64(3)) == 0.4


def test_an_optimizer_with_a_schedule_counts_in_steps():
    # current_lr() is the schedule at the optimizer's step counter.
    model = tc.Sequential([tc.Dense(2, 2)], dtype="float64")
    optimizer = tc.RMSProp(lr=StepDecay(0.8, step_size=2, gamma=0.5))
    seen = []
    for _ in range(5):
        seen.append(optimizer.current_lr())
        optimizer.step(model)
    assert seen == [0.8, 0.8, 0.4, 0.4, 0.2]


def test_a_misbehaving_custom_schedule_is_caught():
    class Negative(LearningRateSchedule):
        def _value(self, step):
            return -1.0

        def get_config(self):
            return {}

    with pytest.raises(ValueError, match="gave the learning rate -1.0 at step 0"):
        tc.SGD(lr=Negative()).current_lr()
