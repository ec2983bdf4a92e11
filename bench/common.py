"""Shared pieces of the benchmarks: machine description, servers, wrk, the agent.

Every server listens on 127.0.0.1; every load run is bounded in time.
"""

from __future__ import annotations

import ast
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from ebpf_tracer.loopback import free_port, wait_port  # noqa: F401 - bench/run.py uses them

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results"
TICK = os.sysconf("SC_CLK_TCK")


def _version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "absent"


def machine() -> dict:
    pkgs = {}
    for name in ("ebpf-tracer", "protobuf", "grpcio", "gunicorn", "flask",
                 "opentelemetry-sdk", "opentelemetry-instrumentation-flask"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    try:
        import bcc  # noqa: F401
        pkgs["bcc"] = getattr(sys.modules["bcc"], "__version__", "present")
    except ImportError:
        pkgs["bcc"] = None
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "python": platform.python_version(), "packages": pkgs,
        "nginx": _version(["nginx", "-v"]), "wrk": _version(["wrk", "-v"]),
        "loadavg_at_start": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2, default=str) + "\n")
    return path


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def bootstrap_ratio(traced: list[float], untraced: list[float], rounds: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    """A 90% interval for sum(traced) / sum(untraced), resampling the pairs."""
    rng = random.Random(seed)
    pairs = list(zip(traced, untraced, strict=True))
    ratios = sorted(
        sum(t for t, _ in pick) / sum(u for _, u in pick)
        for pick in (rng.choices(pairs, k=len(pairs)) for _ in range(rounds)))
    return ratios[int(rounds * 0.05)], ratios[int(rounds * 0.95) - 1]


def table(title: str, header: list[str], rows: list[list]) -> None:
    def fmt(v) -> str:  # noqa: ANN001
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [header] + [[fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n== {title}")
    for i, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# -- processes -----------------------------------------------------------------

def proc_cpu_s(pid: int) -> float:
    """utime+stime of a process (all threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    f = stat[stat.rindex(b")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / TICK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (t / "children").read_text().split()]
        except OSError:
            pass
    return out


# Kernel functions that run only for the tracer: the syscall tracepoints' perf
# glue, tracepoint records, the BPF programs and their helpers.
TRACING_FRAMES = re.compile(
    r"(?m)\s(syscall_trace_enter|perf_syscall_(enter|exit)|perf_trace_\w+|trace_call_bpf"
    r"|bpf_prog_\w+|bpf_ringbuf_\w+|bpf_probe_read_\w+)$")


def perf_share(pid: int, seconds: float, load: Callable[[], object]) -> float | None:
    """The share of `pid`'s CPU time (perf cpu-clock samples, with call chains)
    spent in tracing code while `load()` runs; None if perf cannot sample."""
    data = Path(tempfile.mktemp(prefix="bench-perf-"))
    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1)
        rec = subprocess.run(["perf", "record", "-q", "-F", "999", "-e", "cpu-clock", "-g",
                              "-p", str(pid), "-o", str(data), "--", "sleep", str(seconds)],
                             capture_output=True)
    finally:
        worker.join()
    try:
        if rec.returncode != 0:
            return None
        script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,sym"],
                                capture_output=True, text=True).stdout
    finally:
        data.unlink(missing_ok=True)
    samples = [s for s in script.split("\n\n") if s.strip()]
    hit = sum(1 for s in samples if TRACING_FRAMES.search(s))
    return hit / len(samples) if samples else None


class Proc:
    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile("w+", prefix="bench-", suffix=".log", delete=False)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  env=env, cwd=cwd, start_new_session=True)
        self.pid = self.p.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        return self.p.returncode

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")


NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 16000; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def start_nginx() -> tuple[Proc, int]:
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port))
    p = Proc(["nginx", "-c", str(conf), "-p", str(prefix)])
    wait_port(port)
    return p, port


def start_sink(idle: bool = False) -> tuple[Proc, int]:
    """The counting OTLP receiver; `idle`: in an idle cpu cgroup of its own, out of
    the application's way as a collector on another machine would be."""
    port = free_port()
    p = Proc([sys.executable, str(ROOT / "bench" / "sink.py"), str(port)])
    wait_port(port)
    if idle:
        try:
            _into_idle_group(p.pid)
        except OSError as e:
            p.stop()
            raise RuntimeError(f"bench: cannot put the receiver in an idle cpu cgroup ({e}); "
                               "run without the idlesink arm (it needs Linux 5.15+, root and "
                               "the cpu cgroup controller)") from e
    return p, port


RECEIVER_CGROUP = "ebpf-tracer-bench-receiver"


def _into_idle_group(pid: int) -> None:
    """Move process `pid` (all its threads, and those it starts later) into an idle
    cpu cgroup below this process's own."""
    from ebpf_tracer.cpusched import cpu_cgroup_dir

    base, _v2 = cpu_cgroup_dir()
    group = base / RECEIVER_CGROUP
    group.mkdir(exist_ok=True)
    (group / "cpu.idle").write_text("1")  # v2: only where `base` hands the cpu controller down
    (group / "cgroup.procs").write_text(str(pid))


def remove_receiver_group() -> None:
    """Remove the receiver's idle cgroup once its process has gone (if it was made)."""
    from ebpf_tracer.cpusched import cpu_cgroup_dir

    try:
        (cpu_cgroup_dir()[0] / RECEIVER_CGROUP).rmdir()
    except OSError:
        pass  # never made, or still in use


def sink_count(port: int) -> int:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as r:
        return int(r.read())


def sink_reset(port: int) -> None:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/reset",
                                                  method="POST"), timeout=5).read()


class Agent:
    """`ebpf-tracer attach --pid PID` started as a user would, exporting OTLP/HTTP
    to the counting sink (or jsonl to /dev/null when no sink port is given)."""

    def __init__(self, pid: int, sink_port: int | None = None, extra: list[str] = (),
                 env: dict | None = None) -> None:
        self.ready = Path(tempfile.mktemp(prefix="bench-ready-"))
        argv = [str(VENV / "ebpf-tracer"), "attach", "--pid", str(pid),
                "--ready-file", str(self.ready), "-v", "--bsp-schedule-delay", "200"]
        if sink_port:
            argv += ["--exporter", "otlp", "--otlp-protocol", "http/protobuf",
                     "--otlp-endpoint", f"http://127.0.0.1:{sink_port}"]
        else:
            argv += ["--exporter", "jsonl", "--output", "/dev/null"]
        self.proc = Proc(argv + list(extra), env={**os.environ, **(env or {})})
        self.pid = self.proc.pid
        deadline = time.monotonic() + 90
        while not self.ready.exists():
            if self.proc.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("agent did not start:\n" + self.proc.output()[-3000:])
            time.sleep(0.05)
        time.sleep(0.3)
        self._wait_idle(deadline)  # --sched idle: measure it idle, after its fair-share start

    def _wait_idle(self, deadline: float) -> None:
        from ebpf_tracer.cpusched import IDLE_CGROUP, cpu_cgroup_dir

        group = cpu_cgroup_dir(Path(f"/proc/{self.pid}/cgroup").read_text())[0]
        if group.name != IDLE_CGROUP:  # --sched batch|normal, or no idle cgroup here
            return
        idle = group / "cpu.idle"
        while idle.read_text().strip() != "1":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the agent never turned {idle} idle")
            time.sleep(0.1)

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def rss_mb(self) -> float:
        return proc_rss_mb(self.pid)

    def stop(self) -> dict:
        self.proc.stop(signal.SIGINT, timeout=60)
        self.ready.unlink(missing_ok=True)
        out = self.proc.output()
        m = re.findall(r"final stats (\{.*\})", out)
        stats = ast.literal_eval(m[-1]) if m else {}
        # The final line is logged after detaching (no kernel_* counters): take
        # those from the last periodic "agent {...}" line.
        periodic = re.findall(r"ebpf_tracer.agent: agent (\{.*\})", out)
        if periodic:
            for k, v in ast.literal_eval(periodic[-1]).items():
                if k.startswith("kernel_"):
                    stats.setdefault(k, v)
        return stats


# -- wrk -----------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(v: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, duration: float, conns: int, threads: int = 1,
        delay_ms: float | None = None) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency",
            "--timeout", "5s"]
    script = None
    if delay_ms is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f"function delay() return {delay_ms} end\n")
        script.close()
        argv += ["-s", script.name]
    out = subprocess.run(argv + [url], capture_output=True, text=True,
                         timeout=duration + 60, check=True).stdout
    if script:
        os.unlink(script.name)
    res = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
           "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1) if m else None
    return res
