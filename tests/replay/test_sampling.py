"""Sampling is a keyed hash: repeatable, proportional, and keeps a key's requests together."""
from replay.sampling import Sampler


def test_same_seed_same_sample() -> None:
    ids = [f"c{i // 10}-{i % 10}" for i in range(5000)]
    a = [i for i in ids if Sampler(25, "s1").keep(i)]
    b = [i for i in ids if Sampler(25, "s1").keep(i)]
    c = [i for i in ids if Sampler(25, "s2").keep(i)]
    assert a == b
    assert a != c


def test_proportion_10_percent_of_10000() -> None:
    s = Sampler(10.0, "0")
    kept = sum(s.keep(f"conn{i // 100}-{i % 100}") for i in range(10_000))
    assert 900 <= kept <= 1100  # ±1 % of 10,000


def test_fractional_percent() -> None:
    s = Sampler(0.5, "x")
    kept = sum(s.keep(f"id{i}") for i in range(100_000))
    assert 400 <= kept <= 600


def test_bounds() -> None:
    assert all(Sampler(100).keep(f"i{n}") for n in range(1000))
    assert not any(Sampler(0).keep(f"i{n}") for n in range(1000))


def test_lower_percent_is_a_subset() -> None:
    """Raising the percentage only adds requests: a 5 % run's sample is inside a 20 % run's."""
    ids = [f"i{n}" for n in range(5000)]
    small = {i for i in ids if Sampler(5, "k").keep(i)}
    big = {i for i in ids if Sampler(20, "k").keep(i)}
    assert small < big


def test_header_key_keeps_a_user_together() -> None:
    s = Sampler(30, "0", "X-User")
    decided: dict[str, set[bool]] = {}
    for n in range(3000):
        user = f"u{n % 100}"
        decided.setdefault(user, set()).add(s.keep(f"c{n}-0", [("x-user", user), ("Host", "h")]))
    assert all(len(v) == 1 for v in decided.values())
    kept_users = sum(1 for v in decided.values() if True in v)
    assert 15 <= kept_users <= 45


def test_header_missing_falls_back_to_id() -> None:
    s = Sampler(50, "0", "x-user")
    assert s.key_of("c1-0", [("Host", "h")]) == "id:c1-0"
    assert s.key_of("c1-0", [("X-USER", "bob")]) == "h:bob"
