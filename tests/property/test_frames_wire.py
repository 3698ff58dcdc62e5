"""The control frames the websocket encodes without building models are byte for byte what the
frame models (the AsyncAPI contract) serialise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams import frames as f

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
