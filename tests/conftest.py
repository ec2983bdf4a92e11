"""Suite-wide: say loudly when the end-to-end tests could not run."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = {
        str(r.longrepr[2]) for r in skipped
        if isinstance(r.longrepr, tuple) and "cannot trace" in str(r.longrepr[2])
    }
    if reasons:
        bar = "!" * 78
        terminalreporter.write_line(bar, red=True, bold=True)
        terminalreporter.write_line(
            "END-TO-END TESTS WERE SKIPPED: this machine cannot trace.", red=True, bold=True
        )
        for r in sorted(reasons):
            terminalreporter.write_line(f"  {r}", red=True)
        terminalreporter.write_line("  Run `.venv/bin/ebpf-tracer check` for the fixes.", red=True)
        terminalreporter.write_line(bar, red=True, bold=True)
