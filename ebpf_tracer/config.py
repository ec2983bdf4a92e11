"""What the agent is asked to do, built by the CLI (or a test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .export.config import BspConfig, ExportSettings


class Mode(StrEnum):
    RUN = "run"  # every process on the host
    ATTACH = "attach"  # given PIDs and their descendants
    EXEC = "exec"  # a launched command and its descendants


@dataclass(slots=True)
class Config:
    mode: Mode = Mode.ATTACH
    pids: list[int] = field(default_factory=list)
    exporter: str = "console"
    output: str | None = None
    ready_file: str | None = None
    max_copy: int = 2048
    # The agent's CPU policy (ebpf_tracer.cpusched); None: its DEFAULT (idle where
    # an idle cpu cgroup can be made, else batch, without a warning).
    cpu_sched: str | None = None
    ringbuf_pages: int = 4096
    max_conns: int = 65536
    idle_timeout_s: float = 300.0
    stats_interval_s: float = 10.0
    batch_delay_s: float = 0.5
    # run mode: which processes to report (ebpf_tracer.selection.SelectionConfig)
    selection: object | None = None
    k8s: bool | None = None  # pod metadata: None = when running in a cluster
    k8s_node_name: str | None = None  # default: $NODE_NAME
    # Export: flags > --config file > OTEL_* environment (None: environment only).
    export_settings: ExportSettings | None = None
    bsp: BspConfig | None = None  # None: defaults, with batch_delay_s as the schedule delay
    metrics_port: int | None = None  # --metrics-port: serve Prometheus metrics
    metrics_address: str = "127.0.0.1"
