"""Self-metrics: the snapshot, the Prometheus endpoint, `stats` formatting and
parser totals."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator, Sequence

import pytest

from ebpf_tracer.agent import Agent
from ebpf_tracer.config import Config
from ebpf_tracer.errors import TracerError
from ebpf_tracer.export import BatchSpanProcessor
from ebpf_tracer.export.retry import Outcome
from ebpf_tracer.metrics import MetricsServer, ParserTotals, fetch, format_stats, snapshot
from ebpf_tracer.model import Direction, Resource, Role, Span, SpanKind

RESOURCE = Resource.from_dict({"service.name": "svc"})


class FailingExporter:
    """Refuses everything (non-retryable) and counts errors like the OTLP transports."""

    def __init__(self) -> None:
        self.errors_by_code: dict[str, int] = {}
        self.entered = threading.Event()
        self.gate = threading.Event()

    def export(self, spans: Sequence[Span]) -> Outcome:
        self.entered.set()
        self.gate.wait(10)
        self.errors_by_code["401"] = self.errors_by_code.get("401", 0) + 1
        return Outcome(ok=False, code="401")

    def shutdown(self) -> None:
        pass


class FakeAgent:
    def __init__(self) -> None:
        self.exporter = FailingExporter()
        self.batcher = BatchSpanProcessor(self.exporter, max_queue_size=10,
                                          max_export_batch_size=10, schedule_delay_s=60)

    def stats(self) -> dict[str, int]:
        return {
            "events": 1000, "spans_produced": 15, "connections_tracked": 3,
            "kernel_ringbuf_lost": 7, "kernel_bytes_not_copied": 11, "kernel_h2_walks_lost": 2,
            "parse_failures_record": 1, "parse_failures_http1": 2,
            "spans_unknown_status_code": 4, "spans_unknown_peer_address": 0,
            "spans_unknown_framing": 1, "own_traffic_dropped": 0,
            "unmatched_request_no_response": 6, "conn_unparseable": 2,
        }


@pytest.fixture
def agent():
    a = FakeAgent()

    def produce(count: int) -> None:
        for i in range(count):
            a.batcher.on_end(Span(name=str(i), kind=SpanKind.SERVER, start_time_ns=1,
                                  end_time_ns=2, resource=RESOURCE))

    produce(10)  # a full batch: goes to the exporter, which holds it
    assert a.exporter.entered.wait(5)
    produce(15)  # 5 overflow the queue of 10
    a.exporter.gate.set()
    assert a.batcher.force_flush(timeout_s=5)  # both batches refused (401)
    yield a
    a.batcher.shutdown(timeout_s=1)


def test_snapshot_adds_up(agent: FakeAgent) -> None:
    snap = snapshot(agent)
    assert snap.spans_produced == 15 and snap.spans_exported == 0
    assert snap.spans_dropped["queue_full"] == 5
    assert snap.spans_dropped["export_failed"] == 20
    assert snap.spans_dropped["shutdown_timeout"] == 0  # every reason is always present
    assert snap.export_errors == {"401": 2}
    assert (snap.export_queue, snap.export_queue_capacity) == (0, 10)
    assert (snap.ringbuf_lost, snap.connections_tracked) == (7, 3)
    assert snap.parse_failures == {"record": 1, "http1": 2}
    assert snap.spans_unknown_fields == {"status_code": 4, "peer_address": 0, "framing": 1}
    line = snap.describe()
    assert "dropped=25(export_failed=20,queue_full=5)" in line
    assert "export_errors=2(401=2)" in line and "queue=0/10" in line


def test_prometheus_endpoint_and_stats_view(agent: FakeAgent) -> None:
    server = MetricsServer(agent, 0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        assert 'ebpf_tracer_spans_dropped_total{reason="queue_full"} 5.0' in text
        assert 'ebpf_tracer_spans_dropped_total{reason="export_failed"} 20.0' in text
        assert 'ebpf_tracer_export_errors_total{code="401"} 2.0' in text
        assert "ebpf_tracer_spans_produced_total 15.0" in text
        assert "ebpf_tracer_ringbuf_events_lost_total 7.0" in text
        assert "ebpf_tracer_http2_walks_lost_total 2.0" in text
        assert "ebpf_tracer_connections_tracked 3.0" in text
        assert "ebpf_tracer_export_queue_spans 0.0" in text
        assert 'ebpf_tracer_parse_failures_total{stage="http1"} 2.0' in text
        assert 'ebpf_tracer_spans_unknown_fields_total{field="status_code"} 4.0' in text

        metrics = fetch(url)
        assert metrics["spans_dropped"][("queue_full",)] == 5
        view = format_stats(metrics)
        assert "spans dropped              25  (export_failed=20, queue_full=5)" in view
        assert "export errors              2  (401=2)" in view
        assert "ring-buffer events lost    7" in view
        assert "export queue               0 / 10" in view
        assert "messages without a span    6  (request_no_response=6)" in view
        assert "connections unparseable    2" in view
        assert 'ebpf_tracer_messages_unmatched_total{kind="request_no_response"} 6.0' in text
    finally:
        server.close()


def test_metrics_listen_on_loopback_by_default(agent: FakeAgent) -> None:
    server = MetricsServer(agent, 0)
    try:
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.close()


def test_a_busy_port_names_the_flag(agent: FakeAgent) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TracerError, match=f"--metrics-port {port}: cannot listen"):
            MetricsServer(agent, port, "127.0.0.1")


def test_fetch_explains_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TracerError, match="--metrics-port"):
        fetch(f"http://127.0.0.1:{port}/metrics", timeout_s=2)


def test_parser_totals_count_when_the_connection_ends() -> None:
    from ebpf_tracer.conn.manager import ConnManager

    totals = ParserTotals()
    conns = ConnManager(on_parser_done=totals.add)
    data = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    # fd -1 never exists: the manager keeps the bytes without resolving it.
    conns.on_data(1, -1, 7, int(Role.SERVER), int(Direction.INGRESS), 0, len(data), data, 1)
    parser = conns.trackers()[0].parser
    assert parser.stats.parse_errors >= 1
    assert totals.parse_errors == 0  # still open
    conns.on_close(1, -1, 7, 2)
    assert totals.parse_errors == parser.stats.parse_errors
    conns.on_close(1, -1, 7, 3)  # a second close adds nothing
    assert totals.parse_errors == parser.stats.parse_errors


def test_parser_totals_split_by_protocol() -> None:
    from ebpf_tracer.protocols.http1.connection import Http1Stats
    from ebpf_tracer.protocols.http2.side import Http2Stats

    totals = ParserTotals()
    h2, h1 = Http2Stats(), Http1Stats()
    h2.parse_errors, h1.parse_errors = 3, 2
    totals.add(h2)
    totals.add(h1)
    assert totals.parse_errors_by_protocol == {"http1": 2, "http2": 3}
    assert totals.parse_errors == 5


class NullExporter:
    def export(self, spans: Sequence[Span]) -> bool:
        return True

    def shutdown(self) -> None:
        pass


@pytest.fixture
def real_agent() -> Iterator[Agent]:
    """An Agent with no probes and an exporter that accepts everything."""
    a = Agent(Config(), exporter=NullExporter())
    yield a
    a.batcher.shutdown()


def test_http2_spans_with_unknown_fields_are_counted_by_field(real_agent: Agent) -> None:
    from ebpf_tracer.model import ConnMeta
    from ebpf_tracer.protocols.http2 import Http2Record

    a = real_agent
    meta = ConnMeta(1, 5, 1, Role.SERVER, "127.0.0.1", 80, "127.0.0.1", 5000)

    def rec(unknown: frozenset[str]) -> Http2Record:
        return Http2Record(1, "POST", "http", None, None, 200, {}, {}, 0, None, 0, 0, None,
                           None, 1, 2, True, unknown_fields=unknown)

    a._emit([(meta, rec(frozenset({":path", ":authority"}))),
             (meta, rec(frozenset({":path"}))), (meta, rec(frozenset()))])
    snap = snapshot(a)
    assert snap.spans_produced == 3
    assert snap.spans_unknown_fields["http2_header_fields"] == 2
    assert snap.spans_unknown_fields["path"] == 2
    assert snap.spans_unknown_fields["authority"] == 1


def test_requests_without_response_are_counted_when_the_connection_ends(
        real_agent: Agent) -> None:

    a = real_agent
    req = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
    a.conns.on_data(1, -1, 7, int(Role.SERVER), int(Direction.INGRESS), 0, len(req), req, 1)
    assert snapshot(a).messages_unmatched["request_no_response"] == 0
    a.conns.on_close(1, -1, 7, 2)
    snap = snapshot(a)
    assert snap.messages_unmatched == {"request_no_response": 2, "response_no_request": 0,
                                       "request_queue_full": 0}
