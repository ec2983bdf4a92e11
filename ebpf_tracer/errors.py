"""Errors a user can act on: printed as one line, never a traceback."""


class TracerError(Exception):
    """The tracer cannot do what was asked; the message says how to fix it."""
