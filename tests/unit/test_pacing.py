"""The poll loop's sleep: batches of about `target` records at any rate, within bounds."""

from ebpf_tracer.pacing import PollPacer


def _run(rate: float, pacer: PollPacer, now: float, polls: int = 40) -> tuple[list, float]:
    """The sleeps chosen over `polls` polls of a steady `rate` (records/s), each
    poll finding what arrived during the previous sleep (work time ~0); and the
    clock after them."""
    sleep, sleeps = pacer.floor_s, []
    for _ in range(polls):
        now += sleep
        sleep = pacer.pause(max(1, round(rate * sleep)), now)
        sleeps.append(sleep)
    return sleeps, now


def _steady(rate: float, pacer: PollPacer) -> float:
    return _run(rate, pacer, 0.0)[0][-1]


def test_high_rate_keeps_the_floor() -> None:
    # nginx at 20k records/s: 64 records take 3.2 ms, under the 5 ms floor.
    assert _steady(20000, PollPacer(0.005, 0.05, 64, 0.0)) == 0.005


def test_mid_rate_sleeps_for_the_target() -> None:
    # A connection per request at 2k req/s: 6k records/s, 64 take ~10.7 ms.
    sleep = _steady(6000, PollPacer(0.005, 0.05, 64, 0.0))
    assert abs(sleep - 64 / 6000) < 0.001


def test_low_rate_stops_at_the_ceiling() -> None:
    assert _steady(100, PollPacer(0.005, 0.05, 64, 0.0)) == 0.05


def test_a_burst_after_a_quiet_spell_shortens_the_sleep_at_once() -> None:
    pacer = PollPacer(0.005, 0.05, 64, 0.0)
    sleeps, now = _run(50, pacer, 0.0)
    assert sleeps[-1] == 0.05
    pacer.pause(1, now + 100.0)  # a record after 100 s of nothing: the ceiling
    # 50k records/s from now on: the first poll finds 2500 records (one
    # ceiling's worth); the next sleep is already the floor.
    assert _run(50000, pacer, now + 100.0, 8)[0] == [0.005] * 8


def test_target_zero_is_a_fixed_sleep() -> None:
    pacer = PollPacer(0.005, 0.05, 0, 0.0)
    assert pacer.pause(1, 10.0) == 0.005
    assert pacer.pause(5000, 10.001) == 0.005


def test_a_slowdown_lengthens_the_sleep_over_a_few_polls() -> None:
    pacer = PollPacer(0.005, 0.05, 64, 0.0)
    sleeps, now = _run(20000, pacer, 0.0)
    assert sleeps[-1] == 0.005
    sleeps = _run(1000, pacer, now, 12)[0]  # 1k records/s from now on
    assert sleeps[0] < 0.03 and sleeps == sorted(sleeps) and sleeps[-1] == 0.05
