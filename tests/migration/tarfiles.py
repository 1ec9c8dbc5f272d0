"""Checkpoint tars as files, for tests: agentd itself never writes one (it streams
``CheckpointTar`` and unpacks as bytes arrive), but tests need real archives to feed a target,
hostile ones included."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentd.control.checkpoint_archive import CHUNK_BYTES, ArchiveError, CheckpointTar, StreamUnpacker


@dataclass(frozen=True)
class ArchiveInfo:
    path: Path
    size_bytes: int
    sha256: str
    files: int


def pack(src_dir: Path, tar_path: Path) -> ArchiveInfo:
    """Write ``CheckpointTar(src_dir)`` to ``tar_path``; its size and SHA-256."""
    tar = CheckpointTar(src_dir)
    digest = hashlib.sha256()
    with open(tar_path, "wb") as out:
        for offset in range(0, tar.size_bytes, CHUNK_BYTES):
            block = tar.read(offset, CHUNK_BYTES)
            digest.update(block)
            out.write(block)
    return ArchiveInfo(path=Path(tar_path), size_bytes=tar.size_bytes, sha256=digest.hexdigest(), files=tar.files)


def iter_chunks(tar_path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(offset, data)`` chunks of a file."""
    with open(tar_path, "rb") as f:
        offset = 0
        while data := f.read(chunk_bytes):
            yield offset, data
            offset += len(data)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def unpack(tar_path: Path, dest_dir: Path, limit_bytes: int | None = None, sha256: str | None = None) -> int:
    """Feed a tar file to a StreamUnpacker, as a target does with arriving chunks."""
    if sha256 is not None and sha256_file(tar_path) != sha256:
        raise ArchiveError("corrupt", "checkpoint digest mismatch")
    unpacker = StreamUnpacker(dest_dir, limit_bytes)
    for _, block in iter_chunks(tar_path):
        unpacker.feed(block)
    return unpacker.finish()
