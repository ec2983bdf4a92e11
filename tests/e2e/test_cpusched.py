"""Where the agent runs: by default (--sched idle) an idle cpu cgroup (a woken
application always preempts it) that it turns non-idle while it is late, or
where it started when no cgroup can be made (and with --sched batch); the
commands it launches run where the agent started."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ebpf_tracer.cpusched import IDLE_CGROUP, cpu_cgroup_dir
from tests.e2e.conftest import TRACER, curl, need
from tests.e2e.test_http1 import of_pid


def _cpu_cgroup(text: str) -> str:
    """The cpu controller's line of a /proc/PID/cgroup text (v1), else the v2 one."""
    lines = text.splitlines()
    for line in lines:
        if "cpu" in line.split(":")[1].split(","):
            return line
    return next(line for line in lines if line.startswith("0::"))


def _of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return _cpu_cgroup(f.read())


def _wait_idle(cgroup, timeout: float = 25.0) -> None:
    deadline = time.monotonic() + timeout
    while (cgroup / "cpu.idle").read_text().strip() != "1":
        assert time.monotonic() < deadline, "the agent never turned its cgroup idle"
        time.sleep(0.2)


def test_by_default_the_agent_traces_from_an_idle_cpu_cgroup(start_agent, receiver,
                                                             python_server):
    srv, port = python_server
    agent = start_agent("attach", "--pid", str(srv.pid))
    idle = cpu_cgroup_dir()[0] / IDLE_CGROUP
    assert str(agent.proc.pid) in (idle / "cgroup.procs").read_text().split()
    assert _of(agent.proc.pid).endswith("/" + IDLE_CGROUP)
    curl(f"http://127.0.0.1:{port}/idle")
    assert len(of_pid(receiver, srv.pid, 1)) == 1
    # A fair share while it starts up; idle once it has kept up for 3 s.
    _wait_idle(idle)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert "could not run the agent in an idle cpu cgroup" not in err, err
    assert "no idle cpu cgroup" not in err, err


def test_an_idle_agent_starved_by_busy_cpus_claims_its_share_back(start_agent, receiver,
                                                                   python_server):
    """Every CPU kept busy: an idle group gets next to nothing, and at a few
    requests a second the ring buffer never backs up. The age of the oldest
    unread record still tells the agent it is late: it turns its group
    non-idle and the spans come."""
    srv, port = python_server
    agent = start_agent("attach", "--sched", "idle", "--pid", str(srv.pid))
    idle = cpu_cgroup_dir()[0] / IDLE_CGROUP
    _wait_idle(idle)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(2 * (os.cpu_count() or 1))]
    try:
        claimed = False
        deadline = time.monotonic() + 30
        sent = 0
        while time.monotonic() < deadline and not claimed:
            curl(f"http://127.0.0.1:{port}/starved{sent}")
            sent += 1
            time.sleep(0.2)
            claimed = (idle / "cpu.idle").read_text().strip() == "0"
        assert claimed, "the agent never claimed CPU back while starved"
        assert len(of_pid(receiver, srv.pid, sent, timeout=30)) >= sent
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    rc, _, err = agent.stop()
    assert rc == 0, err


def test_what_the_agent_launches_runs_where_the_agent_started(otlp_env):
    p = subprocess.run([str(TRACER), "exec", "--sched", "idle", "--exporter", "jsonl",
                        "--output", os.devnull,
                        "--", "cat", "/proc/self/cgroup"],
                       env=otlp_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert _cpu_cgroup(p.stdout) == _of(os.getpid())


def test_with_sched_batch_the_agent_stays_where_it_started(start_agent, python_server):
    srv, _ = python_server
    agent = start_agent("attach", "--sched", "batch", "--pid", str(srv.pid))
    assert _of(agent.proc.pid) == _of(os.getpid())
    rc, _, err = agent.stop()
    assert rc == 0, err


def _with_read_only_cgroups(*args: str) -> subprocess.CompletedProcess:
    """`ebpf-tracer exec ... -- cat /proc/self/cgroup` in a mount namespace whose
    cpu cgroup filesystem is read-only (an unprivileged container's view)."""
    mount = subprocess.run([need("findmnt"), "-n", "-o", "TARGET", "--target",
                            str(cpu_cgroup_dir()[0])], capture_output=True, text=True,
                           check=True).stdout.strip()
    script = 'mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.run([need("unshare"), "-m", "--propagation", "private", "sh", "-c",
                           script, "sh", mount, str(TRACER), "exec", *args, "--exporter",
                           "jsonl", "--output", os.devnull, "--", "cat", "/proc/self/cgroup"],
                          capture_output=True, text=True, timeout=120)


def test_without_a_writable_cgroup_the_default_quietly_stays_batch():
    p = _with_read_only_cgroups()
    assert p.returncode == 0, p.stderr
    assert "running SCHED_BATCH: no idle cpu cgroup" in p.stderr, p.stderr
    assert "WARNING" not in p.stderr, p.stderr
    assert _cpu_cgroup(p.stdout) == _of(os.getpid())
    # Asked for explicitly, idle says why it could not be had and what to do.
    p = _with_read_only_cgroups("--sched", "idle")
    assert p.returncode == 0, p.stderr
    assert "could not run the agent in an idle cpu cgroup" in p.stderr, p.stderr
    assert "--sched batch silences this" in p.stderr, p.stderr
