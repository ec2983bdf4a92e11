"""Http1Record -> Span: stable HTTP semantic conventions, status rules, no secrets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ebpf_tracer.model import ConnMeta, Resource, Role, SpanKind, StatusCode
from ebpf_tracer.protocols.http1 import Http1Record
from ebpf_tracer.spans import http1_span

RESOURCE = Resource.from_dict({"service.name": "svc"})
SERVER = ConnMeta(pid=1, fd=3, generation=1, role=Role.SERVER, local_addr="10.0.0.1",
                  local_port=8080, peer_addr="10.0.0.2", peer_port=54321)
CLIENT = ConnMeta(pid=1, fd=4, generation=1, role=Role.CLIENT, local_addr="10.0.0.2",
                  local_port=54321, peer_addr="10.0.0.1", peer_port=8080)

SECRET_HEADERS = {
    "authorization": "Bearer s3cr3t",
    "cookie": "session=s3cr3t",
    "proxy-authorization": "Basic s3cr3t",
    "x-api-key": "s3cr3t",
}


def record(**kw: object) -> Http1Record:
    base = Http1Record(
        method="GET", target="/items/7?color=red&size=m", request_version="1.1",
        request_headers={"host": "shop.example:8080", "user-agent": "curl/8.0",
                         **SECRET_HEADERS},
        status=200, response_version="1.1",
        response_headers={"content-length": "12", "set-cookie": "session=s3cr3t"},
        request_body_size=0, response_body_size=12, start_ns=1_000, end_ns=5_000,
    )
    return replace(base, **kw)


def test_server_span_attributes() -> None:
    span = http1_span(record(), SERVER, RESOURCE, clock_offset_ns=10**18)
    assert span.name == "GET"
    assert span.kind == SpanKind.SERVER
    assert (span.start_time_ns, span.end_time_ns) == (10**18 + 1_000, 10**18 + 5_000)
    assert span.resource is RESOURCE
    assert span.status_code == StatusCode.UNSET
    assert span.attributes == {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": "/items/7",
        "url.query": "color=red&size=m",
        "server.address": "shop.example",
        "server.port": 8080,
        "client.address": "10.0.0.2",
        "client.port": 54321,
        "network.peer.address": "10.0.0.2",
        "network.peer.port": 54321,
        "network.protocol.version": "1.1",
        "http.response.status_code": 200,
        "http.response.body.size": 12,
        "user_agent.original": "curl/8.0",
    }


def test_client_span_attributes_and_url_full() -> None:
    span = http1_span(record(), CLIENT, RESOURCE)
    assert span.kind == SpanKind.CLIENT
    a = span.attributes
    assert a["url.full"] == "http://shop.example:8080/items/7?color=red&size=m"
    assert (a["server.address"], a["server.port"]) == ("shop.example", 8080)
    assert (a["network.peer.address"], a["network.peer.port"]) == ("10.0.0.1", 8080)
    assert "client.address" not in a


def test_client_url_full_from_the_peer_without_host() -> None:
    span = http1_span(record(request_headers={}, target="/x"), CLIENT, RESOURCE)
    assert span.attributes["url.full"] == "http://10.0.0.1:8080/x"
    assert span.attributes["server.address"] == "10.0.0.1"
    v6 = replace(CLIENT, peer_addr="::1", peer_port=80)
    span = http1_span(record(request_headers={}, target="/x"), v6, RESOURCE)
    assert span.attributes["url.full"] == "http://[::1]/x"


def test_tls_scheme_and_default_port() -> None:
    tls = replace(CLIENT, tls=True, peer_port=443)
    span = http1_span(record(request_headers={"host": "api.example"}, target="/"), tls, RESOURCE)
    a = span.attributes
    assert a["url.scheme"] == "https"
    assert a["url.full"] == "https://api.example/"
    assert a["server.port"] == 443


def test_server_address_falls_back_to_the_local_socket() -> None:
    span = http1_span(record(request_headers={}), SERVER, RESOURCE)
    assert (span.attributes["server.address"], span.attributes["server.port"]) == (
        "10.0.0.1", 8080
    )


def test_ipv6_host_header() -> None:
    span = http1_span(record(request_headers={"host": "[2001:db8::1]:8443"}), CLIENT, RESOURCE)
    assert span.attributes["server.address"] == "2001:db8::1"
    assert span.attributes["server.port"] == 8443
    assert span.attributes["url.full"].startswith("http://[2001:db8::1]:8443/items/7")


def test_absolute_form_target() -> None:
    rec = record(target="http://user:pw@proxy.example:3128/a/b?q=1", request_headers={})
    span = http1_span(rec, CLIENT, RESOURCE)
    a = span.attributes
    assert (a["url.path"], a["url.query"]) == ("/a/b", "q=1")
    assert (a["server.address"], a["server.port"]) == ("proxy.example", 3128)
    assert a["url.full"] == "http://proxy.example:3128/a/b?q=1"  # credentials never kept


def test_connect_and_asterisk_targets_have_no_path() -> None:
    span = http1_span(record(method="CONNECT", target="db.example:5432", request_headers={}),
                      CLIENT, RESOURCE)
    assert "url.path" not in span.attributes and "url.full" not in span.attributes
    assert (span.attributes["server.address"], span.attributes["server.port"]) == (
        "db.example", 5432
    )
    span = http1_span(record(method="OPTIONS", target="*"), SERVER, RESOURCE)
    assert "url.path" not in span.attributes


def test_no_query_attribute_without_a_query() -> None:
    span = http1_span(record(target="/plain"), SERVER, RESOURCE)
    assert "url.query" not in span.attributes
    span = http1_span(record(target="/plain?"), SERVER, RESOURCE)
    assert "url.query" not in span.attributes


def test_signed_query_values_are_redacted() -> None:
    span = http1_span(record(target="/o?X-Goog-Signature=abc&id=1&sig=zz"), CLIENT, RESOURCE)
    assert span.attributes["url.query"] == "X-Goog-Signature=REDACTED&id=1&sig=REDACTED"
    assert "abc" not in span.attributes["url.full"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                                    "TRACE", "PATCH"])
def test_known_methods_are_kept(method: str) -> None:
    span = http1_span(record(method=method), SERVER, RESOURCE)
    assert span.name == method
    assert span.attributes["http.request.method"] == method
    assert "http.request.method_original" not in span.attributes


@pytest.mark.parametrize("method", ["PROPFIND", "BREW", "get"])
def test_other_methods(method: str) -> None:
    span = http1_span(record(method=method), SERVER, RESOURCE)
    assert span.name == "HTTP"
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == method


@pytest.mark.parametrize(
    "role,status,error",
    [
        (SERVER, 200, False), (SERVER, 404, False), (SERVER, 499, False),
        (SERVER, 500, True), (SERVER, 503, True),
        (CLIENT, 200, False), (CLIENT, 399, False), (CLIENT, 400, True), (CLIENT, 404, True),
        (CLIENT, 500, True),
    ],
)
def test_error_status_rules(role: ConnMeta, status: int, error: bool) -> None:
    span = http1_span(record(status=status), role, RESOURCE)
    assert span.attributes["http.response.status_code"] == status
    if error:
        assert span.status_code == StatusCode.ERROR
        assert span.attributes["error.type"] == str(status)
    else:
        assert span.status_code == StatusCode.UNSET
        assert "error.type" not in span.attributes


@pytest.mark.parametrize("conn", [SERVER, CLIENT])
def test_no_sensitive_header_reaches_a_span(conn: ConnMeta) -> None:
    span = http1_span(record(), conn, RESOURCE)
    blob = repr(span.attributes) + span.name + span.status_message
    assert "s3cr3t" not in blob
    allowed = {"user_agent.original"}
    assert not [k for k in span.attributes if k.startswith("http.request.header")]
    assert not [k for k in span.attributes if k.startswith("http.response.header")]
    assert allowed <= set(span.attributes)


def test_body_sizes() -> None:
    span = http1_span(record(method="POST", request_body_size=7,
                             request_headers={"content-length": "7"}), SERVER, RESOURCE)
    assert span.attributes["http.request.body.size"] == 7
    # no body, no length given: no attribute
    span = http1_span(record(response_body_size=0, response_headers={}), SERVER, RESOURCE)
    assert "http.request.body.size" not in span.attributes
    assert "http.response.body.size" not in span.attributes
    # an explicit Content-Length: 0 is a known size
    span = http1_span(record(response_body_size=0, response_headers={"content-length": "0"}),
                      SERVER, RESOURCE)
    assert span.attributes["http.response.body.size"] == 0
    # HEAD: Content-Length describes the entity, not bytes sent
    span = http1_span(record(method="HEAD", response_body_size=0), SERVER, RESOURCE)
    assert "http.response.body.size" not in span.attributes


def test_partial_record_is_marked() -> None:
    span = http1_span(record(partial="response-body-lost"), SERVER, RESOURCE)
    assert span.attributes["ebpf_tracer.partial"] == "response-body-lost"
    assert "ebpf_tracer.partial" not in http1_span(record(), SERVER, RESOURCE).attributes


def test_http10_version_and_missing_status() -> None:
    span = http1_span(record(request_version="1.0", status=None), SERVER, RESOURCE)
    assert span.attributes["network.protocol.version"] == "1.0"
    assert "http.response.status_code" not in span.attributes
    assert span.status_code == StatusCode.UNSET


def test_unknown_role_is_reported_as_server() -> None:
    span = http1_span(record(), replace(SERVER, role=Role.UNKNOWN), RESOURCE)
    assert span.kind == SpanKind.SERVER


def test_fresh_ids_per_span() -> None:
    a = http1_span(record(), SERVER, RESOURCE)
    b = http1_span(record(), SERVER, RESOURCE)
    assert a.trace_id != b.trace_id and a.span_id != b.span_id
    assert len(a.trace_id) == 16 and len(a.span_id) == 8
