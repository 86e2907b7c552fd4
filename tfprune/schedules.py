"""Pruning schedules: pure maps from a training step to a target sparsity.

A schedule answers two questions for a step: which sparsity should the masks have (`sparsity_at`) and
whether the masks are recomputed at that step (`should_update`). Schedules hold no state, so a resumed run
only needs the step (taken from the optimizer) to continue exactly where it stopped.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields

import numpy as np

from tfprune.errors import TfpruneError


def _is_number(value) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_sparsity(name: str, value: float) -> None:
    if not _is_number(value) or not 0.0 <= float(value) < 1.0:  # NaN fails the comparison
        raise TfpruneError(f"{name} must be a number in [0, 1), got {value!r}")


def _check_window(begin_step: int, end_step: int | None) -> None:
    _check_step("begin_step", begin_step)
    if end_step is not None:
        _check_step("end_step", end_step)
        if begin_step >= end_step:
            raise TfpruneError(f"begin_step must be < end_step, got begin_step={begin_step}, end_step={end_step}")


def _check_step(name: str, value: int, minimum: int = 0) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < minimum:
        raise TfpruneError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class PolynomialDecay:
    """Zhu & Gupta (2017) gradual schedule.

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (end - t0)) ** exponent for t0 <= t <= end, updated every
    `frequency` steps from `begin_step`, and once more at `end_step` so the final sparsity is always reached
    even when (end - begin) is not a multiple of the frequency. Before t0 nothing is pruned; after `end_step`
    the masks stay as they are.

    Args:
        initial_sparsity, final_sparsity: in [0, 1).
        begin_step, end_step: optimizer steps, 0 <= begin_step < end_step.
        frequency: steps between mask updates, >= 1.
        exponent: > 0; 3 is the paper's.
    Raises:
        TfpruneError: any value outside those ranges.
    """

    initial_sparsity: float = 0.0
    final_sparsity: float = 0.5
    begin_step: int = 0
    end_step: int = 1000
    frequency: int = 100
    exponent: float = 3.0

    kind = "polynomial_decay"

    def __post_init__(self):
        _check_sparsity("initial_sparsity", self.initial_sparsity)
        _check_sparsity("final_sparsity", self.final_sparsity)
        _check_window(self.begin_step, self.end_step)
        _check_step("frequency", self.frequency, minimum=1)
        if not _is_number(self.exponent) or not 0 < float(self.exponent) < math.inf:
            raise TfpruneError(f"exponent must be a finite number > 0, got {self.exponent!r}")

    def sparsity_at(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.exponent

    def should_update(self, step: int) -> bool:
        if step < self.begin_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.begin_step) % self.frequency == 0


@dataclass(frozen=True)
class ConstantSparsity:
    """One sparsity, re-applied every `frequency` steps from `begin_step` (to `end_step` if given).

    Raises:
        TfpruneError: a sparsity outside [0, 1), negative steps, begin_step >= end_step, frequency < 1.
    """

    sparsity: float = 0.5
    begin_step: int = 0
    end_step: int | None = None
    frequency: int = 100

    kind = "constant"

    def __post_init__(self):
        _check_sparsity("sparsity", self.sparsity)
        _check_window(self.begin_step, self.end_step)
        _check_step("frequency", self.frequency, minimum=1)

    def sparsity_at(self, step: int) -> float:
        return self.sparsity if step >= self.begin_step else 0.0

    def should_update(self, step: int) -> bool:
        if step < self.begin_step or (self.end_step is not None and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0


@dataclass(frozen=True)
class OneShot:
    """Prune once, at `step`, to `sparsity` (the pruning challenge's one-shot setting).

    Raises:
        TfpruneError: a sparsity outside [0, 1) or a negative step.
    """

    sparsity: float = 0.5
    step: int = 0

    kind = "one_shot"

    def __post_init__(self):
        _check_sparsity("sparsity", self.sparsity)
        _check_step("step", self.step)

    def sparsity_at(self, step: int) -> float:
        return self.sparsity if step >= self.step else 0.0

    def should_update(self, step: int) -> bool:
        return step == self.step


SCHEDULES = {cls.kind: cls for cls in (PolynomialDecay, ConstantSparsity, OneShot)}
Schedule = PolynomialDecay | ConstantSparsity | OneShot


def register(cls) -> type:
    """Add a schedule kind (a frozen dataclass with `kind`, `sparsity_at` and `should_update`) to the
    registry that `from_dict` reads; usable as a class decorator."""
    SCHEDULES[cls.kind] = cls
    return cls


def to_dict(schedule: Schedule) -> dict:
    """The schedule as plain data: {"kind": ..., its settings} (numpy scalars as Python numbers)."""
    return {"kind": schedule.kind, **{k: v.item() if isinstance(v, np.generic) else v for k, v in asdict(schedule).items()}}


def peak_sparsity(schedule: Schedule) -> float:
    """The highest sparsity the schedule asks for (all kinds here never decrease)."""
    return float(getattr(schedule, "final_sparsity", getattr(schedule, "sparsity", 0.0)))


def from_dict(config: dict) -> Schedule:
    """Inverse of `to_dict`.

    Raises:
        TfpruneError: an unknown kind or setting (never silently ignored), or a value out of range.
    """
    config = dict(config)
    kind = config.pop("kind", PolynomialDecay.kind)
    if kind not in SCHEDULES:
        raise TfpruneError(f"schedule kind must be one of {sorted(SCHEDULES)}, got {kind!r}")
    cls = SCHEDULES[kind]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise TfpruneError(f"unknown {kind} schedule setting(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(**config)


def to_json(schedule: Schedule) -> str:
    return json.dumps(to_dict(schedule), sort_keys=True)


def from_json(text: str) -> Schedule:
    return from_dict(json.loads(text))


def update_steps(schedule: Schedule, last_step: int) -> list[int]:
    """Every step in [0, last_step] at which the masks are recomputed (for plots and tests)."""
    return [s for s in range(last_step + 1) if schedule.should_update(s)]
