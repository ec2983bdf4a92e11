"""Span export: batching, OTLP encoding and transports, local exporters.

``make_exporter`` is the one entry point the agent needs besides
``BatchSpanProcessor``; transports are imported lazily so that console/jsonl
use does not pay for grpc.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TextIO

from .base import SpanExporter
from .batcher import BatchSpanProcessor, ExportStats
from .config import BspConfig, ExportSettings, OtlpConfig
from .errors import ExportConfigError

__all__ = [
    "EXPORTER_KINDS",
    "BatchSpanProcessor",
    "BspConfig",
    "ExportConfigError",
    "ExportSettings",
    "ExportStats",
    "OtlpConfig",
    "SpanExporter",
    "default_exporter_kind",
    "make_exporter",
]

EXPORTER_KINDS = ("console", "jsonl", "otlp")


def default_exporter_kind(config: Mapping[str, str] | ExportSettings) -> str:
    """"otlp" when an OTLP endpoint is configured (in an environment mapping, or
    in layered settings), else "console"."""
    if isinstance(config, ExportSettings):
        return "otlp" if config.endpoint() is not None else "console"
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        if config.get(name, "").strip():
            return "otlp"
    return "console"


def make_exporter(
    kind: str,
    *,
    output: str | None = None,
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    settings: ExportSettings | None = None,
) -> SpanExporter:
    """Build the exporter named ``kind``.

    ``output`` is a file path for console/jsonl ("-" or None: ``stream``, else
    stdout). ``settings`` (flags, config file, environment), else ``environ``
    (default ``os.environ``), supplies the OTLP settings for "otlp". Raises
    ExportConfigError.
    """
    if kind == "console":
        from .console import ConsoleExporter

        if output and output != "-":
            try:
                # Line output for humans; append so a rerun keeps earlier lines.
                return ConsoleExporter(open(output, "a", encoding="utf-8"), owns_stream=True)
            except OSError as exc:
                raise ExportConfigError(
                    f"cannot open the console output {output!r}: {exc.strerror}; "
                    "give a writable file path or '-' for stdout"
                ) from None
        return ConsoleExporter(stream)

    if kind == "jsonl":
        from .jsonl import JsonlExporter

        return JsonlExporter(output or "-", stream=stream)

    if kind == "otlp":
        if output and output != "-":
            raise ExportConfigError(
                f"an output file ({output!r}) does not apply to the otlp exporter; "
                "set OTEL_EXPORTER_OTLP_ENDPOINT for otlp, or choose the jsonl exporter"
            )
        if settings is None:
            settings = ExportSettings.from_env(os.environ if environ is None else environ)
        config = OtlpConfig.from_settings(settings)
        if config.protocol == "grpc":
            from .otlp_grpc import OtlpGrpcExporter

            return OtlpGrpcExporter(config)
        from .otlp_http import OtlpHttpExporter

        return OtlpHttpExporter(config)

    raise ExportConfigError(
        f"unknown exporter {kind!r}; choose one of: {', '.join(EXPORTER_KINDS)}"
    )

