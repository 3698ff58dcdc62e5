"""The control frames the websocket encodes without building models are byte for byte what the
frame models (the AsyncAPI contract) serialise; compact event frames fit their model and say what
the event frame says; the websocket bytes built once per event read back on any socket."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from domain.base import format_time
from domain.events import Event
from streams import frames as f
from streams.fanout import DEFLATE_BITS, Wire, compact_event_frame, event_frame

ids = st.text()  # the server sends validated ids; the encoding agrees on any text
seqs = st.integers(min_value=0, max_value=f.MAX_SEQ)


def test_the_pong_frame_is_the_models() -> None:
    assert f.Pong().model_dump_json() == f.PONG_WIRE


@given(channel_id=ids, head_seq=seqs)
def test_the_subscribed_frame_is_the_models(channel_id: str, head_seq: int) -> None:
    assert (
        f.subscribed_wire(channel_id, head_seq)
        == f.Subscribed(channel_id=channel_id, head_seq=head_seq).model_dump_json()
    )


@given(channel_id=ids)
def test_the_unsubscribed_frame_is_the_models(channel_id: str) -> None:
    assert f.unsubscribed_wire(channel_id) == f.Unsubscribed(channel_id=channel_id).model_dump_json()


# --- event frames: compact, and their websocket bytes built once for every socket ---------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
payloads = st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=6)
times = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1)).map(
    lambda moment: format_time(moment.replace(tzinfo=UTC))
)


@given(channel_id=st.text(min_size=1, max_size=20), seq=seqs, payload=payloads, at=times, version=st.integers(1, 3))
def test_a_compact_event_frame_is_the_models_and_keeps_what_the_event_frame_says(
    channel_id: str, seq: int, payload: dict[str, Any], at: str, version: int
) -> None:
    event = Event(event_id="e1", tenant_id="t1", stream=f"channel:{channel_id}", seq=seq, position=7,
                  type="MessagePosted", schema_version=version, occurred_at=at, actor="user:a",
                  payload=payload)  # fmt: skip
    compact = orjson.loads(compact_event_frame(event))
    f.CompactEvent.model_validate(compact, strict=True)
    full = orjson.loads(event_frame(event))["event"]
    assert (compact["ch"], compact["seq"], compact["ev"]) == (channel_id, seq, full["type"])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert epoch + timedelta(milliseconds=compact["at"]) == datetime.fromisoformat(full["occurred_at"])
    for key, value in full["payload"].items():  # what is left out of d is what reads as null or empty
        assert key not in compact["d"] if value is None or value == [] or value == {} else compact["d"][key] == value
    assert compact.get("v") == (None if version == 1 else version)


def read_frames(data: bytes) -> list[tuple[bool, bytes]]:
    """(compressed, payload) of each unmasked server frame in ``data`` (RFC 6455 5.2)."""
    out, i = [], 0
    while i < len(data):
        first, n, i = data[i], data[i + 1] & 0x7F, i + 2
        assert first & 0x8F == 0x81  # FIN, text
        if n == 126:
            n, i = struct.unpack_from("!H", data, i)[0], i + 2
        elif n == 127:
            n, i = struct.unpack_from("!Q", data, i)[0], i + 8
        out.append((bool(first & 0x40), data[i : i + n]))
        i += n
    return out


long_texts = st.integers(min_value=100, max_value=40_000).map(lambda n: "ab" * n)  # 16- and 64-bit lengths


@given(texts=st.lists(st.text(max_size=300) | long_texts, max_size=6))
def test_shared_frames_read_back_on_a_socket_that_keeps_its_inflate_context(texts: list[str]) -> None:
    """Frames deflated once with no context read back in sequence on one socket, whose client
    keeps its window (as a client that was not told client-side no_context_takeover does)."""
    inflate = zlib.decompressobj(-DEFLATE_BITS)
    stream = b"".join(Wire(t).deflated() for t in texts) + b"".join(Wire(t).plain() for t in texts)
    shown = []
    for compressed, data in read_frames(stream):
        shown.append((inflate.decompress(data + b"\x00\x00\xff\xff") if compressed else data).decode())
    assert shown == texts + texts
