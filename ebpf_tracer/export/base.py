"""The exporter interface every transport implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..model import Span


@runtime_checkable
class SpanExporter(Protocol):
    def export(self, spans: Sequence[Span]) -> bool:
        """Deliver (or write) ``spans``; True on success. Called from one thread at a time."""
        ...

    def shutdown(self) -> None:
        """Release connections/files; later exports return False."""
        ...
