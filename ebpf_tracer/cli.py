"""Command line: thin click commands that build a Config and run the agent."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import click

from . import __version__
from .config import Config, Mode
from .errors import TracerError

log = logging.getLogger("ebpf_tracer")


def _common(f: Callable) -> Callable:
    opts = [
        click.option("--exporter", type=click.Choice(["console", "otlp", "jsonl"]),
                     default=None, help="Where spans go. Default: otlp when "
                     "OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set, else console."),
        click.option("--output", "output", default=None, metavar="FILE",
                     help="File for --exporter jsonl ('-' for stdout)."),
        click.option("--ready-file", default=None, metavar="PATH",
                     help="Created once probes are attached; traffic from then on is seen."),
        click.option("--max-copy", default=2048, show_default=True, type=int,
                     help="Payload bytes copied per syscall (power of two, 64-16384)."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logs."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="ebpf-tracer: %(levelname)s %(name)s: %(message)s" if verbose
        else "ebpf-tracer: %(message)s",
        stream=sys.stderr,
    )
    # Our own info lines (e.g. "tracing ...") are useful without -v.
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def _config(mode: Mode, pids: list[int], exporter: str | None, output: str | None,
            ready_file: str | None, max_copy: int) -> Config:
    from .export import default_exporter_kind

    kind = exporter or default_exporter_kind(os.environ)
    if kind == "jsonl" and not output:
        raise TracerError("--exporter jsonl needs --output FILE (or --output - for stdout)")
    return Config(mode=mode, pids=pids, exporter=kind, output=output, ready_file=ready_file,
                  max_copy=max_copy)


def _fail(msg: str, code: int = 1) -> None:
    click.echo(f"ebpf-tracer: {msg}", err=True)
    sys.exit(code)


def _build_agent(cfg: Config):  # noqa: ANN202
    from .agent import Agent
    from .export import ExportConfigError

    if os.geteuid() != 0:
        raise TracerError("must run as root to load eBPF programs: sudo ebpf-tracer ... "
                          "(`ebpf-tracer check` lists everything this machine needs)")
    try:
        return Agent(cfg)
    except ExportConfigError as e:
        raise TracerError(str(e)) from None


class _Stopper:
    """SIGINT/SIGTERM end the loop; the agent then flushes and detaches."""

    def __init__(self, agent, on_signal: Callable[[int], None] | None = None) -> None:  # noqa: ANN001
        self.agent = agent
        self.on_signal = on_signal
        self.signum: int | None = None
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum
        if self.on_signal:
            self.on_signal(signum)
        else:
            self.agent.stop()


def _finish(agent) -> None:  # noqa: ANN001
    agent.shutdown()
    st = agent.batcher.stats
    dropped = sum(st.spans_dropped.values()) if isinstance(st.spans_dropped, dict) \
        else st.spans_dropped
    if dropped:
        click.echo(f"ebpf-tracer: {dropped} spans could not be delivered", err=True)
    log.debug("final stats %s", agent.stats())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ebpf-tracer")
def main() -> None:
    """Zero-instrumentation HTTP tracing with eBPF, exported as OpenTelemetry spans."""


@main.command()
@_common
def run(exporter, output, ready_file, max_copy, verbose) -> None:  # noqa: ANN001
    """Trace every process on this host (except the tracer itself)."""
    _setup_logging(verbose)
    try:
        agent = _build_agent(_config(Mode.RUN, [], exporter, output, ready_file, max_copy))
        agent.start()
    except TracerError as e:
        _fail(str(e))
    _Stopper(agent)
    agent.run()
    _finish(agent)


@main.command()
@click.option("--pid", "pids", type=int, multiple=True, required=True,
              help="Process to trace (repeatable); its threads and children are traced too.")
@_common
def attach(pids, exporter, output, ready_file, max_copy, verbose) -> None:  # noqa: ANN001
    """Trace running processes."""
    _setup_logging(verbose)
    for pid in pids:
        if not os.path.exists(f"/proc/{pid}"):
            _fail(f"no process with pid {pid}; check it with `ps -p {pid}`", 2)
    try:
        agent = _build_agent(_config(Mode.ATTACH, list(pids), exporter, output, ready_file,
                                     max_copy))
        agent.start()
    except TracerError as e:
        _fail(str(e))
    _Stopper(agent)

    def all_gone() -> bool:
        return not any(os.path.exists(f"/proc/{p}") for p in pids)

    agent.run(until=all_gone)
    if all_gone() and not agent._stop:
        log.info("every traced process has exited; stopping")
    _finish(agent)


@main.command(name="exec", context_settings={"ignore_unknown_options": True})
@_common
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(command, exporter, output, ready_file, max_copy, verbose) -> None:  # noqa: ANN001
    """Launch COMMAND and trace it and its children: ebpf-tracer exec -- CMD ARGS..."""
    from .launch import GatedProcess

    _setup_logging(verbose)
    try:
        agent = _build_agent(_config(Mode.EXEC, [], exporter, output, ready_file, max_copy))
        agent.start()
    except TracerError as e:
        _fail(str(e))
    try:
        child = GatedProcess(list(command))
    except OSError as e:
        agent.shutdown()
        _fail(f"cannot start {command[0]}: {e}", 127)
    agent.add_pids([child.pid])

    def forward(signum: int) -> None:
        # The terminal already sent SIGINT to the whole group; forward TERM.
        if signum != signal.SIGINT:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    _Stopper(agent, on_signal=forward)
    child.release()
    agent.run(until=lambda: child.poll() is not None)
    child.wait()
    _drain(agent)
    _finish(agent)
    sys.exit(child.exit_status())


def _drain(agent, quiet_s: float = 0.2, max_s: float = 2.0) -> None:  # noqa: ANN001
    """Read what the kernel already queued before shutting down."""
    deadline = time.monotonic() + max_s
    last = -1
    while time.monotonic() < deadline and agent.events_seen != last:
        last = agent.events_seen
        agent.probes.poll(int(quiet_s * 1000))


@main.command()
def check() -> None:
    """Say whether this machine can trace, and how to fix what is missing."""
    from .check import can_trace, run_checks

    checks = run_checks()
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else ("warn" if c.name == "btf" else "FAIL")
        click.echo(f"{mark} {c.name:<{width}}  {c.detail}")
        if not c.ok and c.fix:
            click.echo(f"     {'':<{width}}  fix: {c.fix}")
    ok = can_trace(checks)
    click.echo("this machine can trace" if ok else "this machine cannot trace yet (see FAIL lines)")
    sys.exit(0 if ok else 1)


@main.command()
@click.option("-v", "--verbose", is_flag=True)
def demo(verbose: bool) -> None:
    """Trace a bundled HTTP server and client and print their spans."""
    from .demo import run_demo

    _setup_logging(verbose)
    try:
        sys.exit(run_demo())
    except TracerError as e:
        _fail(str(e))


if __name__ == "__main__":
    main()
