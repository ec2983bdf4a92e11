"""Http2Record -> Span: HTTP spans for HTTP/2, RPC spans for gRPC, unknown fields, no secrets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ebpf_tracer.model import ConnMeta, Resource, Role, SpanKind, StatusCode
from ebpf_tracer.protocols.http1 import Http1Record
from ebpf_tracer.protocols.http2 import Http2Record
from ebpf_tracer.spans import http2_span, record_span

from .http2_util import load_capture, replay

RESOURCE = Resource.from_dict({"service.name": "svc"})
SERVER = ConnMeta(pid=1, fd=3, generation=1, role=Role.SERVER, local_addr="10.0.0.1",
                  local_port=8080, peer_addr="10.0.0.2", peer_port=54321)
CLIENT = ConnMeta(pid=1, fd=4, generation=1, role=Role.CLIENT, local_addr="10.0.0.2",
                  local_port=54321, peer_addr="10.0.0.1", peer_port=8080)


def record(**kw: object) -> Http2Record:
    base = Http2Record(
        stream_id=1, method="GET", scheme="http", authority="shop.example:8080",
        path="/items/7?color=red", status=200,
        request_headers={"user-agent": "curl/8.0"}, response_headers={},
        grpc_status=None, grpc_message=None, request_body_size=0, response_body_size=12,
        request_messages=None, response_messages=None, start_ns=1_000, end_ns=5_000,
        response_complete=True,
    )
    return replace(base, **kw)


def grpc(**kw: object) -> Http2Record:
    return record(**{
        "method": "POST", "path": "/helloworld.Greeter/SayHello", "authority": "svc:50051",
        "request_headers": {"content-type": "application/grpc"},
        "response_headers": {"content-type": "application/grpc", "grpc-status": "0"},
        "grpc_status": 0, "request_messages": 1, "response_messages": 1, **kw})


def test_http_server_span() -> None:
    span = http2_span(record(), SERVER, RESOURCE, clock_offset_ns=10**18)
    assert span.name == "GET"
    assert span.kind == SpanKind.SERVER
    assert (span.start_time_ns, span.end_time_ns) == (10**18 + 1_000, 10**18 + 5_000)
    assert span.status_code == StatusCode.UNSET
    assert span.attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/items/7",
        "url.query": "color=red",
        "server.address": "shop.example",
        "server.port": 8080,
        "client.address": "10.0.0.2",
        "client.port": 54321,
        "network.peer.address": "10.0.0.2",
        "network.peer.port": 54321,
        "network.protocol.version": "2",
        "http.response.status_code": 200,
        "http.response.body.size": 12,
        "user_agent.original": "curl/8.0",
    }


def test_http_client_span_has_url_full() -> None:
    span = http2_span(record(), CLIENT, RESOURCE)
    assert span.kind == SpanKind.CLIENT
    assert span.attributes["url.full"] == "http://shop.example:8080/items/7?color=red"
    assert "client.address" not in span.attributes
    span = http2_span(record(authority=None), CLIENT, RESOURCE)
    assert span.attributes["url.full"] == "http://10.0.0.1:8080/items/7?color=red"


@pytest.mark.parametrize("conn, status, error", [
    (SERVER, 404, False), (SERVER, 500, True), (CLIENT, 404, True), (CLIENT, 302, False)])
def test_http_error_rules(conn: ConnMeta, status: int, error: bool) -> None:
    span = http2_span(record(status=status), conn, RESOURCE)
    assert (span.status_code == StatusCode.ERROR) == error
    assert (span.attributes.get("error.type") == str(status)) == error


def test_http_reset_stream_is_an_error() -> None:
    rec = record(status=None, response_complete=False, reset_code=8, reset_by=Role.CLIENT)
    for conn in (SERVER, CLIENT):
        span = http2_span(rec, conn, RESOURCE)
        assert span.status_code == StatusCode.ERROR
        assert span.attributes["error.type"] == "CANCEL"
    done = http2_span(record(reset_code=0), SERVER, RESOURCE)  # after a whole response
    assert done.status_code == StatusCode.UNSET
    refused = http2_span(record(status=None, response_complete=False, goaway_code=0),
                         CLIENT, RESOURCE)
    assert refused.attributes["error.type"] == "NO_ERROR"


def test_unknown_fields_keep_the_rest_and_say_so() -> None:
    rec = record(method=None, path=None, authority=None,
                 unknown_fields=frozenset({":method", ":path", ":authority"}))
    span = http2_span(rec, SERVER, RESOURCE)
    assert span.name == "HTTP"
    a = span.attributes
    assert a["ebpf_tracer.unknown_fields"] == ":authority,:method,:path"
    assert "http.request.method" not in a and "url.path" not in a
    assert (a["server.address"], a["server.port"]) == ("10.0.0.1", 8080)  # the socket's
    assert a["http.response.status_code"] == 200


def test_grpc_span() -> None:
    span = http2_span(grpc(), CLIENT, RESOURCE)
    assert span.name == "helloworld.Greeter/SayHello"
    assert span.kind == SpanKind.CLIENT
    assert span.status_code == StatusCode.UNSET
    assert span.attributes == {
        "rpc.system": "grpc",
        "rpc.service": "helloworld.Greeter",
        "rpc.method": "SayHello",
        "rpc.grpc.status_code": 0,
        "server.address": "svc",
        "server.port": 50051,
        "network.peer.address": "10.0.0.1",
        "network.peer.port": 8080,
        "network.protocol.version": "2",
        "ebpf_tracer.rpc.request.messages": 1,
        "ebpf_tracer.rpc.response.messages": 1,
    }


@pytest.mark.parametrize("code", range(17))
def test_grpc_status_rules(code: int) -> None:
    from ebpf_tracer.protocols.http2.grpc import STATUS_NAMES
    server_errors = {2, 4, 12, 13, 14, 15}
    for conn, error in ((CLIENT, code != 0), (SERVER, code in server_errors)):
        span = http2_span(grpc(grpc_status=code), conn, RESOURCE)
        assert span.attributes["rpc.grpc.status_code"] == code
        assert (span.status_code == StatusCode.ERROR) == error
        if code:
            assert span.attributes["error.type"] == STATUS_NAMES[code]
        else:
            assert "error.type" not in span.attributes


def test_grpc_cancelled_by_the_client() -> None:
    rec = grpc(grpc_status=None, response_headers={"content-type": "application/grpc"},
               response_complete=False, reset_code=8, reset_by=Role.CLIENT)
    client = http2_span(rec, CLIENT, RESOURCE)
    assert client.attributes["rpc.grpc.status_code"] == 1
    assert client.attributes["error.type"] == "CANCELLED"
    assert client.status_code == StatusCode.ERROR
    server = http2_span(rec, SERVER, RESOURCE)
    assert server.attributes["rpc.grpc.status_code"] == 1
    assert server.status_code == StatusCode.UNSET  # CANCELLED is not a server error


def test_grpc_statuses_without_grpc_status() -> None:
    refused = grpc(grpc_status=None, status=None, response_complete=False, goaway_code=0)
    assert http2_span(refused, CLIENT, RESOURCE).attributes["rpc.grpc.status_code"] == 14
    http404 = grpc(grpc_status=None, status=404, response_headers={})
    assert http2_span(http404, CLIENT, RESOURCE).attributes["rpc.grpc.status_code"] == 12
    reset = grpc(grpc_status=None, response_complete=False, reset_code=2)
    assert http2_span(reset, SERVER, RESOURCE).attributes["rpc.grpc.status_code"] == 13
    unknown = grpc(grpc_status=None, unknown_fields=frozenset({"grpc-status"}))
    span = http2_span(unknown, CLIENT, RESOURCE)
    assert "rpc.grpc.status_code" not in span.attributes
    assert span.attributes["ebpf_tracer.unknown_fields"] == "grpc-status"
    assert span.status_code == StatusCode.UNSET


def test_grpc_unknown_path_falls_back_to_the_system_name() -> None:
    span = http2_span(grpc(path=None, unknown_fields=frozenset({":path"})), SERVER, RESOURCE)
    assert span.name == "grpc"
    assert "rpc.service" not in span.attributes
    assert span.attributes["rpc.grpc.status_code"] == 0


def test_no_other_header_value_reaches_a_span() -> None:
    """Real traffic with secrets in its headers: none appear in any span."""
    from .http2_util import H2Pair
    p = H2Pair()
    sid = p.request("/x", headers=[("authorization", "Bearer s3cr3t"), ("cookie", "s3cr3t")])
    p.respond(sid, 200, b"ok", headers=[("set-cookie", "s3cr3t")])
    (rec,), _ = replay(p.chunks, Role.SERVER)
    for conn in (SERVER, CLIENT):
        span = http2_span(rec, conn, RESOURCE)
        assert not any("s3cr3t" in str(v) for v in span.attributes.values())


@pytest.mark.parametrize("name", ["grpc_unary", "grpc_errors", "grpc_cancel", "node_h2c",
                                  "nghttpd_nghttp", "h2c_upgrade", "h2c_declined"])
def test_spans_from_captures(name: str) -> None:
    for role, conn in ((Role.SERVER, SERVER), (Role.CLIENT, CLIENT)):
        records, _ = replay(load_capture(name), role)
        spans = [record_span(r, conn, RESOURCE) for r in records]
        assert len(spans) == len(records)
        for r, s in zip(records, spans, strict=True):
            if isinstance(r, Http1Record):
                assert s.attributes["network.protocol.version"] == "1.1"
            elif r.is_grpc:
                assert s.name.startswith("helloworld.Greeter/")
                assert s.attributes["rpc.system"] == "grpc"
            else:
                assert s.attributes["network.protocol.version"] == "2"
    if name == "grpc_errors":
        codes = [s.attributes["rpc.grpc.status_code"] for s in spans]
        assert codes == [5, 12, 13, 0]
        assert [s.status_code for s in spans] == [StatusCode.ERROR] * 3 + [StatusCode.UNSET]
    if name == "grpc_cancel":
        assert [s.attributes["rpc.grpc.status_code"] for s in spans] == [1, 1, 0]


def test_server_ending_a_call_early_is_not_a_reset_error() -> None:
    """Trailers then RST_STREAM(NO_ERROR): the status is the trailers' one."""
    (rec,), _ = replay(load_capture("grpc_early_abort"), Role.SERVER)
    assert (rec.reset_code, rec.response_complete) == (0, True)
    server = http2_span(rec, SERVER, RESOURCE)
    assert server.attributes["rpc.grpc.status_code"] == 3
    assert server.status_code == StatusCode.UNSET  # INVALID_ARGUMENT: not a server error
    assert http2_span(rec, CLIENT, RESOURCE).status_code == StatusCode.ERROR
