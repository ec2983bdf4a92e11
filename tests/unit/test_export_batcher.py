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
    DROP_SHUTDOWN_TIMEOUT,
)
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


def test_on_end_never_blocks_and_drops_the_oldest_when_full() -> None:
    exporter = RecordingExporter()
    exporter.release.clear()  # the collector hangs
    processor = BatchSpanProcessor(exporter, max_queue_size=100, max_export_batch_size=10,
                                   schedule_delay_s=60)
    for i in range(10):  # the first batch goes to the (stuck) exporter
        processor.on_end(make_span(i))
    assert exporter.entered.wait(5)

    started = time.perf_counter()
    for i in range(10, 100_010):
        processor.on_end(make_span(i))
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
    assert processor.stats.spans_dropped == {DROP_AFTER_SHUTDOWN: 1}
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
    assert processor.stats.spans_dropped[DROP_SHUTDOWN_TIMEOUT] == 15


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
