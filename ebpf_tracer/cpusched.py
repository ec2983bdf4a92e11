"""The agent's CPU scheduling: it must never push the traced applications aside.

Two ways the agent can cost an application latency on a busy machine:

- its wakeups preempt the application: with the kernel's default policy a woken
  poll loop takes the CPU from whatever runs there, often the very server it
  traces. SCHED_BATCH (sched(7)) stops that: on Flask/gunicorn (2 cores)
  throughput traced/untraced went from ~0.8 to ~0.97 (docs/performance.md).
- the application's wakeups wait for the agent: a server woken while the agent
  works through a batch (0.3-2 ms) waits for the agent's slice to end. No task
  policy prevents that once the agent and the application sit in different
  scheduling groups (cgroups; on a desktop or VM, the kernel's per-session
  autogroups): the kernel compares the groups, not the tasks. Only an *idle*
  group (the cgroup ``cpu.idle`` knob, Linux 5.15+) is always preempted by a
  woken non-idle task. Measured on nginx at 10k req/s (2 cores), client p99
  +1-1.5 ms with SCHED_BATCH, +0.2-0.4 ms with the agent in an idle cgroup.

``idle`` (the default) moves the agent into an idle cpu cgroup, ``ebpf-tracer``,
below the one it started in (cgroup v1 or v2), and runs its threads SCHED_BATCH.
An idle group only gets the scraps when the applications keep every CPU busy, so
the agent claims its fair share back (``claim(True)``: cpu.idle 0) while it is
late (Agent._claim_cpu_while_late: its ring buffer 1/16 full, its oldest unread
record 250 ms old, which at a few requests a second is the only sign, or its
oldest queued span a schedule delay + 0.5 s old), and turns idle again
once it has kept up for 3 s: polite while it keeps up, never starved into
losing records or into spans that come seconds late; it starts with a fair share
(starting up is its heaviest work). Where no idle cgroup can be made (a read-only
cgroup filesystem, Linux < 5.15, a cgroup v2 parent shared with other processes)
the default quietly stays ``batch``; an explicit ``--sched idle`` warns. ``batch``
skips the cgroup.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

POLICIES = {"idle": os.SCHED_BATCH, "batch": os.SCHED_BATCH, "normal": os.SCHED_OTHER}
IDLE_CGROUP = "ebpf-tracer"

# What this process ran with before apply(): commands the agent launches get it back.
_original: tuple[int, int] | None = None
_original_cgroup: Path | None = None  # the cgroup directory we left for the idle one
_idle_cgroup: Path | None = None
_claimed = False  # cpu.idle turned off while the agent catches up


DEFAULT = "idle"


def apply(policy: str | None) -> int:
    """Put every thread of this process (and the threads they start later) under
    `policy` (None: the DEFAULT, whose failure is no news); returns how many
    threads changed. Failure only logs (a warning if the user asked for this
    policy): the agent still works, just less politely."""
    global _original
    asked = policy is not None
    policy = policy or DEFAULT
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
    if policy == "idle" and _idle_cgroup is None:
        try:
            try:
                _enter_idle_cgroup()
            except FileNotFoundError:  # another agent leaving removed it just then
                _enter_idle_cgroup()
        except OSError as e:
            if asked:
                log.warning("could not run the agent in an idle cpu cgroup (%s): "
                            "applications woken while it works may wait for it. It needs a "
                            "writable cgroup filesystem (a privileged container) and Linux "
                            "5.15+; --sched batch silences this", e)
            else:
                log.info("running SCHED_BATCH: no idle cpu cgroup (%s)", e)
    return n


def idle() -> bool:
    """Whether the agent sits in its idle cgroup (`claim` has something to do)."""
    return _idle_cgroup is not None


def give_way() -> None:
    """Let an application task that waits for this CPU have it now (while idle).

    An idle group is preempted by a waking application task only if that task is
    *eligible* as it wakes: EEVDF (Linux 6.6+) wakes a task that lately ran more
    than its share (negative lag) a little behind, and then the agent keeps the
    CPU until it sleeps, its slice ends or the next tick (4 ms at HZ=250).
    Measured on nginx at 10k req/s: the client (wrk) waited 0.3-2.4 ms behind
    the agent ~30 times in 9 s. A yield every ~0.1 ms of work is a new pick, and
    by then the agent's own virtual time is far ahead (an idle group's weight is
    3 against 1024): client p99 with it went back to untraced's (docs/performance.md).
    ~0.5 us per call; nothing while the agent is not idle (batch, or claimed)."""
    if _idle_cgroup is not None and not _claimed:
        os.sched_yield()


def claim(on: bool) -> None:
    """Take a fair share of CPU (on) or go back to idle: the agent's ring buffer
    is backing up (or has drained). No-op unless the agent is in its idle cgroup."""
    global _claimed
    if _idle_cgroup is None or on == _claimed:
        return
    try:
        (_idle_cgroup / "cpu.idle").write_text("0" if on else "1")
        _claimed = on
        log.debug("cpu: %s", "fair share (falling behind)" if on else "idle again")
    except OSError as e:
        log.debug("cpu.idle: %s", e)


def restore(pid: int) -> None:
    """Give a process the agent started the policy (and cpu cgroup) the agent
    itself started with."""
    if _original_cgroup is not None:
        try:
            (_original_cgroup / "cgroup.procs").write_text(str(pid))
        except OSError:
            # cgroup v2 keeps processes out of a cgroup that hands controllers
            # down: a plain sibling of the idle cgroup, below the original.
            try:
                launched = _original_cgroup / f"{IDLE_CGROUP}-launched"
                launched.mkdir(exist_ok=True)
                (launched / "cgroup.procs").write_text(str(pid))
            except OSError as e:
                log.warning("the command runs in the agent's idle cpu cgroup (%s); "
                            "--sched batch avoids that", e)
    if _original is None:
        return
    policy, prio = _original
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(prio))
    except OSError as e:
        log.debug("sched_setscheduler(%d): %s", pid, e)


def leave() -> None:
    """Back to the cgroup we started in; remove the idle one if nobody else is
    in it (another agent may be). Best effort: called on the way out."""
    global _idle_cgroup
    if _idle_cgroup is None or _original_cgroup is None:
        return
    try:
        (_original_cgroup / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as e:  # cgroup v2 keeps us out of the original: at least not idle
        log.debug("leaving %s: %s", _idle_cgroup, e)
        claim(True)
        return
    try:
        _idle_cgroup.rmdir()
    except OSError as e:  # another agent is still in it: it stays as that one set it
        log.debug("removing %s: %s", _idle_cgroup, e)
    _idle_cgroup = None


def _enter_idle_cgroup() -> None:
    global _original_cgroup, _idle_cgroup
    base, v2 = cpu_cgroup_dir()
    idle = base / IDLE_CGROUP
    idle.mkdir(exist_ok=True)
    procs = idle / "cgroup.procs"
    pid = str(os.getpid())
    if v2:
        # cpu.idle is the cpu controller's: the parent must hand the controller
        # down, which cgroup v2 refuses while the parent itself holds processes
        # (us): move in first, then enable it.
        procs.write_text(pid)
        try:
            control = base / "cgroup.subtree_control"
            if "cpu" not in control.read_text().split():
                control.write_text("+cpu")  # EBUSY while other processes share `base`
            (idle / "cpu.idle").write_text("1")
        except OSError:
            _back_from(idle, base, pid)
            raise
    else:
        (idle / "cpu.idle").write_text("1")
    global _claimed
    _claimed = False
    if not v2:
        procs.write_text(pid)  # v1: every thread of the process moves
    _original_cgroup, _idle_cgroup = base, idle
    log.debug("running in idle cpu cgroup %s", idle)


def _back_from(idle: Path, base: Path, pid: str) -> None:
    """Undo a half-made idle cgroup: back to `base` (refused once `base` hands the
    cpu controller down: then the agent stays in a plain child cgroup)."""
    try:
        (base / "cgroup.procs").write_text(pid)
        idle.rmdir()
    except OSError as e:
        log.debug("leaving half-made %s: %s", idle, e)


def cpu_cgroup_dir(proc_cgroup: str | None = None,
                   mountinfo: str | None = None) -> tuple[Path, bool]:
    """(directory of this process's cpu cgroup, whether it is cgroup v2), from
    /proc/self/cgroup and /proc/self/mountinfo (or the texts given). A v1
    hierarchy with the cpu controller wins over v2: cpu.idle lives there then."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    v1: dict[str, str] = {}
    v2_path = None
    for line in proc_cgroup.splitlines():
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and not controllers:
            v2_path = path
        for c in controllers.split(","):
            v1[c] = path
    mounts = _cgroup_mounts(mountinfo or Path("/proc/self/mountinfo").read_text())
    if "cpu" in v1 and "cpu" in mounts:
        return _under(mounts["cpu"], v1["cpu"]), False
    if v2_path is not None and "" in mounts:
        return _under(mounts[""], v2_path), True
    raise OSError("no cpu cgroup mounted")


def _under(mount: tuple[Path, str], path: str) -> Path:
    """Where cgroup `path` (as /proc/self/cgroup names it) is, below a mount of
    the hierarchy whose root is `mount[1]` (not "/" when a container was given
    only its own part of it)."""
    point, root = mount
    rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
    if rel.startswith(".."):
        raise OSError(f"cgroup {path} is outside the mounted part ({root})")
    return point / rel if rel != "." else point


def _cgroup_mounts(mountinfo: str) -> dict[str, tuple[Path, str]]:
    """Mounts as (mount point, root within the hierarchy): by v1 controller name,
    and "" for the v2 mount."""
    out: dict[str, tuple[Path, str]] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        mount = (Path(fields[4].replace("\\040", " ")), fields[3])
        if rest[0] == "cgroup2":
            out.setdefault("", mount)
        elif rest[0] == "cgroup":
            for opt in rest[2].split(","):
                out.setdefault(opt, mount)
    return out
