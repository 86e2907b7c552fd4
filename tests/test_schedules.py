import json

import numpy as np
import pytest

from tfprune import TfpruneError, schedules
from tfprune.schedules import ConstantSparsity, OneShot, PolynomialDecay


def test_polynomial_decay_values_at_known_steps():
    s = PolynomialDecay(initial_sparsity=0.1, final_sparsity=0.7, begin_step=100, end_step=300, frequency=50, exponent=3)
    assert s.sparsity_at(0) == 0.0 and s.sparsity_at(99) == 0.0
    assert s.sparsity_at(100) == pytest.approx(0.1)
    # halfway: s_f + (s_i - s_f) * 0.5**3
    assert s.sparsity_at(200) == pytest.approx(0.7 - 0.6 * 0.125)
    assert s.sparsity_at(300) == pytest.approx(0.7)
    assert s.sparsity_at(10_000) == pytest.approx(0.7)


def test_polynomial_decay_update_steps_include_end_step():
    s = PolynomialDecay(0.0, 0.5, begin_step=10, end_step=45, frequency=10)
    assert schedules.update_steps(s, 100) == [10, 20, 30, 40, 45]


def test_constant_and_one_shot():
    c = ConstantSparsity(0.3, begin_step=5, frequency=5)
    assert c.sparsity_at(4) == 0.0 and c.sparsity_at(5) == 0.3
    assert schedules.update_steps(c, 20) == [5, 10, 15, 20]
    o = OneShot(0.9, step=3)
    assert schedules.update_steps(o, 10) == [3] and o.sparsity_at(2) == 0.0 and o.sparsity_at(3) == 0.9


@pytest.mark.parametrize("schedule", [PolynomialDecay(0.05, 0.8, 3, 90, 7, 2.0), ConstantSparsity(0.4, 2, 20, 3), OneShot(0.25, 4)])
def test_dict_and_json_round_trip(schedule):
    assert schedules.from_dict(schedules.to_dict(schedule)) == schedule
    assert schedules.from_json(json.dumps(schedules.to_dict(schedule))) == schedule
    assert schedules.from_json(schedules.to_json(schedule)) == schedule


@pytest.mark.parametrize("kwargs, message", [
    ({"final_sparsity": 1.0}, "final_sparsity must be a number in \\[0, 1\\)"),
    ({"initial_sparsity": -0.1}, "initial_sparsity"),
    ({"begin_step": 100, "end_step": 100}, "begin_step must be < end_step"),
    ({"frequency": 0}, "frequency must be an integer >= 1"),
    ({"exponent": 0}, "exponent must be a finite number > 0"),
    ({"exponent": float("nan")}, "exponent must be a finite number > 0"),
    ({"final_sparsity": float("nan")}, "final_sparsity must be a number in"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(TfpruneError, match=message):
        PolynomialDecay(**kwargs)


def test_from_dict_rejects_unknown_kind_and_keys():
    with pytest.raises(TfpruneError, match="schedule kind must be one of"):
        schedules.from_dict({"kind": "cosine"})
    with pytest.raises(TfpruneError, match="unknown polynomial_decay schedule setting"):
        schedules.from_dict({"kind": "polynomial_decay", "final_sparsity": 0.5, "speed": 2})


def test_numpy_scalars_are_numbers():
    schedule = PolynomialDecay(np.float32(0.0), np.float64(0.5), np.int64(0), np.int32(100), np.int64(10), np.float32(3))
    assert schedule.sparsity_at(100) == pytest.approx(0.5)
    assert schedules.from_json(schedules.to_json(schedule)).final_sparsity == 0.5
    assert OneShot(np.float32(0.25), np.int64(3)).should_update(3)
    with pytest.raises(TfpruneError, match="must be a number"):
        OneShot(np.bool_(True))
