"""Arize Phoenix as a real third-party OTLP backend for the end-to-end tests.

Phoenix lives in its own virtualenv (``.venv-phoenix``, made by
``scripts/setup-phoenix.sh``) because its dependency tree is large. It is
started on 127.0.0.1 with free ports and a throwaway working directory, and
queried through its own REST API (``GET /v1/projects/{project}/spans``).

Phoenix binds its OTLP/gRPC server to ``[::]`` whatever PHOENIX_HOST says, so
it is launched through a small shim (``_SHIM``) that rewrites that bind address
to 127.0.0.1: test servers never listen beyond loopback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ebpf_tracer.loopback import free_port

ROOT = Path(__file__).resolve().parents[1]
PHOENIX_PYTHON = ROOT / ".venv-phoenix" / "bin" / "python"
HOST = "127.0.0.1"

_SHIM = """
import sys
import grpc.aio

_server = grpc.aio.server

def _loopback_server(*args, **kwargs):
    server = _server(*args, **kwargs)
    for name in ("add_insecure_port", "add_secure_port"):
        add = getattr(server, name)
        def bind(address, *rest, _add=add):
            return _add(address.replace("[::]", "127.0.0.1", 1), *rest)
        setattr(server, name, bind)
    return server

grpc.aio.server = _loopback_server
from phoenix.server.main import main
sys.argv = ["phoenix", "serve"]
sys.exit(main())
"""


class Phoenix:
    """One Phoenix server process on loopback."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log_path = workdir / "phoenix.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{HOST}:{self.grpc_port}"

    def start(self, timeout_s: float = 90.0) -> Phoenix:
        env = {
            **os.environ,
            "PHOENIX_HOST": HOST,
            "PHOENIX_PORT": str(self.http_port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(self.workdir / "data"),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_SQL_DATABASE_ECHO": "false",
        }
        # The tests' own OTEL settings must not make Phoenix trace itself.
        for key in list(env):
            if key.startswith("OTEL_"):
                del env[key]
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(PHOENIX_PYTHON), "-c", _SHIM], env=env, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Phoenix exited {self.proc.returncode}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"Phoenix not ready within {timeout_s:.0f}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as r:
                if r.status != 200:
                    return False
            socket.create_connection((HOST, self.grpc_port), 0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- Phoenix's own API ---------------------------------------------------

    def get(self, path: str, **query: Any) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span Phoenix stored in ``project`` (REST, newest first)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            query: dict[str, Any] = {"limit": 1000}
            if cursor:
                query["cursor"] = cursor
            try:
                page = self.get(f"/v1/projects/{urllib.parse.quote(project)}/spans", **query)
            except urllib.error.HTTPError as e:
                if e.code == 404:  # the project appears with its first span
                    return []
                raise
            out.extend(page["data"])
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def wait_for_spans(
        self, predicate: Any, count: int, project: str = "default", timeout_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """Spans of ``project`` matching ``predicate`` once ``count`` of them are stored."""
        deadline = time.monotonic() + timeout_s
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [s for s in self.spans(project) if predicate(s)]
            if len(found) >= count:
                return found
            time.sleep(0.5)
        raise AssertionError(
            f"Phoenix project {project!r}: wanted {count} matching span(s) within "
            f"{timeout_s:.0f}s, found {len(found)}"
        )
