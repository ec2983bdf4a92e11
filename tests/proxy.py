"""A loopback TCP proxy for tests that must see what a client puts on the wire."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class LoopbackProxy:
    """Forwards 127.0.0.1 TCP to ``target_port``. Subclasses watch the client's
    bytes by returning a callable from ``watch_upstream``."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def watch_upstream(self) -> Callable[[bytes], None] | None:
        """Called once per connection: what to feed its client -> server chunks."""
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            watch = self.watch_upstream()
            threading.Thread(target=self._pump, args=(client, server, watch), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket,
              watch: Callable[[bytes], None] | None) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if watch is not None:
                    watch(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
