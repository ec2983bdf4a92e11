"""HPACK decoding that admits what it missed: exact from the start, exact-or-unknown after."""

from __future__ import annotations

import random

import pytest
from hpack import Encoder
from hypothesis import given, settings
from hypothesis import strategies as st

from ebpf_tracer.protocols.http2.headers import WANTED, HeaderDecoder, HpackError

REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.Svc/Method"),
           (":authority", "svc:50051"), ("content-type", "application/grpc"),
           ("user-agent", "grpc-python/1.0"), ("te", "trailers"), ("x-secret", "s3cr3t")]


def exact() -> HeaderDecoder:
    d = HeaderDecoder()
    d.mark_exact()
    return d


def wanted(headers: list[tuple[str, str]]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for k, v in headers:
        out.setdefault(k.encode(), v.encode())
    return {k: v for k, v in out.items() if k in WANTED}


def test_decodes_what_hpack_encodes_and_keeps_only_wanted_fields() -> None:
    enc, dec = Encoder(), exact()
    for _ in range(3):  # literals first, then dynamic-table references
        fields, unknown = dec.decode(enc.encode(REQUEST))
        assert fields == wanted(REQUEST)
        assert unknown == 0
    assert b"x-secret" not in fields and b"s3cr3t" not in fields.values()


def test_huffman_and_plain_literals() -> None:
    for huffman in (True, False):
        enc, dec = Encoder(), exact()
        fields, _ = dec.decode(enc.encode([(":path", "/a/b?c=d"), ("user-agent", "ua/1")],
                                          huffman=huffman))
        assert fields == {b":path": b"/a/b?c=d", b"user-agent": b"ua/1"}


def test_never_indexed_literals() -> None:
    enc, dec = Encoder(), exact()
    from hpack import NeverIndexedHeaderTuple
    block = enc.encode([NeverIndexedHeaderTuple(":path", "/secret"), ("user-agent", "u")])
    assert block[0] & 0xF0 == 0x10
    fields, _ = dec.decode(block)
    assert fields[b":path"] == b"/secret"


def test_joined_late_unknown_entries_are_reported_not_guessed() -> None:
    enc = Encoder()
    enc.encode(REQUEST)  # the tracer missed this block: its entries are in the table
    late = HeaderDecoder()
    fields, unknown = late.decode(enc.encode(REQUEST))
    # :method POST and :scheme http are static; the rest was indexed before we joined
    assert fields == {b":method": b"POST", b":scheme": b"http"}
    assert unknown == 6


def test_entries_added_after_joining_are_exact_at_their_shifting_index() -> None:
    enc = Encoder()
    enc.encode(REQUEST)
    late = HeaderDecoder()
    paths = []
    for i in range(20):
        hs = [(":method", "GET"), (":path", f"/item/{i % 5}"), ("user-agent", "grpc-python/1.0")]
        fields, unknown = late.decode(enc.encode(hs))
        paths.append(fields.get(b":path"))
        assert fields[b":method"] == b"GET"
        assert unknown == (1 if b"user-agent" not in fields else 0)
        assert b"user-agent" not in fields  # indexed before we joined, never seen
    assert paths == [f"/item/{i % 5}".encode() for i in range(20)]


def test_eviction_and_whole_again() -> None:
    """Once the entries seen fill the table, nothing older can remain: the table is whole."""
    enc = Encoder()
    enc.encode(REQUEST)
    late = HeaderDecoder()
    late.decode(enc.encode([(":path", "/x")]))
    assert not late.whole
    late.decode(b"\x3f\xe1\x1f")  # size update to 4096: the size is known from now on
    enc.header_table_size = 4096
    for i in range(60):  # ~100 bytes each: the 4096-byte table turns over
        late.decode(enc.encode([("x-filler", "v" * 60 + str(i))]))
    assert late.whole
    fields, unknown = late.decode(enc.encode(REQUEST))
    assert unknown == 0 or fields == wanted(REQUEST)


def test_table_size_update_to_zero_makes_a_late_decoder_whole() -> None:
    enc = Encoder()
    enc.encode(REQUEST)
    enc.header_table_size = 0
    enc.header_table_size = 4096
    late = HeaderDecoder()
    fields, unknown = late.decode(enc.encode(REQUEST))  # starts with updates 0, 4096
    assert (fields, unknown) == (wanted(REQUEST), 0)
    assert late.whole


def test_size_update_evicts_exactly() -> None:
    enc, dec = Encoder(), exact()
    for i in range(30):
        dec.decode(enc.encode([(":path", f"/p{i}"), ("user-agent", f"ua{i}")]))
    enc.header_table_size = 256
    for i in range(30):
        fields, unknown = dec.decode(enc.encode([(":path", f"/p{i % 7}"), ("user-agent", "u")]))
        assert fields[b":path"] == f"/p{i % 7}".encode() and unknown == 0
    assert dec.size <= 256


def test_entry_larger_than_the_table_empties_it() -> None:
    enc, dec = Encoder(), exact()
    enc.header_table_size = 100
    dec.decode(enc.encode([(":path", "/a")]))
    fields, unknown = dec.decode(enc.encode([("user-agent", "u" * 200), (":path", "/a")]))
    assert fields == {b"user-agent": b"u" * 200, b":path": b"/a"} and unknown == 0
    assert dec.size <= 100


def test_settings_bound_the_table_size_of_an_exact_connection() -> None:
    dec = exact()
    with pytest.raises(HpackError):
        dec.decode(b"\x3f\xe1\x3f")  # update to 8192 > SETTINGS' 4096
    dec = exact()
    dec.allow_table_size(8192)
    dec.decode(b"\x3f\xe1\x3f")
    assert dec.max_size == 8192
    late = HeaderDecoder()  # a late joiner may have missed the SETTINGS: no error
    late.decode(b"\x3f\xe1\x3f")


def test_memory_cap_drops_entries_to_unknown() -> None:
    enc = Encoder()
    enc.header_table_size = 65536
    dec = HeaderDecoder(max_table_size=512)
    dec.mark_exact()
    dec.allow_table_size(65536)
    blocks = [enc.encode([(":path", f"/long/path/{i:04d}" + "x" * 60)]) for i in range(20)]
    for b in blocks:
        dec.decode(b)
    assert dec.size <= 512 and not dec.whole
    fields, unknown = dec.decode(enc.encode([(":path", "/long/path/0000" + "x" * 60)]))
    assert fields == {} and unknown == 1  # evicted here, still in the encoder's table


@pytest.mark.parametrize("block, reason", [
    (b"\x80", "index 0"),
    (b"\xff\x80\x80\x80\x80\x80\x80\x80\x01", "integer overflow"),
    (b"\xc0", "index beyond table"),
    (b"\x04\x85ab", "truncated block"),  # literal :path, huffman, 5 bytes announced
    (b"\x04\x81\xff", "bad huffman"),
    (b"\x82\x20", "table size update after a field"),
])
def test_errors(block: bytes, reason: str) -> None:
    with pytest.raises(HpackError, match=reason):
        exact().decode(block)


def test_header_list_size_is_bounded() -> None:
    enc = Encoder()
    dec = HeaderDecoder(max_header_list_size=1024)
    dec.mark_exact()
    with pytest.raises(HpackError, match="too large"):
        dec.decode(enc.encode([("x-big", "a" * 2000)]))


def test_truncated_block_decodes_its_prefix_then_loses_the_table() -> None:
    enc, dec = Encoder(), exact()
    block = enc.encode(REQUEST)
    cut = block.index(b"\x82") + 1 if b"\x82" in block else 1
    fields, unknown = dec.decode(block[: cut + 1], truncated=True)
    assert set(fields.items()) <= set(wanted(REQUEST).items())
    assert not dec.whole and dec.size == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(
    st.sampled_from([":path", ":authority", "user-agent", "content-type", "x-a", "x-b",
                     "grpc-status"]),
    st.text("abc/xyz019", min_size=0, max_size=40)), min_size=1, max_size=6),
    min_size=1, max_size=25),
    st.integers(0, 24), st.sampled_from([256, 1024, 4096]), st.booleans())
def test_random_blocks_join_anywhere_exact_or_unknown(
    blocks: list, join: int, table: int, huffman: bool
) -> None:
    """Whatever block the decoder starts at, each field is the encoder's or missing."""
    enc = Encoder()
    enc.header_table_size = table
    encoded = [enc.encode([(":method", "GET"), *hs], huffman=huffman) for hs in blocks]
    exact_dec, late = exact(), HeaderDecoder()
    exact_dec.allow_table_size(table)
    for i, (hs, block) in enumerate(zip(blocks, encoded, strict=True)):
        truth = wanted([(":method", "GET"), *hs])
        fields, unknown = exact_dec.decode(block)
        assert fields == truth and unknown == 0
        if i >= join:
            fields, unknown = late.decode(block)
            sent = [(k.encode(), v.encode()) for k, v in [(":method", "GET"), *hs]]
            for k, v in fields.items():
                # the value sent (a name repeated after an unknown entry may give its 2nd)
                assert truth[k] == v or (unknown and (k, v) in sent)
            missing = set(truth) - set(fields)
            assert not missing or unknown > 0


def test_random_traffic_keeps_entry_sizes_exact() -> None:
    rng = random.Random(7)
    enc, dec = Encoder(), exact()
    for _ in range(300):
        hs = [(":path", "/" + "".join(rng.choices("abcdef", k=rng.randint(0, 30)))),
              (rng.choice(["x-1", "x-2", "user-agent"]), "v" * rng.randint(0, 200))]
        fields, unknown = dec.decode(enc.encode(hs))
        assert unknown == 0 and fields[b":path"] == hs[0][1].encode()
        assert dec.size == enc.header_table._current_size
