"""A raw HTTP/2 client (the `h2` library) that stresses the kernel's frame walk.

`python h2_raw_client.py PORT split`: three GETs on one connection, every write
and read 5 bytes long, so frame headers and payloads are split across syscalls.
`python h2_raw_client.py PORT flood N`: a GET, then one write of N PING frames
(more than the kernel walks in one syscall when N is large), then another GET.
Waits for the file named by GO (if set) before connecting; prints `done`.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def request(s: socket.socket, c: h2.connection.H2Connection, port: int, path: str,
         chunk: int) -> None:
    c.send_headers(c.get_next_available_stream_id(),
                   [(":method", "GET"), (":path", path), (":scheme", "http"),
                    (":authority", f"127.0.0.1:{port}"), ("x-pad", "v" * 40)],
                   end_stream=True)
    out = c.data_to_send()
    for k in range(0, len(out), chunk):
        s.send(out[k : k + chunk])
        time.sleep(0.002)  # its own syscall on the server's side too
    while True:
        data = s.recv(chunk)
        if not data:
            raise SystemExit("connection closed")
        ended = False
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.StreamEnded):
                ended = True
            elif isinstance(ev, h2.events.DataReceived):
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        pending = c.data_to_send()
        if pending:
            s.sendall(pending)
        if ended:
            return


def main(port: int, mode: str, n: int = 0) -> None:
    go = os.environ.get("GO")
    while go and not os.path.exists(go):
        time.sleep(0.01)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    s.sendall(c.data_to_send())
    if mode == "split":
        for path in ("/small.txt", "/big.bin?a=1", "/small.txt?b=2"):
            request(s, c, port, path, 5)
    else:
        request(s, c, port, "/small.txt", 65536)
        s.sendall(b"".join(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00%08d" % k for k in range(n)))
        request(s, c, port, "/small.txt?after=flood", 65536)
    s.close()
    print("done", flush=True)
    time.sleep(float(os.environ.get("LINGER", "0")))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:]))
