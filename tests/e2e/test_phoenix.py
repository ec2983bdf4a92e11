"""A real third-party OTLP backend: Arize Phoenix receives the tracer's spans over
OTLP/HTTP and OTLP/gRPC, and its own REST API shows them with the right names
and attributes. One Phoenix serves the whole module (it takes ~15 s to start)."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.phoenix import PHOENIX_PYTHON, Phoenix

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory) -> Iterator[Phoenix]:
    if not PHOENIX_PYTHON.exists():
        pytest.fail("Arize Phoenix is not installed in .venv-phoenix: run `make setup` "
                    "(scripts/setup-phoenix.sh)")
    server = Phoenix(tmp_path_factory.mktemp("phoenix"))
    server.start()
    yield server
    server.stop()


def env_for(**otel: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({f"OTEL_EXPORTER_OTLP_{k}": v for k, v in otel.items()})
    return env


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def check_spans(spans: list[dict], port: int) -> None:
    by_path = {s["attributes"]["url.path"]: s for s in spans}
    assert set(by_path) == {"/hello.txt", "/missing"}, [s["attributes"] for s in spans]
    ok, missing = by_path["/hello.txt"], by_path["/missing"]
    assert ok["name"] == "GET" and missing["name"] == "GET"
    assert ok["attributes"]["http.request.method"] == "GET"
    assert ok["attributes"]["http.response.status_code"] == 200
    assert missing["attributes"]["http.response.status_code"] == 404
    assert missing["attributes"]["url.query"] == "from=phoenix"
    assert ok["attributes"]["server.port"] == port
    assert ok["attributes"]["network.protocol.version"] in ("1.0", "1.1")
    assert ok["status_code"] == "UNSET" and missing["status_code"] == "UNSET"
    assert len(ok["context"]["trace_id"]) == 32 and len(ok["context"]["span_id"]) == 16
    assert ok["end_time"] >= ok["start_time"]


def test_phoenix_receives_spans_over_otlp_http(start_agent, python_server, phoenix):
    srv, port = python_server
    # Phoenix files spans under the project its x-project-name header names: the
    # header reaching a real backend is part of what this checks.
    env = env_for(ENDPOINT=phoenix.base_url, PROTOCOL="http/protobuf",
                  HEADERS="x-project-name=ebpf-http", COMPRESSION="gzip")
    # Phoenix itself is traced too (a local collector given to attach): the
    # tracer's own exports to it must not come back as spans, or they would loop.
    agent = start_agent("attach", "--pid", str(srv.pid), "--pid", str(phoenix.proc.pid),
                        env=env)
    assert get(port, "/hello.txt") == 200
    assert get(port, "/missing?from=phoenix") == 404
    spans = phoenix.wait_for_spans(lambda s: s["attributes"].get("server.port") == port, 2,
                                   project="ebpf-http")
    time.sleep(1.5)  # a few more export rounds: any loop would show by now
    rc, _, err = agent.stop()
    assert rc == 0, err
    check_spans(spans, port)
    own = [s for s in phoenix.spans("ebpf-http") if s["attributes"].get("url.path") == "/v1/traces"]
    assert own == [], "the tracer traced its own exports"
    # Phoenix's REST API, which this test queried, is ordinary traffic: traced.
    assert any(s["attributes"].get("url.path", "").startswith("/v1/projects")
               for s in phoenix.spans("ebpf-http"))


def test_phoenix_receives_spans_over_otlp_grpc(start_agent, python_server, phoenix,
                                               tmp_path: Path):
    srv, port = python_server
    # Settings from a --config file this time, as a user might keep them.
    config = tmp_path / "tracer.yaml"
    config.write_text(f"exporter: otlp\notlp:\n  endpoint: {phoenix.grpc_endpoint}\n"
                      "  protocol: grpc\n")
    agent = start_agent("attach", "--pid", str(srv.pid), "--config", str(config),
                        env=env_for())
    assert get(port, "/hello.txt") == 200
    assert get(port, "/missing?from=phoenix") == 404
    # Over gRPC without a project attribute, Phoenix files them under "default".
    spans = phoenix.wait_for_spans(lambda s: s["attributes"].get("server.port") == port, 2)
    rc, _, err = agent.stop()
    assert rc == 0, err
    check_spans(spans, port)
