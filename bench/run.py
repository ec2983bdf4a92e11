#!/usr/bin/env python3
"""ebpf-tracer overhead benchmarks (`make bench`). Not part of `make test`.

    .venv/bin/python bench/run.py [--only NAME ...] [--quick] [--reps N] [--duration S]

NAMEs: micro, replay, nginx_rates, nginx_saturation, grpc, flask, memory. Every comparison runs
interleaved (A, B, A, B ...) in one process on one machine; tables print medians and
ratios; each benchmark writes bench/results/<name>.json with the machine description.
Needs root (the agent loads eBPF), nginx, wrk; flask needs the `bench` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    VENV,
    Agent,
    Proc,
    bootstrap_ratio,
    children,
    free_port,
    median,
    perf_share,
    remove_receiver_group,
    sink_count,
    sink_reset,
    start_nginx,
    start_sink,
    table,
    wait_port,
    write_result,
    wrk,
)


def _drain(sink: int, want: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    n = sink_count(sink)
    while n < want and time.monotonic() < deadline:
        time.sleep(0.2)
        n = sink_count(sink)
    return n


def _sum(xs: list) -> int | None:
    return None if any(x is None for x in xs) else sum(xs)


def traced_run(target_pid: int, sink: int, load, extra: list[str] = (),  # noqa: ANN001
               env: dict | None = None, stopped: bool = False) -> dict:
    """Start the agent, run `load()` (returns wrk's dict), stop the agent; spans, CPU.
    `stopped`: the agent is SIGSTOPped for the load (the `stopped` arm): the
    kernel side runs and fills the ring buffer, nothing consumes or exports until
    the load is over."""
    sink_reset(sink)
    agent = Agent(target_pid, sink, extra, env)
    if stopped:
        os.kill(agent.pid, signal.SIGSTOP)
    cpu0 = agent.cpu_s()
    try:
        res = load()
    finally:
        if stopped:
            os.kill(agent.pid, signal.SIGCONT)
    cpu1 = agent.cpu_s()
    _drain(sink, res["requests"], 5)
    stats = agent.stop()
    time.sleep(0.3)
    spans = sink_count(sink)
    res.update(agent_cpu_s=cpu1 - cpu0, spans=spans,
               spans_produced=stats.get("spans_produced"),
               ringbuf_lost=stats.get("kernel_ringbuf_lost"),  # None: not logged
               conn_gaps=stats.get("conn_gaps"),
               completeness=spans / res["requests"] if res["requests"] else None,
               agent_cpu_ms_per_1k=(cpu1 - cpu0) * 1e6 / res["requests"]
               if res["requests"] else None)
    return res


def _rate_figures(rate: int, u: list[dict], t: list[dict]) -> dict:
    """Medians of one offered rate's untraced (u) and traced (t) runs."""
    return {
        "offered": rate,
        "achieved_untraced": median([r["rps"] for r in u]),
        "achieved_traced": median([r["rps"] for r in t]),
        "completeness": median([r["completeness"] for r in t]),
        "agent_us_per_request": median([r["agent_cpu_ms_per_1k"] for r in t]),
        "p50_ms_untraced": median([r["p50_ms"] for r in u]),
        "p50_ms_traced": median([r["p50_ms"] for r in t]),
        "p99_ms_untraced": median([r["p99_ms"] for r in u]),
        "p99_ms_traced": median([r["p99_ms"] for r in t]),
        "ringbuf_lost": _sum([r["ringbuf_lost"] for r in t]),
    }


def _rate_row(m: dict) -> list:
    """A fixed-rate table's row: offered, achieved, complete, agent, p50s, p99s, lost."""
    return [m["offered"], m["achieved_untraced"], m["achieved_traced"],
            f"{m['completeness'] * 100:.2f}%", m["agent_us_per_request"],
            m["p50_ms_untraced"], m["p50_ms_traced"], m["p99_ms_untraced"],
            m["p99_ms_traced"], m["ringbuf_lost"]]


# -- 1. nginx at fixed offered rates ------------------------------------------------

# Extra arms of the nginx rate and Flask tables: the agent with one optimisation
# off or on (environment, extra CLI arguments); "base" runs another version of the
# agent, the source tree named by $BENCH_BASE (e.g. `git worktree add /tmp/base
# main~3`), for a side-by-side of two versions.
AB_ARMS = {
    "nobatch": ({"EBPF_TRACER_POLL_BATCH_MS": "0"}, []),  # a wakeup per record
    "parser": ({"EBPF_TRACER_KERNEL_HTTP1": "0"}, []),  # no HTTP/1 framing in the kernel
    "batch": ({}, ["--sched", "batch"]),  # not in an idle cpu cgroup
    "base": ({"PYTHONPATH": os.environ.get("BENCH_BASE", "")}, []),
    "pollfixed": ({"EBPF_TRACER_POLL_TARGET": "0"}, []),  # 5 ms between polls, any rate
    "export128": ({}, ["--bsp-max-export-batch-size", "128"]),  # shorter export sends
    # The default agent exporting to a receiver in an idle cpu cgroup: the agent's own
    # cost without the receiver's (which shares the two cores at normal priority).
    "idlesink": ({}, []),
    # The default agent SIGSTOPped during the load: the tracer's kernel side alone,
    # without the agent and the receiver working beside the application (the ring
    # buffer, 16 MiB, holds a few seconds of records; completeness says if it did).
    # Its agent CPU in the window is 0 by construction: compare throughput and p99.
    "stopped": ({}, []),
}


def arm_run(arm: str, target_pid: int, load, sport: int, isport: int) -> dict:  # noqa: ANN001
    """traced_run as the arm named `arm` ("" for the default agent) has it: its
    environment and arguments, its receiver, stopped or not."""
    env, extra = AB_ARMS.get(arm, (None, []))
    return traced_run(target_pid, isport if arm == "idlesink" else sport, load, extra, env,
                      stopped=arm == "stopped")


def _sinks(ab: tuple[str, ...]) -> tuple[list[Proc], int, int]:
    """(processes, the receiver's port, the idlesink arm's receiver port)."""
    sink, port = start_sink()
    if "idlesink" not in ab:
        return [sink], port, port
    try:
        idle, idle_port = start_sink(idle=True)
    except RuntimeError:
        sink.stop()
        raise
    return [sink, idle], port, idle_port


def _stop_sinks(sinks: list[Proc]) -> None:
    for proc in sinks:
        proc.stop()
    if len(sinks) > 1:
        remove_receiver_group()


def nginx_rates(reps: int, duration: float, rates=(1000, 5000, 10000, 20000),
                ab: tuple[str, ...] = ()) -> dict:
    nginx, port = start_nginx()
    sinks, sport, isport = _sinks(ab)
    url = f"http://127.0.0.1:{port}/c"
    runs: dict = {}
    try:
        wrk(url, 1, 4)  # warm up
        for rate in rates:
            # wrk's delay() paces each connection: delay ms after each response.
            delay = 2
            conns = max(1, rate * delay // 1000)
            for _ in range(reps):
                modes = ("untraced", "traced") + tuple(f"traced-{arm}" for arm in ab)
                for mode in modes:
                    def load(conns=conns, delay=delay):
                        return wrk(url, duration, conns, delay_ms=delay)
                    r = load() if mode == "untraced" else arm_run(
                        mode.removeprefix("traced").removeprefix("-"), nginx.pid, load,
                        sport, isport)
                    runs.setdefault(f"{rate}/{mode}", []).append(r)
                    print(f"  {rate}/s {mode}: {r['rps']:.0f} req/s "
                          f"p99 {r['p99_ms']} ms "
                          + (f"spans {r['spans']}/{r['requests']} cpu {r['agent_cpu_s']:.2f}s"
                             if mode != "untraced" else ""), flush=True)
    finally:
        nginx.stop()
        _stop_sinks(sinks)
    rows, summary = [], {}
    for rate in rates:
        u, t = runs[f"{rate}/untraced"], runs[f"{rate}/traced"]
        m = _rate_figures(rate, u, t)
        m["completeness_min"] = min(r["completeness"] for r in t)
        m["agent_cpu_s_per_1k"] = median([r["agent_cpu_ms_per_1k"] / 1000 for r in t])
        m["conn_gaps"] = _sum([r["conn_gaps"] for r in t])
        m["p99_added_us"] = (m["p99_ms_traced"] - m["p99_ms_untraced"]) * 1000
        for arm in ab:
            nb = runs[f"{rate}/traced-{arm}"]
            m[f"{arm}_agent_us_per_request"] = median([r["agent_cpu_ms_per_1k"] for r in nb])
            m[f"{arm}_p99_ms"] = median([r["p99_ms"] for r in nb])
            m[f"{arm}_completeness"] = median([r["completeness"] for r in nb])
            print(f"  {rate}/s {arm}: agent {m[f'{arm}_agent_us_per_request']:.1f} "
                  f"us/req, p99 {m[f'{arm}_p99_ms']} ms, "
                  f"complete {m[f'{arm}_completeness'] * 100:.2f}%")
        summary[str(rate)] = m
        rows.append(_rate_row(m) + [m["conn_gaps"]])
    table(f"nginx at fixed offered rates (median of {reps}, {duration}s each, interleaved)",
          ["offered", "rps untr", "rps traced", "complete", "agent us/req", "p50 untr ms",
           "p50 tr ms", "p99 untr ms", "p99 tr ms", "rb lost", "gaps"], rows)
    write_result("nginx_rates", {"reps": reps, "duration_s": duration, "summary": summary,
                                 "runs": runs})
    return summary


# -- 2. nginx at saturation -----------------------------------------------------------

def nginx_saturation(reps: int, duration: float, conns: int = 50) -> dict:
    nginx, port = start_nginx()
    sink, sport = start_sink()
    url = f"http://127.0.0.1:{port}/c"
    runs: dict = {"untraced": [], "traced": []}
    try:
        wrk(url, 1, conns)
        for _ in range(reps):
            runs["untraced"].append(wrk(url, duration, conns))
            runs["traced"].append(traced_run(nginx.pid, sport,
                                             lambda: wrk(url, duration, conns)))
            print(f"  untraced {runs['untraced'][-1]['rps']:.0f} traced "
                  f"{runs['traced'][-1]['rps']:.0f} req/s", flush=True)
    finally:
        nginx.stop()
        sink.stop()
    u = median([r["rps"] for r in runs["untraced"]])
    t = median([r["rps"] for r in runs["traced"]])
    ratios = [b["rps"] / a["rps"] for a, b in zip(runs["untraced"], runs["traced"], strict=True)]
    s = {"rps_untraced": u, "rps_traced": t, "ratio": median(ratios),
         "completeness": median([r["completeness"] for r in runs["traced"]]),
         "agent_us_per_request": median([r["agent_cpu_ms_per_1k"] for r in runs["traced"]]),
         "agent_cores": median([r["agent_cpu_s"] / duration for r in runs["traced"]]),
         "ringbuf_lost": _sum([r["ringbuf_lost"] for r in runs["traced"]]),
         "conn_gaps": _sum([r["conn_gaps"] for r in runs["traced"]])}
    table(f"nginx at saturation (wrk -c{conns}, median of {reps}, {duration}s each)",
          ["rps untraced", "rps traced", "ratio", "complete", "agent us/req", "agent cores",
           "rb lost", "gaps"],
          [[u, t, s["ratio"], f"{s['completeness'] * 100:.2f}%", s["agent_us_per_request"],
            s["agent_cores"], s["ringbuf_lost"], s["conn_gaps"]]])
    write_result("nginx_saturation", {"reps": reps, "duration_s": duration, "conns": conns,
                                      "summary": s, "runs": runs})
    return s


# -- gRPC at fixed offered rates ---------------------------------------------------

GRPC_APP = Path(__file__).resolve().parent.parent / "tests" / "e2e" / "grpc_app.py"


def _grpc_load(port: int, rate: int, duration: float) -> dict:
    import json
    import subprocess

    out = subprocess.run([sys.executable, str(Path(__file__).parent / "grpc_load.py"),
                          str(port), str(rate), str(duration)], capture_output=True,
                         text=True, timeout=duration + 120, check=True).stdout
    return json.loads(out)


def grpc_rates(reps: int, duration: float, rates=(250, 500, 1000, 2000)) -> dict:
    """A grpcio unary service (Python, 4 worker threads) under an open-loop grpcio
    client (bench/grpc_load.py); the agent attaches to the server only."""
    sink, sport = start_sink()
    port = free_port()
    server = Proc([sys.executable, str(GRPC_APP), "serve", str(port)])
    runs: dict = {}
    try:
        wait_port(port)
        _grpc_load(port, 200, 1)  # warm up
        for rate in rates:
            for _ in range(reps):
                for mode in ("untraced", "traced"):
                    def load(rate=rate):
                        return _grpc_load(port, rate, duration)
                    r = traced_run(server.pid, sport, load) if mode == "traced" else load()
                    runs.setdefault(f"{rate}/{mode}", []).append(r)
                    print(f"  {rate}/s {mode}: {r['rps']:.0f} calls/s p99 {r['p99_ms']:.2f} ms "
                          + (f"spans {r['spans']}/{r['requests']} cpu {r['agent_cpu_s']:.2f}s"
                             if mode == "traced" else ""), flush=True)
    finally:
        server.stop()
        sink.stop()
    rows, summary = [], {}
    for rate in rates:
        m = _rate_figures(rate, runs[f"{rate}/untraced"], runs[f"{rate}/traced"])
        summary[str(rate)] = m
        rows.append(_rate_row(m))
    table(f"gRPC unary at fixed offered rates (median of {reps}, {duration}s each, "
          "interleaved)",
          ["offered", "calls/s untr", "calls/s tr", "complete", "agent us/call",
           "p50 untr ms", "p50 tr ms", "p99 untr ms", "p99 tr ms", "rb lost"], rows)
    write_result("grpc", {"reps": reps, "duration_s": duration, "summary": summary,
                          "runs": runs})
    return summary


# -- 3. Flask on gunicorn ----------------------------------------------------------------

FLASK_APP = '''
from flask import Flask
app = Flask(__name__)

@app.route("/hello/<name>")
def hello(name):
    return {"hello": name}
'''


def _gunicorn(port: int, sdk_sink: int | None) -> Proc:
    appdir = Path(tempfile.gettempdir()) / "ebpf-tracer-bench-app"
    appdir.mkdir(parents=True, exist_ok=True)
    (appdir / "benchapp.py").write_text(FLASK_APP)
    argv = [str(VENV / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir",
            str(appdir), "--error-logfile", "-",
            "--log-level", "warning", "benchapp:app"]
    env = dict(os.environ)
    if sdk_sink is not None:
        argv = [str(VENV / "opentelemetry-instrument")] + argv
        env.update(OTEL_SERVICE_NAME="benchapp", OTEL_TRACES_EXPORTER="otlp",
                   OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sdk_sink}")
    p = Proc(argv, env=env)
    wait_port(port, 30)
    time.sleep(0.5)
    return p


def flask(reps: int, duration: float, conns: int = 8, ab: tuple[str, ...] = ()) -> dict:
    """Throughput of one gunicorn worker, untraced windows between the traced ones.

    This VM's vCPUs change speed by up to 2x from one second to the next (an
    untraced worker's CPU per request: 290-610 us in 1-s windows), so runs on
    separate processes minutes apart compare noise. Each rep runs one gunicorn:
    U, T1, U, T2, ..., U, and every traced window (the agent attached by PID,
    or the SDK's own gunicorn) is compared with the mean of the untraced windows
    either side. The ratio is total traced over total untraced requests across
    reps, with a 90% bootstrap interval over reps."""
    sinks, sport, isport = _sinks(ab)
    modes = ["ebpf-tracer", *[f"ebpf-tracer-{arm}" for arm in ab], "otel-sdk"]
    runs: dict = {"untraced": [], **{m: [] for m in modes}}
    around: dict = {m: [] for m in modes}  # untraced req/s either side, per traced run
    try:
        for rep in range(reps):
            port = free_port()
            g = _gunicorn(port, None)
            url = f"http://127.0.0.1:{port}/hello/world"
            try:
                wrk(url, 1, conns)  # warm up (imports, first requests)
                before = wrk(url, duration, conns)
                runs["untraced"].append(before)
                order = modes[rep % len(modes):] + modes[:rep % len(modes)]
                for mode in order:
                    r = _flask_traced(mode, g.pid, url, duration, conns, sport, isport)
                    after = wrk(url, duration, conns)
                    runs["untraced"].append(after)
                    runs[mode].append(r)
                    around[mode].append((before["rps"] + after["rps"]) / 2)
                    print(f"  {mode}: {r['rps']:.0f} req/s (untraced either side "
                          f"{before['rps']:.0f}, {after['rps']:.0f})", flush=True)
                    before = after
            finally:
                g.stop()
        share = _tracing_share(conns, sport) if shutil.which("perf") else None
    finally:
        _stop_sinks(sinks)
    rows, s = [], {"untraced": {"rps": median([r["rps"] for r in runs["untraced"]])}}
    rows.append(["untraced", s["untraced"]["rps"], None, None, None,
                 median([r["p99_ms"] for r in runs["untraced"]])])
    for mode in modes:
        traced = [r["rps"] for r in runs[mode]]
        lo, hi = bootstrap_ratio(traced, around[mode])
        s[mode] = {"rps": median(traced), "ratio": sum(traced) / sum(around[mode]),
                   "ratio_90": [lo, hi],
                   "ratio_median_of_reps": median([t / u for t, u in
                                                   zip(traced, around[mode], strict=True)]),
                   "p99_ms": median([r["p99_ms"] for r in runs[mode]])}
        if mode.startswith("ebpf-tracer"):
            s[mode]["completeness"] = median([r["completeness"] for r in runs[mode]])
        rows.append([mode, s[mode]["rps"], s[mode]["ratio"], f"{lo:.3f}-{hi:.3f}",
                     s[mode]["ratio_median_of_reps"], s[mode]["p99_ms"]])
    table(f"Flask on gunicorn -w1 (wrk -c{conns}; {reps} reps of untraced windows around "
          f"each traced one, {duration}s each)",
          ["mode", "req/s", "ratio vs untraced", "90% interval", "median of reps", "p99 ms"],
          rows)
    if share and None not in share.values():  # None: perf could not sample here
        s["tracing_share"] = share
        print(f"\n  the worker's CPU in tracing code (perf cpu-clock samples): untraced "
              f"{share['untraced']:.2%}, traced {share['traced']:.2%}")
    write_result("flask", {"reps": reps, "duration_s": duration, "conns": conns,
                           "summary": s, "runs": runs, "untraced_around": around})
    return s


def _flask_traced(mode: str, pid: int, url: str, duration: float, conns: int, sport: int,
                  isport: int) -> dict:
    """One traced window: the agent attached to `pid`, or the SDK's own gunicorn."""
    if mode == "otel-sdk":
        port = free_port()
        g = _gunicorn(port, sport)
        sdk_url = f"http://127.0.0.1:{port}/hello/world"
        try:
            wrk(sdk_url, 1, conns)
            sink_reset(sport)
            r = wrk(sdk_url, duration, conns)
            r["spans"] = _drain(sport, r["requests"], 3)
        finally:
            g.stop()
        return r
    return arm_run(mode.removeprefix("ebpf-tracer").removeprefix("-"), pid,
                   lambda: wrk(url, duration, conns), sport, isport)


def _tracing_share(conns: int, sport: int, seconds: float = 5) -> dict:
    """The share of the worker's CPU spent in the tracer's kernel code, untraced
    (should be 0) and traced: perf samples time, so unlike req/s this share does
    not move with the vCPU's speed."""
    port = free_port()
    g = _gunicorn(port, None)
    url = f"http://127.0.0.1:{port}/hello/world"
    out = {}
    try:
        worker = children(g.pid)[0]
        wrk(url, 1, conns)
        out["untraced"] = perf_share(worker, seconds, lambda: wrk(url, seconds + 2, conns))
        agent = Agent(g.pid, sport)
        try:
            out["traced"] = perf_share(worker, seconds, lambda: wrk(url, seconds + 2, conns))
        finally:
            agent.stop()
    finally:
        g.stop()
    return out


# -- 4. memory ---------------------------------------------------------------------

async def _open_idle(port: int, n: int) -> list:
    out = []
    req = b"GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(0, n, 200):
        batch = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                       for _ in range(min(200, n - i))))
        for _r, w in batch:
            w.write(req)
        for r, _w in batch:
            await r.readuntil(b"ok\n")
        out += batch
    return out


async def _churn(port: int, n: int, par: int = 50) -> None:
    req = b"GET /churn HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    async def one() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(req)
        await r.read()
        w.close()

    for i in range(0, n, par):
        await asyncio.gather(*(one() for _ in range(min(par, n - i))))


def memory(idle_conns: int, churn: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, idle_conns + 1000)), hard))
    nginx, port = start_nginx()
    sink, sport = start_sink()
    s: dict = {}
    try:
        agent = Agent(nginx.pid, sport)
        time.sleep(2)
        s["rss_idle_mb"] = agent.rss_mb()

        async def scenario() -> None:
            t0 = time.monotonic()
            conns = await asyncio.wait_for(_open_idle(port, idle_conns), 120)
            await asyncio.sleep(2)
            s["idle_conns"] = len(conns)
            s["open_s"] = time.monotonic() - t0
            s["rss_with_idle_conns_mb"] = agent.rss_mb()
            for _, w in conns:
                w.close()
            await asyncio.sleep(2)
            s["rss_after_close_mb"] = agent.rss_mb()
            t0 = time.monotonic()
            await asyncio.wait_for(_churn(port, churn), 180)
            s["churned_conns"] = churn
            s["churn_s"] = time.monotonic() - t0
            await asyncio.sleep(2)
            s["rss_after_churn_mb"] = agent.rss_mb()

        asyncio.run(scenario())
        stats = agent.stop()
        s["connections_tracked_at_exit"] = stats.get("connections_tracked")
        s["spans_produced"] = stats.get("spans_produced")
    finally:
        nginx.stop()
        sink.stop()
    table("agent memory (RSS, MB)", ["idle", f"{idle_conns} idle conns", "after close",
                                     f"after {churn} conns churned"],
          [[s["rss_idle_mb"], s["rss_with_idle_conns_mb"], s["rss_after_close_mb"],
            s["rss_after_churn_mb"]]])
    write_result("memory", {"summary": s})
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--quick", action="store_true", help="short runs (2 reps, 3 s)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None)
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--churn", type=int, default=20000)
    ap.add_argument("--rates", type=int, nargs="*", default=[1000, 5000, 10000, 20000],
                    help="nginx_rates: offered request rates (req/s)")
    ap.add_argument("--ab", nargs="*", default=[], choices=sorted(AB_ARMS),
                    help="nginx_rates, flask: also run the agent as these arms")
    a = ap.parse_args()
    reps = a.reps or (2 if a.quick else 5)
    dur = a.duration or (3 if a.quick else 10)
    if os.geteuid() != 0:
        print("bench: the agent loads eBPF programs: run as root", file=sys.stderr)
        return 1
    if "base" in a.ab and not Path(os.environ.get("BENCH_BASE", "/nonexistent"),
                                    "ebpf_tracer").is_dir():
        print("bench: --ab base runs the agent from $BENCH_BASE: set it to another source "
              "tree of ebpf-tracer (e.g. `git worktree add /tmp/base main~1`)", file=sys.stderr)
        return 1
    names = a.only or ["micro", "replay", "nginx_rates", "nginx_saturation", "grpc", "flask",
                       "memory"]
    for name in names:
        print(f"\n### {name}", flush=True)
        if name == "micro":
            from bench import micro
            micro.main()
        elif name == "replay":
            from bench import replay
            replay.main(["nginx", "grpc"])
        elif name == "nginx_rates":
            nginx_rates(reps, dur, rates=tuple(a.rates), ab=tuple(a.ab))
        elif name == "nginx_saturation":
            nginx_saturation(reps, dur)
        elif name == "grpc":
            grpc_rates(reps, dur)
        elif name == "flask":
            if not (VENV / "gunicorn").exists() or not (VENV / "opentelemetry-instrument").exists():
                print("flask: skipped: .venv/bin/pip install -e '.[bench]' first")
                continue
            flask(reps, dur, ab=tuple(a.ab))
        elif name == "memory":
            memory(a.idle_conns, a.churn)
        else:
            print(f"unknown benchmark {name}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
