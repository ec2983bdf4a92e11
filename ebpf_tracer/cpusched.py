"""The agent's CPU scheduling policy: it must never push the traced applications aside.

With the default policy a woken poll loop preempts whatever runs on its CPU, often
the very server it traces, so every batch of ring-buffer records costs the
application a context switch and a cold cache. SCHED_BATCH (sched(7)) keeps the
agent's fair share of CPU, so it keeps up with the same throughput, but its
wakeups no longer preempt: measured side by side on Flask/gunicorn (2 cores),
throughput traced/untraced went from ~0.8 to ~0.97 (docs/performance.md).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

POLICIES = {"batch": os.SCHED_BATCH, "normal": os.SCHED_OTHER}

# What this process ran with before apply(): commands the agent launches get it back.
_original: tuple[int, int] | None = None


def apply(policy: str) -> int:
    """Put every thread of this process (and the threads they start later) under
    `policy`; returns how many threads changed. Failure only logs: the agent
    still works, just less politely."""
    global _original
    if policy not in POLICIES:
        raise ValueError(f"unknown scheduling policy {policy!r}; use one of {sorted(POLICIES)}")
    if _original is None:
        _original = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    want = POLICIES[policy]
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(tid)) != want:
                os.sched_setscheduler(int(tid), want, os.sched_param(0))
                n += 1
        except OSError as e:  # a thread that just ended, or a seccomp-restricted container
            log.debug("sched_setscheduler(%s): %s", tid, e)
    return n


def restore(pid: int) -> None:
    """Give a process the agent started the policy the agent itself started with."""
    if _original is None:
        return
    policy, prio = _original
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(prio))
    except OSError as e:
        log.debug("sched_setscheduler(%d): %s", pid, e)
