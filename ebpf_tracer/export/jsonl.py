"""JSON-lines exporter: one OTLP/JSON-style object per span, for scripts and tests."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from ..model import Span
from .encoder import span_to_json
from .errors import ExportConfigError

log = logging.getLogger(__name__)


class JsonlExporter:
    """Appends spans to ``path`` ("-" means ``stream``, default stdout), flushed per batch.

    An existing file is appended to, never truncated: a rerun must not eat earlier data.
    """

    def __init__(self, path: str = "-", *, stream: TextIO | None = None) -> None:
        self.path = path
        self._owns_stream = path != "-"
        self._stream: TextIO | None
        if self._owns_stream:
            try:
                self._stream = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise ExportConfigError(
                    f"cannot open the JSON-lines output {path!r}: {exc.strerror}; "
                    "give a writable file path or '-' for stdout"
                ) from None
        else:
            self._stream = stream
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Span]) -> bool:
        if not spans:
            return True
        # ensure_ascii keeps undecodable bytes (surrogate escapes) valid in the output.
        text = "".join(json.dumps(span_to_json(s), separators=(",", ":")) + "\n" for s in spans)
        stream = self._stream or sys.stdout
        try:
            with self._lock:
                stream.write(text)
                stream.flush()
        except (OSError, ValueError) as exc:
            log.warning("JSON-lines export of %d spans to %s failed: %s", len(spans), self.path,
                        exc)
            return False
        return True

    def shutdown(self) -> None:
        if self._owns_stream and self._stream is not None:
            self._stream.close()
