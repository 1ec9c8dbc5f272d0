"""How NodeSamples become chunk rows of a recording and back (schema v2), plus the v1 reader.

A sample is split into a *shape* and a vector of numbers. The shape is the sample's msgpack
with every number replaced by a fixed-width slot (ints as msgpack int64 ``0xd3``, floats as
float64 ``0xcb``); it is the same for thousands of consecutive samples and is stored once in
the ``shapes`` table. Writing a number into its slot gives back the exact msgpack, so a
decoded sample equals the recorded one bit for bit.

A chunk holds up to :data:`CHUNK_ROWS` consecutive samples of one node. Rows of the same shape
form a group whose numbers are a matrix (rows x slots). Each column is turned into integers
losslessly: ints as they are, floats as integer fixed point (``round(x * 10**e)`` for the
smallest e in 0..6 that gives back exactly the same float, e.g. CPU seconds in 1/100 s
ticks), else their IEEE bits. Columns are delta-coded down the rows, zigzagged, laid out
column after column and split into 8 byte planes (the high planes are nearly all zero), and
the chunk is compressed as a whole. The process list of scan ticks (``procs``) is kept
apart, as msgpack, so scan ticks do not change the shape.

Chunk body: ``b"C2"`` + zlib(msgpack(map)) with keys ``rows`` (count), ``shape`` (shape id of
each row; 0 = stored whole in ``raw``), ``groups`` (list of ``[shape_id, codes, planes]``:
``codes`` one byte per slot: 0 int, 1 float bits, 2+e float x 10**e), ``raw`` ({row: msgpack})
and ``procs`` ({row: msgpack of the procs list}).

Over 500 lines on purpose: the encoder and the decoder of one byte format are read side by
side (every step of one is undone by a step of the other), so they stay in one module.
"""

from __future__ import annotations

import itertools
import struct
import sys
import zlib
from array import array
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec

from agentd.metrics.samples import NodeSample

__all__ = [
    "CHUNK_MAGIC", "CHUNK_ROWS", "KEYFRAME_EVERY", "Shape", "ShapeBook", "SplitSample", "UnknownShape", "decode_chain",
    "decode_chunk", "decode_sample", "decode_v1_row", "encode_chunk", "inflate", "shape_of", "split_sample", "xor_bytes",
]

#: Samples per chunk row: bigger compresses better; a seek decodes one chunk per node.
CHUNK_ROWS = 60
CHUNK_MAGIC = b"C2"
CHUNK_ZLIB_LEVEL = 9
#: Bounds on what one chunk may decode to, whatever its header claims: a recording may come
#: from anyone, and a few KiB of zlib can claim gigabytes (a decompression bomb). Real chunks
#: are far below these (60 samples of a few KiB each).
MAX_CHUNK_ROWS = 4096
MAX_CHUNK_PAYLOAD_BYTES = 32 * 2**20
MAX_CHUNK_DECODED_BYTES = 64 * 2**20
#: One sample's msgpack (a tail row, a v1 row) is never bigger than this.
MAX_SAMPLE_BYTES = 16 * 2**20
#: Fixed-point exponents tried for float columns (x * 10**e must give back the float exactly).
FLOAT_EXPONENTS = (0, 2, 1, 3, 4, 6, 5)
CODE_INT, CODE_FLOAT_BITS, CODE_FIXED = 0, 1, 2

_INT_SENTINEL = -0x5A5A5A5A5A5A5A5B  # < -2**31, so msgpack writes it as int64 (0xd3)
_FLOAT_SENTINEL = -1.0339757656912846e-25  # bits 0xBA9F... unlikely in any real sample
_INT_SLOT = b"\xd3" + struct.pack(">q", _INT_SENTINEL)
_FLOAT_SLOT = b"\xcb" + struct.pack(">d", _FLOAT_SENTINEL)
#: Templates whose slot offsets are remembered (consecutive samples nearly always share one).
SLOT_CACHE = 256
_slot_cache: dict[bytes, list[int]] = {}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_PROCS_KEY = msgspec.msgpack.encode("procs")

_MASK64 = 2**64 - 1
_LITTLE = sys.byteorder == "little"
#: numpy, when installed, decodes chunks 2-3x faster; without it (a headless node with no
#: extras) the same format is read in pure Python. Encoding is always pure Python.
USE_NUMPY = True
_np_module: Any = None


def _numpy() -> Any:
    """numpy, imported on first use (agentctl should not pay for it at start), or None."""
    global _np_module
    if not USE_NUMPY:
        return None
    if _np_module is None:
        try:
            import numpy
        except ImportError:  # not installed, or kept out of this process (agentd does that)
            _np_module = False
        else:
            _np_module = numpy
    return _np_module or None


_encoder = msgspec.msgpack.Encoder()
_sample_decoder = msgspec.msgpack.Decoder(NodeSample)


def decode_sample(raw: bytes) -> NodeSample:
    return _sample_decoder.decode(raw)


# ---- shapes --------------------------------------------------------------------------------


class Shape:
    """A sample template: msgpack with fixed-width slots, and the byte offsets of its slots."""

    __slots__ = ("template", "offsets", "is_float", "_index", "_packer", "_pieces")

    def __init__(self, template: bytes, offsets: Sequence[int]) -> None:
        self.template = template
        self.offsets = [int(o) for o in offsets]
        self.is_float = [template[o] == 0xCB for o in self.offsets]
        self._index: Any = None
        self._packer: struct.Struct | None = None
        self._pieces: list[bytes] = []

    def slot_bytes_index(self) -> Any:
        """(slots * 8) byte positions of the slots' payloads in the template (numpy)."""
        if self._index is None:
            np = _numpy()
            self._index = (np.asarray(self.offsets, np.int64)[:, None] + 1 + np.arange(8)).reshape(-1)
        return self._index

    def pack(self, values: list[Any]) -> bytes:
        """The template with ``values`` in its slots (pure Python: one struct call)."""
        if self._packer is None:
            fmt, pos = [">"], 0
            for o, f in zip(self.offsets, self.is_float):
                self._pieces.append(self.template[pos:o + 1])
                fmt.append(f"{o + 1 - pos}s" + ("d" if f else "q"))
                pos = o + 9
            self._pieces.append(self.template[pos:])
            fmt.append(f"{len(self.template) - pos}s")
            self._packer = struct.Struct("".join(fmt))
        args: list[Any] = []
        for piece, v in zip(self._pieces, values):
            args.append(piece)
            args.append(v)
        args.append(self._pieces[-1])
        return self._packer.pack(*args)

    def offsets_blob(self) -> bytes:
        return struct.pack(f"<{len(self.offsets)}I", *self.offsets)

    @classmethod
    def from_row(cls, template: bytes, offsets_blob: bytes) -> Shape:
        return cls(template, struct.unpack(f"<{len(offsets_blob) // 4}I", offsets_blob))


class SplitSample(msgspec.Struct):
    """A sample taken apart: its shape's template and slot offsets, its numbers, its procs."""

    template: bytes
    offsets: tuple[int, ...]
    values: list[Any]
    procs: bytes | None  # msgpack of the procs list, None when the sample has none
    raw: bytes | None = None  # the whole msgpack when the sample does not fit a shape


def _walk(obj: Any, values: list[Any], kinds: list[bool]) -> Any:
    """Copy of a to_builtins() tree with every int/float replaced by its slot sentinel; the
    numbers go to ``values`` in document order (leaves are handled inline: this is hot)."""
    if type(obj) is dict:
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            t = type(v)
            if t is int:
                values.append(v)
                kinds.append(False)
                out[k] = _INT_SENTINEL
            elif t is float:
                values.append(v)
                kinds.append(True)
                out[k] = _FLOAT_SENTINEL
            elif t is dict or t is list:
                out[k] = _walk(v, values, kinds)
            else:
                out[k] = v
        return out
    res: list[Any] = []
    for v in obj:
        t = type(v)
        if t is int:
            values.append(v)
            kinds.append(False)
            res.append(_INT_SENTINEL)
        elif t is float:
            values.append(v)
            kinds.append(True)
            res.append(_FLOAT_SENTINEL)
        elif t is dict or t is list:
            res.append(_walk(v, values, kinds))
        else:
            res.append(v)
    return res


def split_sample(sample: NodeSample) -> SplitSample:
    """Take a sample apart into shape and numbers (or keep it whole when it does not fit)."""
    procs = _encoder.encode(sample.procs) if sample.procs else None
    body = msgspec.to_builtins(sample)
    body.pop("procs", None)
    values: list[Any] = []
    kinds: list[bool] = []
    skeleton = _walk(body, values, kinds)
    template = _encoder.encode(skeleton)
    offsets = _find_slots(template, kinds)
    # procs are added back by bumping the fixmap's count, so the template must be a fixmap
    fits = offsets is not None and (procs is None or 0x80 <= template[0] < 0x8F)
    if fits:
        fits = all(_INT64_MIN <= v <= _INT64_MAX for v, f in zip(values, kinds) if not f)
    if not fits:
        return SplitSample(template=b"", offsets=(), values=[], procs=None, raw=_encoder.encode(sample))
    return SplitSample(template=template, offsets=tuple(offsets), values=values, procs=procs)  # type: ignore[arg-type]


def _find_slots(template: bytes, kinds: list[bool]) -> list[int] | None:
    """Offsets of the slots in walk order, or None if a slot pattern also occurs elsewhere."""
    known = _slot_cache.get(template)
    if known is not None:
        return known
    found: list[tuple[int, bool]] = []
    for pattern, is_float in ((_INT_SLOT, False), (_FLOAT_SLOT, True)):
        start = 0
        while (i := template.find(pattern, start)) >= 0:
            found.append((i, is_float))
            start = i + 9
    found.sort()
    # a pattern inside a string would overlap a slot or add one: either way the kinds differ
    if [f for _, f in found] != kinds or any(b[0] - a[0] < 9 for a, b in itertools.pairwise(found)):
        return None
    offsets = [i for i, _ in found]
    if len(_slot_cache) >= SLOT_CACHE:
        del _slot_cache[next(iter(_slot_cache))]
    _slot_cache[template] = offsets
    return offsets


def shape_of(split: SplitSample) -> Shape:
    return Shape(split.template, split.offsets)


# ---- chunks --------------------------------------------------------------------------------


def _bits_of(col: list[float]) -> list[int]:
    a = array("d", col)
    return list(array("q", a.tobytes()))


def _floats_of(bits: list[int]) -> list[float]:
    return list(array("d", array("q", bits).tobytes()))


def _column_code_py(col: list[float]) -> tuple[int, list[int]]:
    """Code and integers of one float column, losslessly (the same choice as the numpy path)."""
    bits = _bits_of(col)
    for e in FLOAT_EXPONENTS:
        scale = float(10**e)
        ints: list[int] = []
        for x in col:
            r = x * scale
            if not abs(r) < 2.0**53:  # also NaN and inf
                break
            ints.append(round(r))
        else:
            # check exactly what decoding computes (this also refuses -0.0)
            if _bits_of([i / scale for i in ints]) == bits:
                return CODE_FIXED + e, ints
    return CODE_FLOAT_BITS, bits


def _planes_py(columns: list[list[int]]) -> bytes:
    """Delta down each column, zigzag, columns one after another, 8 byte planes."""
    zs = array("Q")
    for col in columns:
        prev = 0
        for v in col:
            d = (v - prev) & _MASK64
            prev = v
            if d >= 2**63:
                d -= 2**64
            zs.append(((d << 1) ^ (d >> 63)) & _MASK64)
    if not _LITTLE:
        zs.byteswap()
    b = zs.tobytes()
    return b"".join(b[k::8] for k in range(8))


def _columns_from_planes_py(planes: bytes, rows: int, cols: int) -> list[list[int]]:
    n = rows * cols
    buf = bytearray(8 * n)
    for k in range(8):
        buf[k::8] = planes[k * n:(k + 1) * n]
    zs = array("Q")
    zs.frombytes(bytes(buf))
    if not _LITTLE:
        zs.byteswap()
    out = []
    for c in range(cols):
        acc = 0
        col = []
        for z in zs[c * rows:(c + 1) * rows]:
            acc = (acc + ((z >> 1) ^ -(z & 1))) & _MASK64
            col.append(acc - 2**64 if acc >= 2**63 else acc)
        out.append(col)
    return out


def _encode_group_py(vals: list[list[Any]], is_float: list[bool]) -> tuple[bytes, bytes]:
    columns: list[list[int]] = []
    codes = bytearray()
    for c, f in enumerate(is_float):
        col = [r[c] for r in vals]
        if f:
            code, ints = _column_code_py(col)
            codes.append(code)
            columns.append(ints)
        else:
            codes.append(CODE_INT)
            columns.append(col)
    return bytes(codes), _planes_py(columns)


def encode_chunk(rows: list[tuple[int, SplitSample]]) -> bytes:
    """Body of a chunk row from (shape_id, split sample) pairs in sample order."""
    groups: dict[int, list[int]] = {}
    raw: dict[int, bytes] = {}
    procs: dict[int, bytes] = {}
    shape_ids: list[int] = []
    for i, (sid, sp) in enumerate(rows):
        if sp.raw is not None:
            raw[i] = sp.raw
            shape_ids.append(0)
            continue
        shape_ids.append(sid)
        groups.setdefault(sid, []).append(i)
        if sp.procs is not None:
            procs[i] = sp.procs
    out_groups = []
    for sid, members in groups.items():
        vals = [rows[i][1].values for i in members]
        # pure Python: as fast as building numpy matrices from these lists, and one code path
        codes, planes = _encode_group_py(vals, [type(v) is float for v in vals[0]])
        out_groups.append([sid, codes, planes])
    payload = _encoder.encode({"rows": len(rows), "shape": shape_ids, "groups": out_groups, "raw": raw, "procs": procs})
    return CHUNK_MAGIC + zlib.compress(payload, CHUNK_ZLIB_LEVEL)


def inflate(data: bytes, limit: int, zdict: bytes | None = None) -> bytes:
    """zlib-decompress ``data``, refusing (ValueError) output longer than ``limit`` bytes: the
    output is never allocated past the limit, so a decompression bomb costs ``limit`` at most."""
    d = zlib.decompressobj(zdict=zdict) if zdict is not None else zlib.decompressobj()
    try:
        # no flush(): it would inflate whatever input is left with no bound on the output
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"data cannot be decompressed ({exc})") from None
    if len(out) > limit:
        raise ValueError(f"data decompresses to more than {limit} bytes (a decompression bomb?)")
    if not d.eof:
        raise ValueError("data cannot be decompressed (the compressed stream is truncated)")
    return out


class _Payload(msgspec.Struct):
    """A chunk payload as written by :func:`encode_chunk`; lengths are checked while decoding,
    so a forged count never allocates more than the payload holds."""

    rows: int
    shape: Annotated[list[int], msgspec.Meta(max_length=MAX_CHUNK_ROWS)]
    groups: Annotated[list[tuple[int, bytes, bytes]], msgspec.Meta(max_length=MAX_CHUNK_ROWS)]
    raw: Annotated[dict[int, bytes], msgspec.Meta(max_length=MAX_CHUNK_ROWS)]
    procs: Annotated[dict[int, bytes], msgspec.Meta(max_length=MAX_CHUNK_ROWS)]


_payload_decoder = msgspec.msgpack.Decoder(_Payload)


class UnknownShape(ValueError):
    """A chunk names a shape id the caller did not pass (a file still being written has new ones)."""


def _decode_group_np(np: Any, shape: Shape, codes_b: bytes, planes: bytes, k: int) -> list[bytes]:
    codes = np.frombuffer(codes_b, np.int8)
    n_slots = len(codes)
    buf = np.tile(np.frombuffer(shape.template, np.uint8), (k, 1))
    if n_slots:
        z = np.frombuffer(planes, np.uint8).reshape(8, -1).T.copy().view("<u8").astype(np.uint64)
        z = z.reshape(n_slots, k).T
        d = (z >> np.uint64(1)).view(np.int64) ^ -(z & np.uint64(1)).view(np.int64)
        mat = np.cumsum(d, axis=0, dtype=np.int64)
        fixed = codes >= CODE_FIXED
        if fixed.any():
            scales = 10.0 ** (codes[fixed].astype(np.float64) - CODE_FIXED)
            mat[:, fixed] = (mat[:, fixed].astype(np.float64) / scales).view(np.int64)
        be = np.ascontiguousarray(mat, dtype=">i8").view(np.uint8).reshape(k, n_slots * 8)
        buf[:, shape.slot_bytes_index()] = be
    return [row.tobytes() for row in buf]


def _decode_group_py(shape: Shape, codes_b: bytes, planes: bytes, k: int) -> list[bytes]:
    columns: list[list[int] | list[float]] = []
    for code, raw in zip(codes_b, _columns_from_planes_py(planes, k, len(codes_b))):
        if code >= CODE_FIXED:
            scale = float(10 ** (code - CODE_FIXED))
            columns.append([v / scale for v in raw])
        elif code == CODE_FLOAT_BITS:
            columns.append(_floats_of(raw))
        else:
            columns.append(raw)
    return [shape.pack([col[r] for col in columns]) for r in range(k)]


def decode_chunk(body: bytes, shapes: dict[int, Shape]) -> list[bytes]:
    """msgpack of every sample of a chunk, in order. Raises ValueError on a damaged chunk, and
    on one that would decode to more than :data:`MAX_CHUNK_DECODED_BYTES`."""
    if not isinstance(body, bytes):
        raise ValueError(f"chunk body is {type(body).__name__}, not a blob")
    if body[: len(CHUNK_MAGIC)] != CHUNK_MAGIC:
        raise ValueError(f"unknown chunk format {body[:2]!r}")
    try:
        payload = _payload_decoder.decode(inflate(body[len(CHUNK_MAGIC):], MAX_CHUNK_PAYLOAD_BYTES))
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ValueError(f"chunk cannot be decoded ({exc})") from None
    shape_ids = payload.shape
    n = len(shape_ids)
    out: list[bytes | None] = [None] * n
    budget = MAX_CHUNK_DECODED_BYTES
    for i, r in payload.raw.items():
        if not 0 <= i < n:
            raise ValueError(f"chunk has a whole sample for row {i} of {n}")
        budget -= len(r)
        out[i] = r
    procs = payload.procs
    for sid, _codes, _ in payload.groups:
        shape = shapes.get(sid)
        if shape is None:
            raise UnknownShape(f"chunk refers to shape {sid}, which the file does not hold")
        # count the bytes the group will produce before producing them
        n_members = sum(1 for s in shape_ids if s == sid)
        budget -= n_members * len(shape.template)
    budget -= sum(len(p) for p in procs.values())
    if budget < 0:
        raise ValueError(f"chunk would decode to more than {MAX_CHUNK_DECODED_BYTES} bytes")
    np = _numpy()
    for sid, codes_b, planes in payload.groups:
        shape = shapes[sid]
        if len(codes_b) != len(shape.offsets):
            raise ValueError(f"chunk has {len(codes_b)} numbers for shape {sid} of {len(shape.offsets)} slots")
        if any(c > CODE_FIXED + max(FLOAT_EXPONENTS) for c in codes_b):
            raise ValueError(f"chunk group of shape {sid} has an unknown column code")
        members = [i for i, s in enumerate(shape_ids) if s == sid]
        if len(planes) != 8 * len(members) * len(codes_b):
            raise ValueError(f"chunk group of shape {sid} has {len(planes)} bytes of numbers, "
                             f"expected {8 * len(members) * len(codes_b)}")
        if np is not None:
            raws = _decode_group_np(np, shape, codes_b, planes, len(members))
        else:
            raws = _decode_group_py(shape, codes_b, planes, len(members))
        for i, raw in zip(members, raws):
            p = procs.get(i)
            if p is not None:  # add the "procs" key to the (fix)map
                if not 0x80 <= raw[0] < 0x8F:
                    raise ValueError(f"chunk row {i} cannot take a process list (shape {sid} is not a small map)")
                raw = bytes([raw[0] + 1]) + raw[1:] + _PROCS_KEY + p
            out[i] = raw
    if any(r is None for r in out):
        raise ValueError("chunk is missing rows")
    return out  # type: ignore[return-value]


# ---- schema v1 (read only: migration and old files) -----------------------------------------

#: v1 wrote a keyframe at least every this many rows.
KEYFRAME_EVERY = 30
XOR_DELTA = b"x"
DICT_DELTA = b"d"


def xor_bytes(a: bytes, b: bytes) -> bytes:
    """Bytewise XOR of two equally long byte strings."""
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def decode_v1_row(prev: bytes | None, is_key: bool, body: bytes) -> bytes:
    """v1: msgpack of one row given the msgpack of the row before it (None at a chain start).

    A v1 keyframe is ``zlib(msgpack)``; a delta row is ``b"x" + zlib(msgpack XOR prev)`` or
    ``b"d" + zlib(msgpack, zdict=prev)``."""
    if is_key:
        return inflate(body, MAX_SAMPLE_BYTES)
    if prev is None:
        raise ValueError("sample chain is broken: a delta row has no keyframe before it")
    if body[:1] == XOR_DELTA:
        data = inflate(body[1:], MAX_SAMPLE_BYTES)
        if len(prev) != len(data):
            raise ValueError("sample chain is broken: XOR delta and base differ in length")
        return xor_bytes(data, prev)
    if body[:1] == DICT_DELTA:
        return inflate(body[1:], MAX_SAMPLE_BYTES, zdict=prev[-32768:])
    raise ValueError(f"unknown sample row type {body[:1]!r}")


def decode_chain(bodies: list[tuple[bool, bytes]]) -> list[bytes]:
    """v1: msgpack encodings of a run of rows that starts at a keyframe."""
    out: list[bytes] = []
    prev: bytes | None = None
    for is_key, body in bodies:
        prev = decode_v1_row(prev, is_key, body)
        out.append(prev)
    return out


# ---- writing helpers shared by the recorder and the v1 -> v2 migration ----------------------


class ShapeBook:
    """Shape ids of a file: known templates, and the new ones not yet inserted into ``shapes``."""

    def __init__(self, rows: Sequence[tuple[int, bytes]] = ()) -> None:
        self.ids: dict[bytes, int] = {t: i for i, t in rows}
        self.next_id = max(self.ids.values(), default=0) + 1
        self.pending: list[tuple[int, bytes, bytes]] = []  # (id, template, slots) to insert

    def id_for(self, split: SplitSample) -> int:
        """The shape id of a split sample (0 for one kept whole), registering new shapes."""
        if split.raw is not None:
            return 0
        sid = self.ids.get(split.template)
        if sid is None:
            sid = self.ids[split.template] = self.next_id
            self.next_id += 1
            self.pending.append((sid, split.template, shape_of(split).offsets_blob()))
        return sid

    def take_pending(self) -> list[tuple[int, bytes, bytes]]:
        out, self.pending = self.pending, []
        return out
