"""container.id and the pod uid from /proc/PID/cgroup, for each runtime and layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ebpf_tracer.cgroup import parse_cgroup, parse_path, read_cgroup

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cgroup"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name: str) -> None:
    want = EXPECTED[name]
    got = parse_cgroup((FIXTURES / name).read_text())
    assert got.container_id == want["container_id"], want["what"]
    assert got.pod_uid == want["pod_uid"], want["what"]
    assert got.runtime == want["runtime"], want["what"]


def test_every_fixture_has_an_expectation() -> None:
    files = {p.name for p in FIXTURES.glob("*.txt")}
    assert files == set(EXPECTED)


def test_systemd_pod_uid_gets_its_dashes_back() -> None:
    info = parse_path("/kubepods.slice/kubepods-pod12345678_abcd_ef01_2345_6789abcdef01.slice")
    assert info.pod_uid == "12345678-abcd-ef01-2345-6789abcdef01"
    assert info.container_id is None


def test_hex_that_is_not_a_whole_component_is_not_an_id() -> None:
    cid = "a" * 64
    assert parse_path(f"/system.slice/x{cid}y.scope").container_id is None
    assert parse_path(f"/system.slice/{cid}0").container_id is None
    assert parse_path(f"/system.slice/{cid[:-1]}").container_id is None


def test_v1_container_line_wins_over_empty_v2_line() -> None:
    cid = "b" * 64
    text = f"0::/\n5:memory:/docker/{cid}\n"
    assert parse_cgroup(text).container_id == cid


def test_garbage_is_no_container() -> None:
    assert parse_cgroup("").container_id is None
    assert parse_cgroup("not a cgroup file\n\n:::\n").container_id is None


def test_reads_own_process() -> None:
    # Whatever this machine is, reading a live process never raises.
    read_cgroup(os.getpid())
    assert read_cgroup(2**22 + 12345).container_id is None
