"""Records to neutral Spans, with the stable OpenTelemetry HTTP and RPC conventions.

Only the headers named by the conventions (Host, User-Agent, Content-Length; for HTTP/2
:authority, content-type, grpc-status, grpc-message) are read; no other header value
(Authorization, Cookie, ...) ever reaches a span.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .model import AttrGroup, AttrValue, ConnMeta, Resource, Role, Span, SpanKind, StatusCode
from .protocols.http1 import Http1Record
from .protocols.http1.head import KNOWN_METHODS
from .protocols.http2 import Http2Record
from .protocols.http2 import grpc as g

# Enum members as module constants: an attribute lookup on an Enum class costs
# ~0.15 us in Python 3.11, several per span.
_CLIENT, _SERVER = SpanKind.CLIENT, SpanKind.SERVER
_ROLE_CLIENT = Role.CLIENT
_UNSET, _ERROR = StatusCode.UNSET, StatusCode.ERROR
_DEFAULT_PORT = {"http": 80, "https": 443}
# Query keys whose values the conventions say to redact (signed URLs).
_SENSITIVE_QUERY_KEYS = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})


def http1_span(
    record: Http1Record, conn: ConnMeta, resource: Resource, clock_offset_ns: int = 0
) -> Span:
    """Build the span of one HTTP/1 exchange. An UNKNOWN role is treated as SERVER."""
    client = conn.role == _ROLE_CLIENT
    headers = record.request_headers
    host_header = headers.get("host")
    # What the request alone decides (name, method, URL, origin) is the same for
    # every repeat of a request: computed once per distinct request, then shared.
    key = (record.method, record.target, host_header, client, conn.tls,
           None if host_header else (conn.peer_addr, conn.peer_port) if client
           else (conn.local_addr, conn.local_port))
    part = _REQUEST_PART.get(key)
    if part is None:
        if len(_REQUEST_PART) >= _GROUPS_MAX:
            _REQUEST_PART.clear()
        name, base = _request_part(record, conn, client, host_header)
        part = _REQUEST_PART[key] = (name, AttrGroup(base))
    name, request_group = part
    attrs: dict[str, AttrValue] = {"network.protocol.version": record.request_version}
    status = record.status
    if status is not None:
        attrs["http.response.status_code"] = status
    if record.request_body_size > 0 or "content-length" in headers:
        attrs["http.request.body.size"] = record.request_body_size
    if record.response_body_size > 0 or (
        "content-length" in record.response_headers
        and _response_has_body(record.method, status)
    ):
        attrs["http.response.body.size"] = record.response_body_size
    ua = headers.get("user-agent")
    if ua:
        attrs["user_agent.original"] = ua
    if record.partial:
        attrs["ebpf_tracer.partial"] = record.partial

    status_code = _UNSET
    if status is not None and status >= (400 if client else 500):
        status_code = _ERROR
        attrs["error.type"] = str(status)

    return Span(name, _CLIENT if client else _SERVER, record.start_ns + clock_offset_ns,
                record.end_ns + clock_offset_ns, resource, attrs, status_code,
                shared=(request_group, _peer_group(conn, client)))


def _peer_group(conn: ConnMeta, client: bool) -> AttrGroup:
    """The peer attributes of a connection's spans, shared by its spans (and any
    other connection's from the same address and port)."""
    key = (conn.peer_addr, conn.peer_port, client)
    group = _PEER_PART.get(key)
    if group is None:
        if len(_PEER_PART) >= _GROUPS_MAX:
            _PEER_PART.clear()
        attrs: dict[str, AttrValue] = {}
        _peer_attrs(attrs, conn, client)
        group = _PEER_PART[key] = AttrGroup(attrs)
    return group


def _peer_attrs(attrs: dict[str, AttrValue], conn: ConnMeta, client: bool) -> None:
    """The socket's peer: the client of a server span, and the network peer of any."""
    if not client:
        if conn.peer_addr:
            attrs["client.address"] = conn.peer_addr
        if conn.peer_port is not None:
            attrs["client.port"] = conn.peer_port
    if conn.peer_addr:
        attrs["network.peer.address"] = conn.peer_addr
    if conn.peer_port is not None:
        attrs["network.peer.port"] = conn.peer_port


# Request-derived span parts by (method, target, Host, client?, TLS?, fallback
# origin), and peer attributes by (address, port, client?): bounded, cleared when
# full; they hold only strings already in spans.
_REQUEST_PART: dict[tuple, tuple[str, AttrGroup]] = {}
_PEER_PART: dict[tuple, AttrGroup] = {}
_GROUPS_MAX = 4096


def _request_part(record: Http1Record, conn: ConnMeta, client: bool,
                  host_header: str | None) -> tuple[str, dict[str, AttrValue]]:
    """The span name and the attributes only the request (and its socket's
    fallback origin) decides, in the order spans list them."""
    attrs: dict[str, AttrValue] = {}
    method = record.method
    if method in KNOWN_METHODS:
        attrs["http.request.method"] = method
        name = method
    else:
        attrs["http.request.method"] = "_OTHER"
        attrs["http.request.method_original"] = method
        name = "HTTP"

    scheme = "https" if conn.tls else "http"
    path, query, uri_host, uri_port = _split_target(record.target)
    if uri_host is not None and "://" in record.target:
        scheme = record.target.split("://", 1)[0].lower() or scheme
    attrs["url.scheme"] = scheme
    if path is not None:
        attrs["url.path"] = path
    if query:
        query = _redact_query(query)
        attrs["url.query"] = query

    # The origin: absolute-form target, else Host, else the socket's address.
    if uri_host is not None:
        host, port = uri_host, uri_port
    elif host_header:
        host, port = _split_host(host_header)
    else:
        host, port = None, None
    if host:
        explicit_port = port
        if port is None:
            port = _DEFAULT_PORT.get(scheme)
    else:
        host, port = (conn.peer_addr, conn.peer_port) if client else (
            conn.local_addr, conn.local_port)
        explicit_port = port
    if host:
        attrs["server.address"] = host
    if port is not None:
        attrs["server.port"] = port
    if client and host and path is not None:
        attrs["url.full"] = _url_full(scheme, host, explicit_port, path, query)
    return name, attrs


def _split_target(target: str) -> tuple[str | None, str, str | None, int | None]:
    """(path, query, host, port) of a request-target in any of its four forms."""
    if target.startswith("/"):  # origin-form, the common case
        path, _, query = target.partition("?")
        return path, query, None, None
    if target == "*":  # asterisk-form (OPTIONS *)
        return None, "", None, None
    if "://" in target:  # absolute-form (to proxies)
        try:
            parts = urlsplit(target)
            host = parts.hostname
            port = parts.port
        except ValueError:
            return None, "", None, None
        return parts.path or "/", parts.query, host, port
    host, port = _split_host(target)  # authority-form (CONNECT)
    return None, "", host or None, port


def _split_host(value: str) -> tuple[str, int | None]:
    """Host and port of a Host header or authority ("h", "h:80", "[::1]:80")."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        host, rest = value[1:end], value[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if port.isascii() and port.isdigit() and len(port) <= 5:
        return host, int(port)
    return host, None


def _url_full(scheme: str, host: str, port: int | None, path: str, query: str) -> str:
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORT.get(scheme):
        host = f"{host}:{port}"
    url = f"{scheme}://{host}{path}"
    return f"{url}?{query}" if query else url


def _redact_query(query: str) -> str:
    if "ig" not in query and "AWSAccessKeyId" not in query:
        return query  # none of the sensitive keys can be present
    parts = query.split("&")
    for i, part in enumerate(parts):
        key, sep, _ = part.partition("=")
        if sep and key in _SENSITIVE_QUERY_KEYS:
            parts[i] = key + "=REDACTED"
    return "&".join(parts)


def _response_has_body(method: str, status: int | None) -> bool:
    if status is None or status < 200 or status in (204, 304):
        return False
    return method != "HEAD"


# gRPC server spans are errors only for these codes (RPC semantic conventions).
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


def record_span(
    record: Http1Record | Http2Record, conn: ConnMeta, resource: Resource,
    clock_offset_ns: int = 0,
) -> Span:
    """The span of any protocol record (an Http2Connection may hand back HTTP/1 ones)."""
    if isinstance(record, Http2Record):
        return http2_span(record, conn, resource, clock_offset_ns=clock_offset_ns)
    return http1_span(record, conn, resource, clock_offset_ns=clock_offset_ns)


def http2_span(
    record: Http2Record, conn: ConnMeta, resource: Resource, *, clock_offset_ns: int = 0
) -> Span:
    """Build the span of one HTTP/2 stream: an RPC span for gRPC, else an HTTP span.

    Fields the record could not decode (joined mid-connection) are left out and named in
    ``ebpf_tracer.unknown_fields``. An UNKNOWN role is treated as SERVER.
    """
    client = conn.role == _ROLE_CLIENT
    attrs: dict[str, AttrValue] = {}
    host, port, explicit_port = _h2_origin(record, conn, client)
    if record.is_grpc:
        name, status_code = _grpc_attrs(record, attrs, client)
        if host:
            attrs["server.address"] = host
        if port is not None:
            attrs["server.port"] = port
    else:
        name, status_code = _h2_http_attrs(record, attrs, conn, client, host, port, explicit_port)
    _peer_attrs(attrs, conn, client)
    attrs["network.protocol.version"] = "2"
    if record.partial:
        attrs["ebpf_tracer.partial"] = record.partial
    if record.unknown_fields:
        attrs["ebpf_tracer.unknown_fields"] = ",".join(sorted(record.unknown_fields))
    return Span(
        name=name,
        kind=_CLIENT if client else _SERVER,
        start_time_ns=record.start_ns + clock_offset_ns,
        end_time_ns=record.end_ns + clock_offset_ns,
        resource=resource,
        attributes=attrs,
        status_code=status_code,
    )


def _h2_origin(
    record: Http2Record, conn: ConnMeta, client: bool
) -> tuple[str | None, int | None, int | None]:
    """(host, port, port as written) of the origin: :authority, else the socket."""
    scheme = record.scheme or ("https" if conn.tls else "http")
    if record.authority:
        host, port = _split_host(record.authority.rpartition("@")[2])
        explicit = port
        if port is None:
            port = _DEFAULT_PORT.get(scheme)
        if host:
            return host, port, explicit
    host, port = (conn.peer_addr, conn.peer_port) if client else (
        conn.local_addr, conn.local_port)
    return host, port, port


def _h2_http_attrs(
    record: Http2Record, attrs: dict[str, AttrValue], conn: ConnMeta, client: bool,
    host: str | None, port: int | None, explicit_port: int | None,
) -> tuple[str, StatusCode]:
    method = record.method
    if method is None:
        name = "HTTP"  # unknown: not even "_OTHER" can be said
    elif method in KNOWN_METHODS:
        attrs["http.request.method"] = name = method
    else:
        attrs["http.request.method"] = "_OTHER"
        attrs["http.request.method_original"] = method
        name = "HTTP"
    scheme = record.scheme or ("https" if conn.tls else "http")
    if record.scheme is not None or ":scheme" not in record.unknown_fields:
        attrs["url.scheme"] = scheme
    path = query = None
    if record.path is not None:
        path, query, _, _ = _split_target(record.path)
        if path is not None:
            attrs["url.path"] = path
        if query:
            query = attrs["url.query"] = _redact_query(query)
    if host:
        attrs["server.address"] = host
    if port is not None:
        attrs["server.port"] = port
    if client and host and path is not None:
        attrs["url.full"] = _url_full(scheme, host, explicit_port, path, query or "")
    status = record.status
    if status is not None:
        attrs["http.response.status_code"] = status
    if record.request_body_size:
        attrs["http.request.body.size"] = record.request_body_size
    if record.response_body_size:
        attrs["http.response.body.size"] = record.response_body_size
    ua = record.request_headers.get("user-agent")
    if ua:
        attrs["user_agent.original"] = ua
    if status is not None and status >= (400 if client else 500):
        attrs["error.type"] = str(status)
        return name, StatusCode.ERROR
    ended_by = _abnormal_end(record)
    if ended_by is not None:
        attrs["error.type"] = g.h2_error_name(ended_by) if ended_by >= 0 else "RST_STREAM"
        return name, StatusCode.ERROR
    return name, StatusCode.UNSET


def _abnormal_end(record: Http2Record) -> int | None:
    """The HTTP/2 error code that ended an unfinished stream (-1: reset, code unknown)."""
    if record.response_complete:
        return None
    if record.reset_code is not None:
        return record.reset_code
    return record.goaway_code


def _grpc_attrs(
    record: Http2Record, attrs: dict[str, AttrValue], client: bool
) -> tuple[str, StatusCode]:
    attrs["rpc.system"] = "grpc"
    name = "grpc"
    path = record.path
    if path is not None and path.startswith("/"):
        service, sep, method = path[1:].partition("/")
        if sep and service and method and "/" not in method:
            attrs["rpc.service"] = service
            attrs["rpc.method"] = method
            name = f"{service}/{method}"
    code = _grpc_status(record)
    if record.request_messages is not None:
        attrs["ebpf_tracer.rpc.request.messages"] = record.request_messages
    if record.response_messages is not None:
        attrs["ebpf_tracer.rpc.response.messages"] = record.response_messages
    if code is None:
        return name, StatusCode.UNSET
    attrs["rpc.grpc.status_code"] = code
    if code == g.OK:
        return name, StatusCode.UNSET
    attrs["error.type"] = g.status_name(code)
    if client or code in _GRPC_SERVER_ERRORS:
        return name, StatusCode.ERROR
    return name, StatusCode.UNSET


def _grpc_status(record: Http2Record) -> int | None:
    """The call's status: grpc-status, else what gRPC's spec maps the stream's end to."""
    if record.grpc_status is not None:
        return record.grpc_status
    ended_by = _abnormal_end(record)
    if ended_by is not None:
        if record.reset_code is not None and ended_by >= 0:
            return g.status_from_reset(ended_by)  # RST_STREAM CANCEL -> CANCELLED
        if record.reset_code is None:
            return g.UNAVAILABLE  # refused or cut by GOAWAY
        return None
    if "grpc-status" in record.unknown_fields or record.partial:
        return None
    if record.status is not None and record.status != 200:
        return g.status_from_http(record.status)
    if record.response_complete:
        return g.UNKNOWN  # a finished call without any status
    return None
