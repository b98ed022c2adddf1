"""Pacing is an absolute schedule; time order is restored within a bounded window."""
import pytest

from replay.schedule import Pacer, in_time_order


def test_captured_schedule_from_first_request() -> None:
    p = Pacer("captured")
    assert [p.offset(t) for t in (100.0, 100.5, 101.0, 103.0)] == [0.0, 0.5, 1.0, 3.0]


def test_speed_scales() -> None:
    p = Pacer("captured", speed=2.0)
    assert [p.offset(t) for t in (10.0, 11.0, 14.0)] == [0.0, 0.5, 2.0]


def test_earlier_than_first_is_due_now() -> None:
    p = Pacer("captured")
    p.offset(10.0)
    assert p.offset(9.0) == 0.0


def test_rate_ignores_capture_times() -> None:
    p = Pacer(rate=500)
    assert [p.offset(t) for t in (5.0, 1.0, 99.0)] == [0.0, 0.002, 0.004]


def test_fast() -> None:
    p = Pacer("fast")
    assert {p.offset(t) for t in (1.0, 50.0)} == {0.0}


def test_bad_values() -> None:
    with pytest.raises(ValueError):
        Pacer("sometimes")
    with pytest.raises(ValueError):
        Pacer(speed=0)


def test_in_time_order_restores_order() -> None:
    ts = [3.0, 1.0, 2.0, 5.0, 4.0, 6.0]
    assert list(in_time_order(ts, key=lambda t: t)) == sorted(ts)


def test_in_time_order_is_bounded() -> None:
    """With a window of 2, an item more than 2 places late comes out late (and shows as lag),
    but the buffer never holds more than the window."""
    out = list(in_time_order([5.0, 6.0, 7.0, 8.0, 1.0], key=lambda t: t, window=2, horizon=100))
    assert out == [5.0, 6.0, 1.0, 7.0, 8.0]


def test_in_time_order_horizon_releases_old_items() -> None:
    seen = []
    gen = in_time_order(iter([0.0, 0.5, 10.0, 11.0]), key=lambda t: t, window=1000, horizon=2.0)
    for t in gen:
        seen.append(t)
        if t == 0.5:
            break
    assert seen == [0.0, 0.5]  # released when 10.0 arrived, before the input ended
