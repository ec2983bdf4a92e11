"""Kubernetes pod metadata for resources and selection (active only in a cluster)."""

from __future__ import annotations

import logging
import os

from .api import ApiClient, ApiConfig, ApiError, in_cluster
from .pods import PodInfo, pod_info, resolve_owners
from .watcher import PodStore, PodWatcher

log = logging.getLogger(__name__)

__all__ = ["ApiClient", "ApiConfig", "ApiError", "PodInfo", "PodStore", "PodWatcher",
           "in_cluster", "pod_info", "resolve_owners", "start_watcher"]


def start_watcher(node_name: str | None = None, store: PodStore | None = None) -> PodWatcher:
    """Watch this node's pods with the in-cluster config, on a background thread.

    The node comes from NODE_NAME (the DaemonSet sets it from the downward API).
    """
    node = node_name or os.environ.get("NODE_NAME") or ""
    if not node:
        raise ValueError("the node name is unknown: set NODE_NAME (downward API "
                         "spec.nodeName) or pass --k8s-node-name")
    w = PodWatcher(ApiClient(ApiConfig.from_env()), node, store)
    w.start()
    log.info("watching pods on node %s", node)
    return w
