"""Finding the agent's cpu cgroup (where its idle cgroup goes), from the texts of
/proc/self/cgroup and /proc/self/mountinfo as real machines write them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ebpf_tracer.cpusched import cpu_cgroup_dir

# This microVM: cgroup v1 controllers, each on its own mount, plus an empty v2.
V1_CGROUP = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"
V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
44 31 0:41 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A systemd host on cgroup v2 only.
V2_CGROUP = "0::/system.slice/agent.service\n"
V2_MOUNTS = "35 30 0:29 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
# Docker on cgroup v1 without a cgroup namespace: cpu and cpuacct share a mount,
# and the container sees only its own part of the hierarchy.
DOCKER_CGROUP = "4:cpu,cpuacct:/docker/c0ffee\n0::/\n"
DOCKER_MOUNTS = ("300 290 0:33 /docker/c0ffee /sys/fs/cgroup/cpu,cpuacct ro,nosuid - "
                 "cgroup cgroup rw,cpu,cpuacct\n")


@pytest.mark.parametrize(("cgroup", "mounts", "want"), [
    (V1_CGROUP, V1_MOUNTS, ("/sys/fs/cgroup/cpu", False)),
    (V1_CGROUP.replace("1:cpu:/", "1:cpu:/batch/jobs"), V1_MOUNTS,
     ("/sys/fs/cgroup/cpu/batch/jobs", False)),
    (V2_CGROUP, V2_MOUNTS, ("/sys/fs/cgroup/system.slice/agent.service", True)),
    (DOCKER_CGROUP, DOCKER_MOUNTS, ("/sys/fs/cgroup/cpu,cpuacct", False)),
], ids=["v1-root", "v1-nested", "v2", "v1-container-part"])
def test_the_cpu_cgroup_directory(cgroup: str, mounts: str, want: tuple[str, bool]) -> None:
    path, v2 = cpu_cgroup_dir(cgroup, mounts)
    assert (str(path), v2) == want


def test_no_cpu_controller_mounted_is_an_error_the_caller_reports() -> None:
    with pytest.raises(OSError):
        cpu_cgroup_dir("4:memory:/x\n", V1_MOUNTS.replace("rw,cpu\n", "rw,pids\n"))
    with pytest.raises(OSError):  # our cgroup lies outside the part mounted here
        cpu_cgroup_dir("4:cpu,cpuacct:/other\n", DOCKER_MOUNTS)


def test_this_machine_has_one() -> None:
    path, _ = cpu_cgroup_dir()
    assert Path(path).is_dir()
