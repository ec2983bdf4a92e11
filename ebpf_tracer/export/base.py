"""The exporter interface every transport implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..model import Span
from .retry import Outcome


@runtime_checkable
class SpanExporter(Protocol):
    def export(self, spans: Sequence[Span]) -> bool | Outcome:
        """Deliver (or write) ``spans``; truthy on success. Called from one thread at a time.

        The OTLP transports return an ``Outcome``, which also says whether a
        failure is worth retrying later (the batcher then holds the batch)."""
        ...

    def shutdown(self) -> None:
        """Release connections/files; later exports return False."""
        ...
