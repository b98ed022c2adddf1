"""Diffy's filter, and the volatile-value detectors used without a baseline."""
import time

from analyze.noise import classify, diffy_change, volatile


def test_volatile_values() -> None:
    now = time.time()
    for v in ["550e8400-e29b-41d4-a716-446655440000", "2026-11-26T17:00:01Z", "2026-11-26 17:00:01.123+01:00",
              "Thu, 26 Nov 2026 17:00:01 GMT", "9f86d081884c7d659a2feaa0c55ad015", "aB3dE5fG7hJ9kL1mN3pQ5rS"]:
        assert volatile(v), v
    for v in ["alice", "a@x.org", 42, 3.5, True, None, "2026", "deadbeef", "ACTIVE",
              "1234567890123456"]:  # all digits: an account number, not a nonce
        assert not volatile(v), v
    # Numbers near today's epoch are timestamps only under a time-like name: sizes and ids are not.
    assert volatile(now, "generated_at") and volatile(int(now * 1000), "ts") and volatile(now, "created_epoch")
    assert not volatile(now, "size") and not volatile(1_700_000_000, "count") and not volatile(now)
    assert not volatile(10 ** 400, "ts")  # too large for a float: not a time, and no crash


def test_diffy_filter() -> None:
    assert diffy_change(raw=50, noise=0, total=100)
    assert not diffy_change(raw=50, noise=48, total=100)  # as noisy as the baseline
    assert not diffy_change(raw=5, noise=10, total=100)
    assert not diffy_change(raw=1, noise=0, total=100_000)  # 0.001 %: under the absolute floor


def test_classify() -> None:
    assert classify(10, 0, 10, artifacts=10, volatile_pairs=0, has_baseline=True) == "artifact"
    assert classify(10, 10, 10, 0, 10, has_baseline=True) == "noise"
    assert classify(10, 0, 10, 0, 0, has_baseline=True) == "change"
    assert classify(10, 0, 10, 0, 10, has_baseline=False) == "probable_noise"
    assert classify(10, 0, 10, 0, 3, has_baseline=False) == "change"
