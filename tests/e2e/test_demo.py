"""`make demo` (`ebpf-tracer demo`), the README's first command: it must trace its
bundled server and client and print their spans."""

from __future__ import annotations

import re
import subprocess

from tests.e2e.conftest import TRACER


def test_demo_prints_the_server_and_client_spans():
    p = subprocess.run([str(TRACER), "demo"], capture_output=True, text=True, timeout=180)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "ebpf-tracer demo: 10 spans" in out, out
    for kind in ("SERVER", "CLIENT"):
        for path, code in (("/", 200), ("/api/products?page=2", 200), ("/api/slow", 200),
                           ("/missing", 404)):
            assert re.search(rf"{kind} GET {re.escape(path)} -> {code} ", out), (kind, path, out)
        assert re.search(rf"{kind} POST /api/orders -> 201 ", out), out
    assert re.search(r"demo-shop SERVER GET /api/slow -> 200 (5\d|[6-9]\d|\d{3,})\.\d\dms", out), \
        "the slow endpoint's span lasts its 50 ms"
