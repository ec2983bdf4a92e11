"""Start a command stopped at a gate, so it is traced from its first syscall."""

from __future__ import annotations

import os
import subprocess
import sys

from . import cpusched

# Runs in the child: wait for the agent, then become the command (same pid).
_GATE = (
    "import os,sys\n"
    "fd=int(sys.argv[1]); os.read(fd,1); os.close(fd)\n"
    "try: os.execvp(sys.argv[2], sys.argv[2:])\n"
    "except OSError as e:\n"
    "    sys.stderr.write(f'ebpf-tracer: cannot run {sys.argv[2]}: {e.strerror}\\n')\n"
    "    sys.exit(127)\n"
)


class GatedProcess:
    """A child that waits on a pipe, then execs the command in the same pid.

    The agent adds the pid to the traced set before opening the gate, so
    nothing the command does is missed; stdin/stdout/stderr are inherited.
    """

    def __init__(self, argv: list[str], **popen_kwargs: object) -> None:
        if not argv:
            raise ValueError("no command given")
        r, w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _GATE, str(r), *argv], pass_fds=(r,),
                **popen_kwargs,
            )
        finally:
            os.close(r)
        cpusched.restore(self.proc.pid)  # the command runs as if launched without us
        self._gate = w
        self.pid = self.proc.pid

    def release(self) -> None:
        if self._gate >= 0:
            try:
                os.write(self._gate, b"g")
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
