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
                     help="Payload bytes copied per syscall (power of two, 256-8192)."),
        click.option("--ringbuf-mb", default=16, show_default=True, type=int,
                     expose_value=False, callback=_agent_option,
                     help="Ring buffer size in MiB (power of two, 1-1024): how long a "
                     "burst the agent can fall behind before records are lost."),
        click.option("--sched", "cpu_sched", type=click.Choice(["idle", "batch", "normal"]),
                     default=None, expose_value=False, callback=_agent_option,
                     help="The agent's CPU policy. idle (default): a woken application "
                     "always preempts it (an idle cpu cgroup; it takes its fair share back "
                     "while it is late; batch when no cgroup can be made); batch: it never "
                     "preempts the applications but they may wait for its time slice; "
                     "normal: the kernel default (docs/performance.md)."),
        click.option("-v", "--verbose", is_flag=True, help="Debug logs."),
    ]
    f = _export_options(f)  # listed after these in --help
    for o in reversed(opts):
        f = o(f)
    return f


_EXPORT_FLAGS = "ebpf_tracer.export_flags"
_AGENT_OPTS = "ebpf_tracer.agent_options"


def _agent_option(ctx: click.Context, param: click.Parameter, value: object) -> object:
    """Agent settings every command shares, collected aside (expose_value=False)
    so the commands need no extra parameters; _config applies them."""
    if param.name == "ringbuf_mb" and (not 1 <= value <= 1024 or value & (value - 1)):
        raise click.BadParameter(f"{value}: use a power of two between 1 and 1024 (MiB)")
    ctx.meta.setdefault(_AGENT_OPTS, {})[param.name] = value
    return value


def _export_flag(ctx: click.Context, param: click.Parameter, value: object) -> object:
    # Collected aside (expose_value=False) so commands need no extra parameters.
    if value is not None:
        ctx.meta.setdefault(_EXPORT_FLAGS, {})[param.name] = value
    return value


def _export_options(f: Callable) -> Callable:
    """Export settings as flags; each mirrors an OTEL_* variable and wins over it
    and over the --config file (docs/export.md)."""

    def opt(*decls: str, help: str, **kw: object) -> Callable:  # noqa: A002
        kw.setdefault("metavar", "VALUE")
        return click.option(*decls, default=None, expose_value=False, callback=_export_flag,
                            help=help, **kw)

    opts = [
        opt("--config", "config_file", metavar="FILE",
            help="YAML file with export and metrics settings (flags win over it; it wins "
            "over OTEL_* variables)."),
        opt("--otlp-endpoint", metavar="URL", help="OTEL_EXPORTER_OTLP_ENDPOINT: base URL "
            "(http/*: /v1/traces is appended)."),
        opt("--otlp-traces-endpoint", metavar="URL",
            help="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: full URL, used as-is."),
        opt("--otlp-protocol", metavar="PROTO",
            help="OTEL_EXPORTER_OTLP_PROTOCOL: grpc, http/protobuf (default) or http/json."),
        opt("--otlp-headers", metavar="K=V,...",
            help="OTEL_EXPORTER_OTLP_HEADERS: comma-separated, URL-encoded values."),
        opt("--otlp-timeout", metavar="MS", help="OTEL_EXPORTER_OTLP_TIMEOUT (default 10000)."),
        opt("--otlp-compression", metavar="gzip|none", help="OTEL_EXPORTER_OTLP_COMPRESSION."),
        opt("--otlp-certificate", metavar="PEM",
            help="OTEL_EXPORTER_OTLP_CERTIFICATE: CA to trust."),
        opt("--otlp-client-certificate", metavar="PEM",
            help="OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE (mutual TLS)."),
        opt("--otlp-client-key", metavar="PEM", help="OTEL_EXPORTER_OTLP_CLIENT_KEY."),
        opt("--otlp-insecure/--otlp-secure", "otlp_insecure", metavar=None,
            help="OTEL_EXPORTER_OTLP_INSECURE: plaintext gRPC to a scheme-less endpoint."),
        opt("--bsp-max-queue-size", metavar="N",
            help="OTEL_BSP_MAX_QUEUE_SIZE: spans held for export (default 8192)."),
        opt("--bsp-max-export-batch-size", metavar="N",
            help="OTEL_BSP_MAX_EXPORT_BATCH_SIZE (default 512)."),
        opt("--bsp-schedule-delay", metavar="MS",
            help="OTEL_BSP_SCHEDULE_DELAY: longest wait before a batch goes (default 500)."),
        opt("--bsp-export-timeout", metavar="MS",
            help="OTEL_BSP_EXPORT_TIMEOUT: shutdown's deadline to deliver (default 30000)."),
        opt("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
            help="Serve Prometheus metrics on this port (off by default; 9464 is usual)."),
        opt("--metrics-address", metavar="ADDR",
            help="Address the metrics server binds (default 127.0.0.1)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _export_config(cfg: Config, exporter: str | None, output: str | None) -> None:
    """Fill cfg's exporter, output, export settings, batching and metrics from
    flags, the --config file and the environment. Raises TracerError."""
    from .export import (
        BspConfig,
        ExportConfigError,
        ExportSettings,
        OtlpConfig,
        default_exporter_kind,
    )
    from .export.config import OTLP_KEYS, load_config_file
    from .metrics import DEFAULT_METRICS_ADDRESS

    ctx = click.get_current_context(silent=True)
    flags = dict(ctx.meta.get(_EXPORT_FLAGS, {})) if ctx is not None else {}
    try:
        path = flags.pop("config_file", None)
        file = load_config_file(path) if path else None
        metrics_port = flags.pop("metrics_port", None)
        metrics_address = flags.pop("metrics_address", None)
        layer = {(k.replace("bsp_", "bsp.", 1) if k.startswith("bsp_") else
                  k.removeprefix("otlp_")): v for k, v in flags.items()}
        settings = ExportSettings.layered(flags=layer, file=file.settings if file else None,
                                          environ=os.environ)
        if file is not None:
            exporter = exporter or (str(file.exporter.raw) if file.exporter else None)
            output = output or (str(file.output.raw) if file.output else None)
            if metrics_port is None and file.metrics_port is not None:
                metrics_port = _port(file.metrics_port.source, file.metrics_port.raw)
            if metrics_address is None and file.metrics_address is not None:
                metrics_address = str(file.metrics_address.raw)
        kind = exporter or default_exporter_kind(settings)
        if kind not in ("console", "otlp", "jsonl"):
            raise TracerError(f"{file.exporter.source if file and file.exporter else 'exporter'}"
                              f"={kind!r}: choose console, otlp or jsonl")
        cfg.bsp = BspConfig.from_settings(settings)
        explicit = (any(k in OTLP_KEYS for k in layer) or bool(file and file.settings)
                    or any(k.startswith("OTEL_EXPORTER_OTLP_") for k in os.environ))
        if kind == "otlp" or explicit:
            OtlpConfig.from_settings(settings)  # fail now, naming the bad setting
    except ExportConfigError as e:
        raise TracerError(str(e)) from None
    cfg.exporter, cfg.output, cfg.export_settings = kind, output, settings
    cfg.metrics_port = metrics_port
    cfg.metrics_address = metrics_address or DEFAULT_METRICS_ADDRESS


def _port(source: str, raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 65535:
        return raw
    raise TracerError(f"{source}={raw!r} must be a port number (0-65535)")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="ebpf-tracer: %(levelname)s %(name)s: %(message)s" if verbose
        else "ebpf-tracer: %(message)s",
        stream=sys.stderr,
    )
    # Our own info lines (e.g. "tracing ...") are useful without -v.
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("asyncio", "grpc"):  # pyroute2: conn/sockets.py
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _config(mode: Mode, pids: list[int], exporter: str | None, output: str | None,
            ready_file: str | None, max_copy: int) -> Config:
    cfg = Config(mode=mode, pids=pids, ready_file=ready_file, max_copy=max_copy)
    ctx = click.get_current_context(silent=True)
    opts = ctx.meta.get(_AGENT_OPTS, {}) if ctx is not None else {}
    if opts.get("cpu_sched"):
        cfg.cpu_sched = opts["cpu_sched"]
    if "ringbuf_mb" in opts:
        cfg.ringbuf_pages = opts["ringbuf_mb"] * (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    _export_config(cfg, exporter, output)
    if cfg.exporter == "jsonl" and not cfg.output:
        raise TracerError("--exporter jsonl needs --output FILE (or --output - for stdout)")
    return cfg


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


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
        agent = Agent(cfg)
    except ExportConfigError as e:
        raise TracerError(str(e)) from None
    if cfg.metrics_port is not None:
        from .metrics import MetricsServer

        agent.metrics_server = MetricsServer(agent, cfg.metrics_port, cfg.metrics_address)
    return agent


class _Stopper:
    """SIGINT/SIGTERM end the loop; the agent then flushes and detaches.

    Installed before the agent starts: a signal during the BPF compile is
    remembered and honoured once the agent exists, never a traceback.
    """

    def __init__(self) -> None:
        self.agent = None
        self.on_signal: Callable[[int], None] | None = None
        self.signum: int | None = None
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def attach(self, agent, on_signal: Callable[[int], None] | None = None) -> None:  # noqa: ANN001
        self.agent, self.on_signal = agent, on_signal
        if self.signum is not None:
            agent.stop()

    def _handle(self, signum: int, _frame: object) -> None:
        self.signum = signum
        if self.on_signal:
            self.on_signal(signum)
        elif self.agent is not None:
            self.agent.stop()


def _finish(agent) -> None:  # noqa: ANN001
    # Kernel counters are only readable while the probes are attached.
    final = agent.stats()
    agent.shutdown()
    st = agent.batcher.stats
    dropped = sum(st.spans_dropped.values())
    if dropped:
        why = ", ".join(f"{k}={v}" for k, v in sorted(st.spans_dropped.items()) if v)
        click.echo(f"ebpf-tracer: {dropped} spans could not be delivered ({why})", err=True)
    log.debug("final stats %s", final)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ebpf-tracer")
def main() -> None:
    """Zero-instrumentation HTTP tracing with eBPF, exported as OpenTelemetry spans."""


def _run_options(f: Callable) -> Callable:
    """Which processes `run` reports (see ebpf_tracer/selection.py for the rules)."""
    many = {"multiple": True, "default": ()}
    opts = [
        click.option("--port", "ports", metavar="PORTS", **many,
                     help="Only processes listening on or connecting to these ports "
                     "(repeatable; 80,443 or 8000-8999)."),
        click.option("--exe", "exes", metavar="GLOB", **many,
                     help="Only executables whose path (or, without '/', name) matches."),
        click.option("--k8s-namespace", "k8s_namespaces", metavar="NS", **many,
                     help="Only pods in these namespaces."),
        click.option("--k8s-pod-label", "k8s_pod_labels", metavar="KEY=VALUE", **many,
                     help="Only pods with all these labels (value may be a glob)."),
        click.option("--exclude-port", "exclude_ports", metavar="PORTS", **many,
                     help="Never processes listening on these ports."),
        click.option("--exclude-exe", "exclude_exes", metavar="GLOB", **many,
                     help="Never these executables."),
        click.option("--exclude-k8s-namespace", "exclude_k8s_namespaces", metavar="NS", **many,
                     help="Never pods in these namespaces (e.g. kube-system)."),
        click.option("--k8s/--no-k8s", "k8s", default=None,
                     help="Pod metadata from the API server. Default: when in a cluster."),
        click.option("--k8s-node-name", default=None, metavar="NODE",
                     help="This node's name for the pod watch. Default: $NODE_NAME."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@main.command()
@_common
@_run_options
def run(exporter, output, ready_file, max_copy, verbose, **run_opts) -> None:  # noqa: ANN001
    """Trace every process on this host (except the tracer itself)."""
    from .selection import SelectionError, apply_run_options, load_run_sections

    _setup_logging(verbose)
    stopper = _Stopper()
    try:
        ctx = click.get_current_context()
        path = ctx.meta.get(_EXPORT_FLAGS, {}).get("config_file")
        try:
            sections = load_run_sections(path) if path else None
        except SelectionError as e:
            raise TracerError(str(e)) from None
        cfg = _config(Mode.RUN, [], exporter, output, ready_file, max_copy)
        try:
            apply_run_options(cfg, sections, **run_opts)
        except SelectionError as e:
            raise TracerError(str(e)) from None
        agent = _build_agent(cfg)
        agent.start()
    except TracerError as e:
        _fail(str(e))
    stopper.attach(agent)
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
    stopper = _Stopper()
    try:
        agent = _build_agent(_config(Mode.ATTACH, list(pids), exporter, output, ready_file,
                                     max_copy))
        agent.start()
    except TracerError as e:
        _fail(str(e))
    stopper.attach(agent)

    def all_gone() -> bool:
        return not any(_alive(p) for p in pids)

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
    stopper = _Stopper()
    try:
        agent = _build_agent(_config(Mode.EXEC, [], exporter, output, ready_file, max_copy))
        agent.start()
    except TracerError as e:
        _fail(str(e))
    if stopper.signum is not None:  # interrupted while loading: do not start the command
        agent.shutdown()
        sys.exit(128 + stopper.signum)
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

    stopper.attach(agent, on_signal=forward)
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
        agent.poll(int(quiet_s * 1000))


@main.command()
@click.option("--metrics-url", default=None, metavar="URL",
              help="The agent's metrics endpoint, e.g. http://127.0.0.1:9464/metrics.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, metavar="PORT",
              help="The agent's --metrics-port on this host (default 9464).")
@click.option("--metrics-address", default="127.0.0.1", show_default=True, metavar="ADDR")
@click.option("--watch", type=click.FloatRange(min=0.5), default=None, metavar="SECONDS",
              help="Print again every SECONDS until interrupted.")
def stats(metrics_url: str | None, metrics_port: int | None, metrics_address: str,
          watch: float | None) -> None:
    """Show a running agent's numbers (it must run with --metrics-port)."""
    from .metrics import DEFAULT_METRICS_PORT, fetch, format_stats

    if metrics_url is None:
        host = f"[{metrics_address}]" if ":" in metrics_address else metrics_address
        metrics_url = f"http://{host}:{metrics_port or DEFAULT_METRICS_PORT}/metrics"
    try:
        while True:
            click.echo(format_stats(fetch(metrics_url)))
            if watch is None:
                return
            time.sleep(watch)
            click.echo()
    except TracerError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass


@main.command()
def check() -> None:
    """Say whether this machine can trace, and how to fix what is missing."""
    from .check import OPTIONAL, can_trace, run_checks

    checks = run_checks()
    width = max(len(c.name) for c in checks)
    for c in checks:
        mark = "ok  " if c.ok else ("warn" if c.name in OPTIONAL else "FAIL")
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
