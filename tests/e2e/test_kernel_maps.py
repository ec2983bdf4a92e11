"""Kernel map hygiene with the real programs: what the agent puts in, the kernel
takes out when processes and threads end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ebpf_tracer.loader import LoaderConfig, Probes

# Starts 50 threads (each a fork event the kernel sees), then a child process.
CHILD = """
import subprocess, sys, threading
sys.stdin.readline()
ts = [threading.Thread(target=lambda: None) for _ in range(50)]
for t in ts: t.start()
for t in ts: t.join()
kid = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"],
                       stdin=subprocess.PIPE)
print(kid.pid, flush=True)
sys.stdin.readline()
kid.stdin.close(); kid.wait()
print("done", flush=True)
sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def probes():
    p = Probes(LoaderConfig(ringbuf_pages=16, max_conns=1024))
    yield p
    p.close()


def traced(probes: Probes) -> set[int]:
    return {k.value for k in probes._traced.keys()}


def test_threads_and_exited_children_leave_the_traced_set(probes: Probes) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        probes.trace_pid(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        kid = int(proc.stdout.readline())
        # The threads are gone; the child process is traced while it lives.
        assert traced(probes) == {proc.pid, kid}
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        assert traced(probes) == {proc.pid}
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert traced(probes) == set()
