"""A minimal Kubernetes API client: GET, list and watch, nothing else.

Plain `http.client` with the in-cluster service-account config, rather than
the `kubernetes` package: the agent needs three read-only calls, and the
official client would add tens of MB to an agent that must stay small on
every node.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def in_cluster() -> bool:
    """Running in a pod (the kubelet sets these for every container)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


@dataclass(slots=True)
class ApiConfig:
    base_url: str
    token_file: str | None = None  # re-read per connection: bound tokens rotate
    ca_file: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, sa_dir: str = SA_DIR) -> ApiConfig:
        """In-cluster config; EBPF_TRACER_K8S_API overrides the server URL."""
        url = os.environ.get("EBPF_TRACER_K8S_API")
        if not url:
            host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if ":" in host:
                host = f"[{host}]"
            url = f"https://{host}:{port}"
        token = os.path.join(sa_dir, "token")
        ca = os.path.join(sa_dir, "ca.crt")
        return cls(url, token if os.path.exists(token) else None,
                   ca if os.path.exists(ca) else None)


class ApiClient:
    def __init__(self, cfg: ApiConfig) -> None:
        self.cfg = cfg
        u = urlsplit(cfg.base_url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "localhost"
        self._port = u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self._ssl: ssl.SSLContext | None = None
        if self._https:
            self._ssl = ssl.create_default_context(cafile=cfg.ca_file)

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "ebpf-tracer"}
        if self.cfg.token_file:
            try:
                with open(self.cfg.token_file) as f:
                    h["Authorization"] = "Bearer " + f.read().strip()
            except OSError:
                pass
        return h

    def _url(self, path: str, params: dict[str, Any] | None) -> str:
        q = {k: v for k, v in (params or {}).items() if v is not None}
        return self._prefix + path + ("?" + urlencode(q) if q else "")

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        conn = self._conn(self.cfg.timeout_s)
        try:
            conn.request("GET", self._url(path, params), headers=self._headers())
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise ApiError(resp.status, _message(body))
            return json.loads(body)
        finally:
            conn.close()

    def watch(self, path: str, params: dict[str, Any], read_timeout_s: float,
              on_open: Any = None) -> Iterator[dict[str, Any]]:
        """Watch events, one JSON object per line, until the server ends the stream.

        `on_open(conn)` receives the connection so another thread can close it
        to stop a watch that is waiting for events.
        """
        conn = self._conn(read_timeout_s)
        try:
            conn.request("GET", self._url(path, {**params, "watch": "1"}),
                         headers=self._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                raise ApiError(resp.status, _message(resp.read()))
            if on_open:
                on_open(conn)
            while True:
                line = resp.readline()
                if not line:
                    return
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            conn.close()


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body).get("message", ""))[:300]
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")
