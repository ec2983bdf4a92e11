"""BatchSpanProcessor: bounded, never blocking, drop-oldest, flush and shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from ebpf_tracer.export import BatchSpanProcessor
from ebpf_tracer.export.batcher import (
    DROP_AFTER_SHUTDOWN,
    DROP_EXPORT_FAILED,
    DROP_QUEUE_FULL,
    DROP_REJECTED,
    DROP_SHUTDOWN_TIMEOUT,
)
from ebpf_tracer.export.retry import SUCCESS, Outcome, RetryPolicy
from ebpf_tracer.model import Resource, Span, SpanKind

RESOURCE = Resource.from_dict({"service.name": "svc"})


def make_span(i: int) -> Span:
    return Span(name=str(i), kind=SpanKind.SERVER, start_time_ns=i, end_time_ns=i + 1,
                resource=RESOURCE)


class RecordingExporter:
    """Records batches; can be held (blocked) or told to fail."""

    def __init__(self, *, result: bool = True) -> None:
        self.batches: list[list[Span]] = []
        self.result = result
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.shutdown_calls = 0
        self.lock = threading.Lock()

    def export(self, spans: Sequence[Span]) -> bool:
        self.entered.set()
        self.release.wait(30)
        with self.lock:
            self.batches.append(list(spans))
        return self.result

    def shutdown(self) -> None:
        self.shutdown_calls += 1
        self.release.set()

    @property
    def names(self) -> list[str]:
        with self.lock:
            return [s.name for batch in self.batches for s in batch]


def test_flush_delivers_everything_in_order_in_bounded_batches() -> None:
    exporter = RecordingExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=2048, max_export_batch_size=100,
                                   schedule_delay_s=60)
    for i in range(1050):
        processor.on_end(make_span(i))
    assert processor.force_flush(timeout_s=5)
    assert exporter.names == [str(i) for i in range(1050)]
    assert max(len(b) for b in exporter.batches) <= 100
    assert sum(len(b) == 100 for b in exporter.batches) >= 10
    assert processor.stats.spans_queued == 1050
    assert processor.stats.spans_exported == 1050
    assert processor.stats.spans_dropped == {}
    processor.shutdown()


def test_a_full_batch_goes_out_without_waiting_for_the_schedule() -> None:
    exporter = RecordingExporter()
    processor = BatchSpanProcessor(exporter, max_export_batch_size=10, schedule_delay_s=60)
    for i in range(10):
        processor.on_end(make_span(i))
    deadline = time.monotonic() + 5
    while not exporter.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(b) for b in exporter.batches] == [10]
    processor.shutdown()


def test_a_partial_batch_goes_out_after_the_schedule_delay() -> None:
    exporter = RecordingExporter()
    processor = BatchSpanProcessor(exporter, schedule_delay_s=0.05)
    processor.on_end(make_span(1))
    deadline = time.monotonic() + 5
    while not exporter.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert exporter.names == ["1"]
    processor.shutdown()


def queue_spans(processor: BatchSpanProcessor, spans: list[Span], many: bool) -> None:
    """One by one (on_end), or in the odd-sized runs the agent's polls make."""
    if not many:
        for span in spans:
            processor.on_end(span)
        return
    for at in range(0, len(spans), 37):
        processor.on_end_many(spans[at : at + 37])


@pytest.mark.parametrize("many", [False, True], ids=["on_end", "on_end_many"])
def test_on_end_never_blocks_and_drops_the_oldest_when_full(many: bool) -> None:
    exporter = RecordingExporter()
    exporter.release.clear()  # the collector hangs
    processor = BatchSpanProcessor(exporter, max_queue_size=100, max_export_batch_size=10,
                                   schedule_delay_s=60)
    queue_spans(processor, [make_span(i) for i in range(10)], many)  # to the stuck exporter
    assert exporter.entered.wait(5)

    spans = [make_span(i) for i in range(10, 100_010)]
    started = time.perf_counter()
    queue_spans(processor, spans, many)
    elapsed = time.perf_counter() - started

    assert elapsed < 2.0, f"on_end took {elapsed:.2f}s for 100k spans with a stuck exporter"
    assert processor.queue_length == 100
    assert processor.stats.spans_dropped == {DROP_QUEUE_FULL: 100_000 - 100}
    assert processor.stats.spans_queued == 100_010

    exporter.release.set()
    assert processor.force_flush(timeout_s=5)
    # The stuck batch, then the newest 100: the oldest queued spans made room.
    assert exporter.names == [str(i) for i in range(10)] + [str(i) for i in range(99_910, 100_010)]
    processor.shutdown()


def test_shutdown_flushes_then_shuts_the_exporter_down() -> None:
    exporter = RecordingExporter()
    processor = BatchSpanProcessor(exporter, max_export_batch_size=7, schedule_delay_s=60)
    for i in range(50):
        processor.on_end(make_span(i))
    processor.shutdown(timeout_s=5)
    assert exporter.names == [str(i) for i in range(50)]
    assert exporter.shutdown_calls == 1
    assert processor.stats.spans_exported == 50

    processor.on_end(make_span(99))  # too late: counted, not exported
    processor.on_end_many([make_span(100), make_span(101)])
    assert processor.stats.spans_dropped == {DROP_AFTER_SHUTDOWN: 3}
    processor.shutdown()  # idempotent
    assert exporter.shutdown_calls == 1


def test_shutdown_keeps_its_deadline_with_a_stuck_exporter() -> None:
    exporter = RecordingExporter()
    exporter.release.clear()
    processor = BatchSpanProcessor(exporter, max_export_batch_size=5, schedule_delay_s=60)
    for i in range(20):
        processor.on_end(make_span(i))
    assert exporter.entered.wait(5)

    started = time.monotonic()
    processor.shutdown(timeout_s=0.3)
    assert time.monotonic() - started < 2.0
    assert exporter.shutdown_calls == 1
    # The stuck batch was never confirmed delivered: it counts as dropped too.
    assert processor.stats.spans_dropped[DROP_SHUTDOWN_TIMEOUT] == 20
    assert processor.stats.spans_exported == 0


def test_failed_exports_are_counted_and_dropped() -> None:
    exporter = RecordingExporter(result=False)
    processor = BatchSpanProcessor(exporter, max_export_batch_size=4, schedule_delay_s=60)
    for i in range(10):
        processor.on_end(make_span(i))
    assert processor.force_flush(timeout_s=5)
    assert processor.stats.export_failures == 3
    assert processor.stats.spans_dropped == {DROP_EXPORT_FAILED: 10}
    assert processor.stats.spans_exported == 0
    processor.shutdown()


class RaisingExporter(RecordingExporter):
    def export(self, spans: Sequence[Span]) -> bool:
        super().export(spans)
        if len(self.batches) == 1:
            raise RuntimeError("exporter bug")
        return True


def test_an_exporter_exception_does_not_kill_the_worker(caplog) -> None:
    exporter = RaisingExporter()
    processor = BatchSpanProcessor(exporter, schedule_delay_s=60)
    processor.on_end(make_span(1))
    assert processor.force_flush(timeout_s=5)
    processor.on_end(make_span(2))
    assert processor.force_flush(timeout_s=5)
    assert exporter.names == ["1", "2"]
    assert processor.stats.export_failures == 1
    assert processor.stats.spans_exported == 1
    assert "exporter bug" in caplog.text
    processor.shutdown()


def test_stats_describe_and_shutdown_report(caplog) -> None:
    caplog.set_level("INFO", logger="ebpf_tracer.export.batcher")
    processor = BatchSpanProcessor(RecordingExporter(), schedule_delay_s=60)
    for i in range(3):
        processor.on_end(make_span(i))
    processor.shutdown()
    assert "queued=3 exported=3 dropped(none) export_failures=0" in caplog.text


def test_force_flush_after_shutdown_is_harmless() -> None:
    processor = BatchSpanProcessor(RecordingExporter(), schedule_delay_s=60)
    processor.shutdown()
    assert processor.force_flush(timeout_s=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_queue_size": 0},
        {"max_queue_size": 10, "max_export_batch_size": 11},
        {"max_export_batch_size": 0},
        {"schedule_delay_s": 0},
    ],
)
def test_invalid_settings(kwargs) -> None:
    with pytest.raises(ValueError):
        BatchSpanProcessor(RecordingExporter(), **kwargs)


# --- holding spans across a backend outage -------------------------------------------

FAST_HOLD = RetryPolicy(initial_backoff_s=0.02, max_backoff_s=0.05)
DOWN = Outcome(ok=False, retryable=True, detail="UNAVAILABLE", code="UNAVAILABLE")


class FlakyBackend(RecordingExporter):
    """Fails retryably while ``down`` is set; records only what it accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.attempts = 0
        self.outcome_when_down = DOWN

    def export(self, spans: Sequence[Span]) -> Outcome:
        self.attempts += 1
        if self.down.is_set():
            return self.outcome_when_down
        super().export(spans)
        return SUCCESS


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def balanced(processor: BatchSpanProcessor) -> bool:
    st = processor.stats
    return st.spans_queued == st.spans_exported + st.dropped_total + processor.pending


def test_an_outage_within_the_queue_bound_loses_nothing_and_duplicates_nothing() -> None:
    backend = FlakyBackend()
    backend.down.set()
    processor = BatchSpanProcessor(backend, max_queue_size=1000, max_export_batch_size=50,
                                   schedule_delay_s=0.01, hold_policy=FAST_HOLD)
    for i in range(600):
        processor.on_end(make_span(i))
        if i % 100 == 0:
            time.sleep(0.02)  # let the worker fail a few times mid-traffic
    assert wait_until(lambda: backend.attempts >= 5)
    assert backend.names == [] and processor.pending == 600 and balanced(processor)
    assert processor.backend_failing_s > 0

    backend.down.clear()
    assert processor.force_flush(timeout_s=5)
    assert backend.names == [str(i) for i in range(600)]  # all, in order, once
    assert processor.stats.spans_exported == 600
    assert processor.stats.spans_dropped == {}
    assert processor.stats.export_retries >= 5
    assert processor.backend_failing_s == 0 and balanced(processor)
    processor.shutdown()


def test_an_outage_longer_than_the_queue_drops_the_oldest_and_counts_them() -> None:
    backend = FlakyBackend()
    backend.down.set()
    processor = BatchSpanProcessor(backend, max_queue_size=100, max_export_batch_size=10,
                                   schedule_delay_s=0.01, hold_policy=FAST_HOLD)
    for i in range(250):
        processor.on_end(make_span(i))
        if i % 25 == 0:
            time.sleep(0.01)
    assert wait_until(lambda: backend.attempts >= 3)
    backend.down.clear()
    assert processor.force_flush(timeout_s=5)
    names = [int(n) for n in backend.names]
    assert len(names) == len(set(names)) == processor.stats.spans_exported
    assert names == sorted(names) and names[-1] == 249  # the newest survive
    # The held batch may be in flight (not in the queue) while spans arrive: at
    # most one batch more than the queue bound survives.
    assert 100 <= len(names) <= 110
    assert processor.stats.spans_dropped == {DROP_QUEUE_FULL: 250 - len(names)}
    assert balanced(processor)
    processor.shutdown()


def test_hold_backoff_grows_to_its_cap_and_honours_the_server_delay() -> None:
    backend = FlakyBackend()
    backend.down.set()
    backend.outcome_when_down = Outcome(ok=False, retryable=True, retry_after_s=0.4, code="429")
    processor = BatchSpanProcessor(backend, schedule_delay_s=0.01, hold_policy=FAST_HOLD)
    processor.on_end(make_span(1))
    time.sleep(1.0)
    # Without the server's 0.4 s the 0.05 s cap would allow ~20 attempts.
    assert 2 <= backend.attempts <= 4
    processor.shutdown(timeout_s=0.1)


def test_shutdown_interrupts_the_hold_backoff_and_counts_what_is_left() -> None:
    backend = FlakyBackend()
    backend.down.set()
    slow = RetryPolicy(initial_backoff_s=60, max_backoff_s=60)
    processor = BatchSpanProcessor(backend, max_export_batch_size=10, schedule_delay_s=0.01,
                                   hold_policy=slow)
    for i in range(25):
        processor.on_end(make_span(i))
    assert wait_until(lambda: backend.attempts >= 1)
    started = time.monotonic()
    processor.shutdown(timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    assert backend.attempts >= 2  # shutdown tried once more at once, not after 60 s
    assert processor.stats.spans_dropped == {DROP_SHUTDOWN_TIMEOUT: 25}
    assert balanced(processor)


def test_shutdown_delivers_held_spans_when_the_backend_returns_in_time() -> None:
    backend = FlakyBackend()
    backend.down.set()
    processor = BatchSpanProcessor(backend, schedule_delay_s=0.01, hold_policy=FAST_HOLD)
    for i in range(30):
        processor.on_end(make_span(i))
    assert wait_until(lambda: backend.attempts >= 2)
    threading.Timer(0.3, backend.down.clear).start()
    processor.shutdown(timeout_s=5)
    assert backend.names == [str(i) for i in range(30)]
    assert processor.stats.spans_dropped == {}


def test_a_partial_success_counts_the_rejected_spans_as_dropped() -> None:
    class Partial(RecordingExporter):
        def export(self, spans: Sequence[Span]) -> Outcome:
            super().export(spans)
            return Outcome(ok=True, rejected=2, detail="too old")

    processor = BatchSpanProcessor(Partial(), schedule_delay_s=60)
    for i in range(5):
        processor.on_end(make_span(i))
    assert processor.force_flush(timeout_s=5)
    assert processor.stats.spans_exported == 3
    assert processor.stats.spans_dropped == {DROP_REJECTED: 2}
    processor.shutdown()


def test_a_non_retryable_outcome_drops_the_batch_without_holding() -> None:
    backend = FlakyBackend()
    backend.down.set()
    backend.outcome_when_down = Outcome(ok=False, retryable=False, code="400")
    processor = BatchSpanProcessor(backend, max_export_batch_size=4, schedule_delay_s=60,
                                   hold_policy=FAST_HOLD)
    for i in range(8):
        processor.on_end(make_span(i))
    assert processor.force_flush(timeout_s=5)
    assert backend.attempts == 2
    assert processor.stats.spans_dropped == {DROP_EXPORT_FAILED: 8}
    assert processor.backend_failing_s == 0
    processor.shutdown()


def test_force_flush_reports_false_while_the_backend_is_down() -> None:
    backend = FlakyBackend()
    backend.down.set()
    processor = BatchSpanProcessor(backend, schedule_delay_s=60, hold_policy=FAST_HOLD)
    processor.on_end(make_span(1))
    assert processor.force_flush(timeout_s=0.3) is False
    assert processor.pending == 1
    processor.shutdown(timeout_s=0.1)
