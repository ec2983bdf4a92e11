"""Start a command stopped at a gate, so it is traced from its first syscall."""

from __future__ import annotations

import os
import subprocess


class GatedProcess:
    """`sh` waits on a pipe, then execs the command in the same pid.

    The agent adds the pid to the traced set before opening the gate, so
    nothing the command does is missed; stdin/stdout/stderr are inherited.
    """

    def __init__(self, argv: list[str], **popen_kwargs: object) -> None:
        if not argv:
            raise ValueError("no command given")
        r, w = os.pipe()
        script = f'read _ <&{r}; exec {r}<&-; exec "$@"'
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", script, "sh", *argv], pass_fds=(r,), **popen_kwargs
            )
        finally:
            os.close(r)
        self._gate = w
        self.pid = self.proc.pid

    def release(self) -> None:
        if self._gate >= 0:
            try:
                os.write(self._gate, b"go\n")
            finally:
                os.close(self._gate)
                self._gate = -1

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def exit_status(self) -> int:
        """The shell convention: 128+N for a command killed by signal N."""
        rc = self.proc.returncode
        if rc is None:
            return 1
        return 128 - rc if rc < 0 else rc
