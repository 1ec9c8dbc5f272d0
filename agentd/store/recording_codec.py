"""How a NodeSample becomes a row body and back: msgpack, XOR against the previous sample, zlib.

Consecutive samples of a node mostly encode to msgpack of the same length with the same keys in
the same places; XOR with the previous encoding leaves zeros wherever nothing changed and in
the high bytes of counters and floats that changed a little, and zlib squeezes those zeros.
When the length changed (a value crossed a msgpack size class, an optional field appeared),
the row is instead deflated with the previous encoding as preset dictionary, so the unchanged
runs still cost a few bytes each.

Row bodies: a keyframe is ``zlib(msgpack)``; a delta row is ``b"x" + zlib(msgpack XOR prev)``
or ``b"d" + zlib(msgpack, zdict=prev)``. Decoding walks forward from the chain's keyframe, so a
keyframe every :data:`KEYFRAME_EVERY` samples bounds the cost of reading any one sample.
"""

from __future__ import annotations

import zlib

import msgspec

from agentd.metrics.samples import NodeSample

__all__ = ["KEYFRAME_EVERY", "SampleEncoder", "decode_chain", "xor_bytes"]

#: At most this many rows are decoded to reach any one sample (seek cost vs. file size).
KEYFRAME_EVERY = 30
ZLIB_LEVEL = 6
XOR_DELTA = b"x"
DICT_DELTA = b"d"

_encoder = msgspec.msgpack.Encoder()
_sample_decoder = msgspec.msgpack.Decoder(NodeSample)


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """Bytewise XOR of two equally long byte strings."""
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


class SampleEncoder:
    """Encodes the samples of ONE node in order; keeps the previous encoding as XOR base."""

    def __init__(self, keyframe_every: int = KEYFRAME_EVERY) -> None:
        self.keyframe_every = keyframe_every
        self._prev: bytes | None = None
        self._since_key = 0

    def reset(self) -> None:
        """Start a new chain at the next sample (after a gap or a recorder restart)."""
        self._prev = None

    def encode(self, sample: NodeSample) -> tuple[bool, bytes]:
        """Return (is_keyframe, body) for the next sample of this node."""
        raw = _encoder.encode(sample)
        prev = self._prev
        self._prev = raw
        if prev is None or self._since_key + 1 >= self.keyframe_every:
            self._since_key = 0
            return True, zlib.compress(raw, ZLIB_LEVEL)
        self._since_key += 1
        if len(prev) == len(raw):
            return False, XOR_DELTA + zlib.compress(xor_bytes(raw, prev), ZLIB_LEVEL)
        # the dictionary is the previous sample; deflate's 32 KiB window sees its tail
        co = zlib.compressobj(ZLIB_LEVEL, zdict=prev[-32768:])
        return False, DICT_DELTA + co.compress(raw) + co.flush()


def decode_chain(bodies: list[tuple[bool, bytes]]) -> list[bytes]:
    """msgpack encodings of a run of rows that starts at a keyframe (or contains one)."""
    out: list[bytes] = []
    prev: bytes | None = None
    for is_key, body in bodies:
        if is_key:
            data = zlib.decompress(body)
        elif prev is None:
            raise ValueError("sample chain is broken: a delta row has no keyframe before it")
        elif body[:1] == XOR_DELTA:
            data = zlib.decompress(body[1:])
            if len(prev) != len(data):
                raise ValueError("sample chain is broken: XOR delta and base differ in length")
            data = xor_bytes(data, prev)
        elif body[:1] == DICT_DELTA:
            do = zlib.decompressobj(zdict=prev[-32768:])
            data = do.decompress(body[1:]) + do.flush()
        else:
            raise ValueError(f"unknown sample row type {body[:1]!r}")
        out.append(data)
        prev = data
    return out


def decode_sample(raw: bytes) -> NodeSample:
    return _sample_decoder.decode(raw)
