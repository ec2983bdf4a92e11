"""Self-observability: the agent's own numbers as Prometheus metrics, in the
periodic ``-v`` stats log line, and in ``ebpf-tracer stats``.

All three come from one ``snapshot()`` of the agent (``agent.stats()``), its
batcher (``ExportStats``) and its exporter (error counters), taken when asked:
a scrape costs the capture loop nothing.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import TracerError
from .export.batcher import DROP_REASONS
from .protocols.http2.side import Http2Stats

log = logging.getLogger(__name__)

DEFAULT_METRICS_ADDRESS = "127.0.0.1"
DEFAULT_METRICS_PORT = 9464  # the OpenTelemetry Prometheus exporter's customary port
PREFIX = "ebpf_tracer_"


# --- parse failures from parsers that have finished ---------------------------


# The per-connection counters ParserTotals sums (parse_errors first: also by protocol).
_TOTALLED = ("parse_errors", "partial_records", "unmatched_responses", "unmatched_requests",
             "dropped_requests")


class ParserTotals:
    """Parser counters summed over connections that ended.

    Each connection's parser (HTTP/1 or HTTP/2) keeps its own stats; the
    connection manager hands them to ``add`` when the connection is closed,
    evicted or expired, so these totals only grow.
    """

    def __init__(self) -> None:
        self.parse_errors = 0
        self.parse_errors_by_protocol: dict[str, int] = {"http1": 0, "http2": 0}
        self.partial_records = 0
        self.unmatched_responses = 0
        self.unmatched_requests = 0
        self.dropped_requests = 0

    def add(self, stats: object) -> None:
        counts = [getattr(stats, name, 0) for name in _TOTALLED]
        if not any(counts):
            return  # the common case (a clean connection, one per request): nothing to add
        errors = counts[0]
        # Http2Stats for HTTP/2 (and h2c) connections, the HTTP/1 parser's otherwise.
        self.parse_errors_by_protocol["http2" if isinstance(stats, Http2Stats) else "http1"] \
            += errors
        for name, n in zip(_TOTALLED, counts, strict=True):
            setattr(self, name, getattr(self, name) + n)


# --- the snapshot ---------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """Every number the agent reports about itself, at one moment."""

    spans_produced: int = 0
    spans_exported: int = 0
    spans_dropped: dict[str, int] = field(default_factory=dict)  # by reason
    export_errors: dict[str, int] = field(default_factory=dict)  # failed attempts by code
    export_queue: int = 0  # spans held: queued + in flight
    export_queue_capacity: int = 0
    backend_failing_s: float = 0.0
    ringbuf_lost: int = 0
    events: int = 0
    bytes_not_copied: int = 0
    http2_walks_lost: int = 0
    connections_tracked: int = 0
    parse_failures: dict[str, int] = field(default_factory=dict)  # by stage
    spans_unknown_fields: dict[str, int] = field(default_factory=dict)  # by field
    own_traffic_connections: int = 0  # the exporter's own, never traced (kernel)
    connections_unparseable: int = 0  # not the protocol the first bytes suggested
    # Messages without a span, by why (counted when their connection ends).
    messages_unmatched: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One log line."""
        def labelled(values: Mapping[str, int]) -> str:
            total = sum(values.values())
            parts = ",".join(f"{k}={v}" for k, v in sorted(values.items()) if v)
            return f"{total}({parts})" if parts else str(total)

        return (
            f"spans produced={self.spans_produced} exported={self.spans_exported} "
            f"dropped={labelled(self.spans_dropped)} "
            f"queue={self.export_queue}/{self.export_queue_capacity} "
            f"export_errors={labelled(self.export_errors)} "
            f"ringbuf_lost={self.ringbuf_lost} connections={self.connections_tracked} "
            f"parse_failures={labelled(self.parse_failures)} "
            f"unknown_fields={labelled(self.spans_unknown_fields)}"
        )


def snapshot(agent: Any) -> Snapshot:
    """Read the agent, its batcher and its exporter (any thread)."""
    stats: Mapping[str, int] = agent.stats()
    batcher = agent.batcher
    export = batcher.stats
    exporter = batcher.exporter
    dropped = {reason: 0 for reason in DROP_REASONS}
    dropped.update(export.spans_dropped)  # dict() copies are atomic under the GIL
    parse = {k.removeprefix("parse_failures_"): v for k, v in stats.items()
             if k.startswith("parse_failures_")}
    unknown = {k.removeprefix("spans_unknown_"): v for k, v in stats.items()
               if k.startswith("spans_unknown_") and k != "spans_unknown_fields"}
    return Snapshot(
        spans_produced=stats.get("spans_produced", 0),
        spans_exported=export.spans_exported,
        spans_dropped=dropped,
        export_errors=dict(getattr(exporter, "errors_by_code", {})),
        export_queue=batcher.pending,
        export_queue_capacity=batcher.max_queue_size,
        backend_failing_s=batcher.backend_failing_s,
        ringbuf_lost=stats.get("kernel_ringbuf_lost", 0),
        events=stats.get("events", 0),
        bytes_not_copied=stats.get("kernel_bytes_not_copied", 0),
        http2_walks_lost=stats.get("kernel_h2_walks_lost", 0),
        connections_tracked=stats.get("connections_tracked", 0),
        parse_failures=parse,
        spans_unknown_fields=unknown,
        own_traffic_connections=stats.get("kernel_own_traffic_conns", 0),
        connections_unparseable=stats.get("conn_unparseable", 0),
        messages_unmatched={k.removeprefix("unmatched_"): v for k, v in stats.items()
                            if k.startswith("unmatched_")},
    )


# --- Prometheus -----------------------------------------------------------------


class _Collector:
    """A prometheus_client collector that reads a fresh snapshot per scrape."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            snap = snapshot(self.agent)
        except Exception:  # a scrape must never take the agent down
            log.debug("metrics snapshot failed", exc_info=True)
            return

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, doc, value=value)

        def labelled(name: str, doc: str, label: str, values: Mapping[str, int],
                     kind: type = CounterMetricFamily) -> Any:
            family = kind(PREFIX + name, doc, labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([key], value)
            return family

        yield counter("spans_produced", "Spans built from traced traffic.", snap.spans_produced)
        yield counter("spans_exported", "Spans delivered to and accepted by the exporter's "
                      "backend.", snap.spans_exported)
        yield labelled("spans_dropped", "Spans lost, by reason: queue_full, export_failed "
                       "(non-retryable error), rejected_by_backend (partial success), "
                       "shutdown_timeout, after_shutdown.", "reason", snap.spans_dropped)
        yield labelled("export_errors", "Failed export attempts (retries included), by gRPC "
                       "status, HTTP status or network error.", "code", snap.export_errors)
        yield GaugeMetricFamily(PREFIX + "export_queue_spans", "Spans waiting to be exported "
                                "(queued or in flight).", value=snap.export_queue)
        yield GaugeMetricFamily(PREFIX + "export_queue_capacity_spans", "Export queue bound "
                                "(OTEL_BSP_MAX_QUEUE_SIZE).", value=snap.export_queue_capacity)
        yield GaugeMetricFamily(PREFIX + "export_backend_failing_seconds", "How long exports "
                                "have been failing with retryable errors (0 when healthy).",
                                value=snap.backend_failing_s)
        yield counter("ringbuf_events_lost", "Kernel events lost because the ring buffer was "
                      "full.", snap.ringbuf_lost)
        yield counter("events", "Kernel events read from the ring buffer.", snap.events)
        yield counter("bytes_not_copied", "Payload bytes not copied: beyond the per-syscall "
                      "copy limit, or after an HTTP/2 frame walk gave up.", snap.bytes_not_copied)
        yield counter("http2_walks_lost", "HTTP/2 connection directions whose frame walk the "
                      "kernel gave up (head and tail copies from then on).",
                      snap.http2_walks_lost)
        yield GaugeMetricFamily(PREFIX + "connections_tracked", "Connections being tracked.",
                                value=snap.connections_tracked)
        yield labelled("parse_failures", "Records or bytes that could not be parsed, by stage "
                       "(record: undecodable kernel record; http1, http2: framing errors, "
                       "counted when the connection ends).", "stage", snap.parse_failures)
        yield labelled("spans_unknown_fields", "Spans exported with a field that could not be "
                       "determined, by field.", "field", snap.spans_unknown_fields)
        yield counter("connections_unparseable", "Connections dropped from tracing because "
                      "their bytes were not the protocol they first looked like (run with -v "
                      "for the reason).", snap.connections_unparseable)
        yield labelled("messages_unmatched", "Messages that made no span, counted when their "
                       "connection ends: request_no_response (closed first, or the response "
                       "was lost), response_no_request (joined mid-stream, or the request was "
                       "lost), request_queue_full (too many pipelined requests).", "kind",
                       snap.messages_unmatched)
        yield counter("own_traffic_connections", "Connections from this agent's exporter to "
                      "a traced collector, left untraced by the kernel (no export loop).",
                      snap.own_traffic_connections)


class MetricsServer:
    """Serves /metrics for ``agent`` on ``address:port`` (port 0: any free port)."""

    def __init__(self, agent: Any, port: int, address: str = DEFAULT_METRICS_ADDRESS) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(agent))  # type: ignore[arg-type]
        try:
            self._server, self._thread = start_http_server(port, addr=address,
                                                           registry=self.registry)
        except OSError as exc:
            raise TracerError(
                f"--metrics-port {port}: cannot listen on {address}:{port}: {exc.strerror}; "
                "choose another port (or --metrics-address)"
            ) from None
        self.address = address
        self.port = self._server.server_port
        log.info("metrics on http://%s:%d/metrics", _host(address), self.port)

    def close(self) -> None:
        server = self._server
        # serve_forever's shutdown() blocks until the loop notices; do it aside.
        threading.Thread(target=server.shutdown, daemon=True).start()
        server.server_close()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# --- `ebpf-tracer stats` ------------------------------------------------------------


def fetch(url: str, timeout_s: float = 5.0) -> dict[str, dict[tuple[str, ...], float]]:
    """Scrape ``url``; our metrics by name (without prefix and _total), each a map
    from label values to value."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TracerError(
            f"cannot read metrics from {url}: {reason}; is the agent running with "
            "--metrics-port?"
        ) from None
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        name = family.name.removeprefix(PREFIX)
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = tuple(v for _, v in sorted(sample.labels.items()))
            out.setdefault(name, {})[labels] = sample.value
    if not out:
        raise TracerError(f"{url} serves no ebpf_tracer_* metrics: is that an ebpf-tracer?")
    return out


def format_stats(metrics: Mapping[str, Mapping[tuple[str, ...], float]]) -> str:
    """The human view of ``fetch()``'s result."""

    def total(name: str) -> int:
        return int(sum(metrics.get(name, {}).values()))

    def detail(name: str) -> str:
        parts = [f"{'/'.join(k)}={int(v)}" for k, v in sorted(metrics.get(name, {}).items())
                 if v and k]
        return f"  ({', '.join(parts)})" if parts else ""

    rows = [
        ("spans produced", str(total("spans_produced")), ""),
        ("spans exported", str(total("spans_exported")), ""),
        ("spans dropped", str(total("spans_dropped")), detail("spans_dropped")),
        ("export errors", str(total("export_errors")), detail("export_errors")),
        ("export queue", f"{total('export_queue_spans')} / "
                         f"{total('export_queue_capacity_spans')}", ""),
        ("backend failing for", f"{total('export_backend_failing_seconds')}s", ""),
        ("ring-buffer events lost", str(total("ringbuf_events_lost")), ""),
        ("connections tracked", str(total("connections_tracked")), ""),
        ("parse failures", str(total("parse_failures")), detail("parse_failures")),
        ("spans with unknown fields", str(total("spans_unknown_fields")),
         detail("spans_unknown_fields")),
        ("messages without a span", str(total("messages_unmatched")),
         detail("messages_unmatched")),
        ("connections unparseable", str(total("connections_unparseable")), ""),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}{extra}" for name, value, extra in rows)
