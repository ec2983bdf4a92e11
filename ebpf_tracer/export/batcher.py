"""Batching between the capture loop and an exporter.

The capture loop must keep draining the kernel's ring buffer whatever the
collector is doing, so ``on_end`` only appends to a bounded in-memory queue
(dropping the oldest span when full: the newest traffic is the most useful)
and a single worker thread does all encoding and I/O.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

from ..model import Span
from .base import SpanExporter

log = logging.getLogger(__name__)

DROP_QUEUE_FULL = "queue_full"  # the queue overflowed: the oldest span made room
DROP_EXPORT_FAILED = "export_failed"  # the exporter gave up on the batch
DROP_SHUTDOWN_TIMEOUT = "shutdown_timeout"  # still queued when the shutdown deadline passed
DROP_AFTER_SHUTDOWN = "after_shutdown"  # arrived after shutdown began


@dataclass(slots=True)
class ExportStats:
    spans_queued: int = 0  # accepted by on_end
    spans_exported: int = 0  # delivered (or written) by the exporter
    spans_dropped: dict[str, int] = field(default_factory=dict)  # by DROP_* reason
    export_failures: int = 0  # export calls that returned False or raised

    @property
    def dropped_total(self) -> int:
        return sum(self.spans_dropped.values())

    def describe(self) -> str:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.spans_dropped.items())) or "none"
        return (
            f"queued={self.spans_queued} exported={self.spans_exported} "
            f"dropped({dropped}) export_failures={self.export_failures}"
        )


class BatchSpanProcessor:
    """Queues finished spans and exports them in batches from a worker thread.

    A batch goes out when ``max_export_batch_size`` spans are waiting or
    ``schedule_delay_s`` has passed, whichever is first.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_s: float = 1.0,
        export_timeout_s: float = 30.0,
    ) -> None:
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        if not 1 <= max_export_batch_size <= max_queue_size:
            raise ValueError("max_export_batch_size must be between 1 and max_queue_size")
        if schedule_delay_s <= 0 or export_timeout_s <= 0:
            raise ValueError("schedule_delay_s and export_timeout_s must be positive")
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = max_export_batch_size
        self.schedule_delay_s = schedule_delay_s
        # The transports enforce their own deadline (OTEL_EXPORTER_OTLP_TIMEOUT);
        # an export slower than this is reported, since it stalls the queue.
        self.export_timeout_s = export_timeout_s
        self.stats = ExportStats()

        self._queue: collections.deque[Span] = collections.deque()
        self._lock = threading.Lock()  # held only for O(1)/O(batch) queue operations
        self._wake = threading.Event()
        self._flush_waiters: list[threading.Event] = []
        self._stopping = False
        self._shut_down = False
        self._worker = threading.Thread(target=self._run, name="ebpf-tracer-export", daemon=True)
        self._worker.start()

    # --- capture-loop side -------------------------------------------------

    def on_end(self, span: Span) -> None:
        """Queue ``span``. Never blocks on I/O; drops the oldest span when full."""
        with self._lock:
            if self._stopping:
                self._count_drop(DROP_AFTER_SHUTDOWN, 1)
                return
            queue = self._queue
            if len(queue) >= self.max_queue_size:
                queue.popleft()
                self._count_drop(DROP_QUEUE_FULL, 1)
            queue.append(span)
            self.stats.spans_queued += 1
            batch_ready = len(queue) >= self.max_export_batch_size
        if batch_ready and not self._wake.is_set():
            self._wake.set()

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    # --- control -------------------------------------------------------------

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export everything queued so far; True if done within ``timeout_s``."""
        if not self._worker.is_alive():
            return not self._queue
        done = threading.Event()
        with self._lock:
            self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Export what is queued within ``timeout_s``, then shut the exporter down."""
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            self._stopping = True
        self._wake.set()
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            with self._lock:
                left = len(self._queue)
                self._queue.clear()
                if left:
                    self._count_drop(DROP_SHUTDOWN_TIMEOUT, left)
            log.warning(
                "span export did not finish within %.1fs; %d queued spans dropped",
                timeout_s,
                left,
            )
        try:
            # Also cuts short the retries of an export still in flight.
            self.exporter.shutdown()
        except Exception as exc:  # shutdown must always complete
            log.warning("exporter shutdown failed: %s", exc)
        log.info("span export stopped: %s", self.stats.describe())

    # --- worker --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            with self._lock:
                waiters, self._flush_waiters = self._flush_waiters, []
                stopping = self._stopping
            # Woken only because a batch filled up: send full batches and let a
            # remainder wait to fill (or for the timer). Otherwise send it all;
            # everything queued before a flush request goes out before its
            # waiter is released.
            self._drain(full_only=woken and not waiters and not stopping)
            for waiter in waiters:
                waiter.set()
            if stopping:
                return

    def _drain(self, *, full_only: bool) -> None:
        size = self.max_export_batch_size
        while True:
            with self._lock:
                queue = self._queue
                count = min(len(queue), size)
                if count == 0 or (full_only and count < size):
                    return
                batch = [queue.popleft() for _ in range(count)]
            self._export(batch)

    def _export(self, batch: list[Span]) -> None:
        started = time.monotonic()
        try:
            ok = self.exporter.export(batch)
        except Exception:
            # An exporter bug must not kill the worker (and silently stop all export).
            log.exception("span exporter raised; %d spans dropped", len(batch))
            ok = False
        elapsed = time.monotonic() - started
        if elapsed > self.export_timeout_s:
            log.warning(
                "exporting %d spans took %.1fs (more than %.1fs)",
                len(batch),
                elapsed,
                self.export_timeout_s,
            )
        with self._lock:
            if ok:
                self.stats.spans_exported += len(batch)
            else:
                self.stats.export_failures += 1
                self._count_drop(DROP_EXPORT_FAILED, len(batch))

    def _count_drop(self, reason: str, count: int) -> None:
        dropped = self.stats.spans_dropped
        dropped[reason] = dropped.get(reason, 0) + count
