"""Errors raised while configuring an exporter."""

from __future__ import annotations


class ExportConfigError(ValueError):
    """A setting for the exporter is wrong; the message names it and says how to fix it."""
