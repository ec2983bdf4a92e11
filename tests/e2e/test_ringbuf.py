"""The mmap ring-buffer consumer against a real BPF ring buffer: every record, in
order, across many wrap-arounds of a one-page ring, none invented."""

from __future__ import annotations

import os
import struct

import pytest

from ebpf_tracer.loader import import_bcc
from ebpf_tracer.ringbuf import RingBuffer

# 216-byte records (224-byte slots: headers land at shifting offsets of the 4 KiB
# ring), numbered by a counter; every 7th is discarded after reserving.
PROG = r"""
BPF_RINGBUF_OUTPUT(rb, 1);
BPF_ARRAY(seq, u64, 1);
struct rec { u64 n; u32 pid; u8 pad[196]; u64 n2; };
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET) return 0;
    int zero = 0;
    u64 *s = seq.lookup(&zero);
    if (!s) return 0;
    u64 n = __sync_fetch_and_add(s, 1);
    struct rec *r = rb.ringbuf_reserve(sizeof(struct rec));
    if (!r) return 0;
    r->n = n;
    r->n2 = n; /* the last bytes: a record split at the ring's end is rejoined */
    r->pid = TARGET;
    if (n % 7 == 3) { rb.ringbuf_discard(r, 0); return 0; }
    rb.ringbuf_submit(r, 0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def ring():
    bcc = import_bcc()
    b = bcc.BPF(text=PROG.encode(), cflags=[f"-DTARGET={os.getpid()}"])
    rb = RingBuffer(b[b"rb"].map_fd, os.sysconf("SC_PAGE_SIZE"))
    yield rb
    rb.close()
    b.cleanup()


def test_every_record_in_order_across_wraparounds(ring: RingBuffer) -> None:
    got: list[int] = []

    def take(view: memoryview) -> None:
        assert len(view) == 216  # the record's size, not the padded slot
        n, n2 = struct.unpack_from("<Q", view, 0)[0], struct.unpack_from("<Q", view, 208)[0]
        assert n == n2
        got.append(n)

    sent = 0
    for _ in range(200):  # ~40 wraps of a 4 KiB ring
        for _ in range(5):
            os.getppid()
            sent += 1
        ring.consume(take)
    expected = [n for n in range(sent) if n % 7 != 3]  # discarded ones skipped
    assert got == expected
    assert ring.available() == 0


def test_full_ring_loses_records_but_never_garbles(ring: RingBuffer) -> None:
    got: list[int] = []
    for _ in range(100):  # far more than a page holds: the kernel drops the rest
        os.getppid()
    ring.consume(lambda v: got.append(struct.unpack_from("<Q", v, 0)[0]))
    assert 0 < len(got) < 100
    assert got == sorted(got)
    assert ring.available() == 0


def test_limit_and_wakeup(ring: RingBuffer) -> None:
    for _ in range(6):
        os.getppid()
    assert ring.wait(1.0)  # the kernel signalled the epoll fd
    first = ring.consume(lambda v: None, limit=2)
    assert first == 2
    rest = ring.consume(lambda v: None)
    assert rest >= 2
    assert ring.available() == 0


def test_first_is_the_oldest_unconsumed_record(ring: RingBuffer) -> None:
    ring.consume(lambda v: None)
    assert ring.first() is None
    got: list[int] = []
    seen = 0
    for _ in range(20):  # 4 per round: the head lands at shifting offsets
        for _ in range(4):
            os.getppid()
        head = ring.first()  # None if the head was discarded or wraps the end
        want = None if head is None else struct.unpack_from("<Q", head, 0)[0]
        before = len(got)
        ring.consume(lambda v: got.append(struct.unpack_from("<Q", v, 0)[0]))
        if want is not None:
            seen += 1
            assert want == got[before]
    assert seen >= 10
    assert ring.first() is None


def test_paced_consume_pauses_between_chunks_and_loses_nothing(ring: RingBuffer) -> None:
    ring.consume(lambda v: None)
    got: list[int] = []
    log: list[str] = []

    def take(view: memoryview) -> None:
        got.append(struct.unpack_from("<Q", view, 0)[0])
        log.append("r")

    for _ in range(14):  # 12 submitted (2 discarded): fits the one-page ring
        os.getppid()
    n = ring.consume_paced(take, 100, 5, lambda: log.append("p"))
    assert n == len(got) == 12
    assert got == sorted(got)
    # A pause after each 5 records while more may follow: never after the last.
    assert "".join(log) == "rrrrrprrrrrprr"
    assert ring.available() == 0
    for _ in range(14):
        os.getppid()
    assert ring.consume_paced(take, 7, 5, lambda: log.append("p")) == 7  # the limit holds
    assert ring.consume(lambda v: None) == 5
