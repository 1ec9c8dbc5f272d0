"""Pack a checkpoint directory into one tar file and unpack it safely on the other node.

The tar is uncompressed on purpose: checkpoints are mostly tensors that do not compress, and
the transfer must run at disk/network speed. The SHA-256 digest covers the whole tar file and
is computed while packing, so the sender never reads the file twice.

Unpacking treats the archive as hostile: absolute names, ``..``, links that leave the target
directory, device files and FIFOs are refused, and the total size is held to a quota before a
single byte is written. Extraction goes to a temporary sibling directory that is renamed into
place only when complete, so a failed unpack leaves nothing half-written behind.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import posixpath
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024  # one transfer chunk; also the read size while packing
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class ArchiveError(Exception):
    """A checkpoint archive could not be packed or unpacked.

    ``reason`` is one of ``"unsafe"`` (hostile member), ``"too_large"`` (over the quota),
    ``"disk_full"``, ``"corrupt"`` (not a tar, truncated, digest mismatch), ``"missing"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ArchiveInfo:
    """A packed checkpoint: where the tar is, its size and its SHA-256 (hex)."""

    path: Path
    size_bytes: int
    sha256: str
    files: int


class _HashingWriter:
    """File object that hashes and counts what tarfile writes through it."""

    def __init__(self, raw: BinaryIO, on_written: Callable[[int], None] | None = None) -> None:
        self._raw = raw
        self._on_written = on_written
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:  # an unbuffered write may be short
            n = self._raw.write(view)
            view = view[n or 0:]
        self.digest.update(data)
        self.size += len(data)
        if self._on_written is not None:
            self._on_written(self.size)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


def _disk_error(exc: OSError, where: Path, action: str) -> ArchiveError:
    if exc.errno in _DISK_FULL_ERRNOS:
        return ArchiveError("disk_full", f"disk full while {action} {where}: {exc.strerror}; free space on that filesystem or raise its quota")
    return ArchiveError("corrupt", f"cannot {action} {where}: {exc}")


_TAR_BLOCK = 512
_PER_MEMBER_BOUND = 4 * _TAR_BLOCK  # header plus a generous PAX extended header
_TAIL_BOUND = 2 * CHUNK_BYTES  # end-of-archive blocks and the final record padding


def estimate_tar_bytes(src_dir: Path) -> int:
    """An upper bound of the size of ``pack(src_dir)``'s tar, from a walk of the directory."""
    total = _TAIL_BOUND
    for root, dirs, names in os.walk(src_dir):
        for name in dirs + names:
            total += _PER_MEMBER_BOUND + 2 * len(os.path.join(root, name).encode())
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                size = os.path.getsize(full)
                total += -(-size // _TAR_BLOCK) * _TAR_BLOCK
    return total


def pack(src_dir: Path, tar_path: Path, on_written: Callable[[int], None] | None = None) -> ArchiveInfo:
    """Write ``src_dir``'s contents to ``tar_path`` (uncompressed tar); return size and digest.

    ``on_written(n)`` is called as the file grows: its first ``n`` bytes are on disk and
    readable (so a sender can stream while packing).

    Raises ArchiveError("missing") when ``src_dir`` is not a directory, ("disk_full") when
    the disk fills.
    """
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise ArchiveError("missing", f"checkpoint directory {src_dir} does not exist; the job wrote no checkpoint")
    tar_path = Path(tar_path)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    files = 0
    try:
        # Unbuffered: tarfile's stream already writes in 1 MiB blocks, and what on_written
        # reports must be readable by another file descriptor.
        with open(tar_path, "wb", buffering=0) as raw:
            out = _HashingWriter(raw, on_written)
            # Stream mode ("w|") writes sequentially through our hashing writer.
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK_BYTES,  # type: ignore[arg-type]
                              copybufsize=CHUNK_BYTES) as tar:
                for root, dirs, names in os.walk(src_dir):
                    dirs.sort()
                    rel_root = os.path.relpath(root, src_dir)
                    for name in sorted(dirs) + sorted(names):
                        full = os.path.join(root, name)
                        arc = name if rel_root == "." else posixpath.join(Path(rel_root).as_posix(), name)
                        tar.add(full, arcname=arc, recursive=False)
                        if not (os.path.isdir(full) and not os.path.islink(full)):
                            files += 1
            # No fsync: the tar is scratch. After a crash the source restarts the job from the
            # checkpoint directory itself, never from this file.
            raw.flush()
    except OSError as exc:
        tar_path.unlink(missing_ok=True)
        raise _disk_error(exc, tar_path, "packing the checkpoint to") from None
    return ArchiveInfo(path=tar_path, size_bytes=out.size, sha256=out.digest.hexdigest(), files=files)


def iter_chunks(tar_path: Path, offset: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, data)`` chunks of ``tar_path`` starting at ``offset``."""
    with open(tar_path, "rb") as f:
        f.seek(offset)
        while True:
            data = f.read(chunk_bytes)
            if not data:
                return
            yield offset, data
            offset += len(data)


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of a whole file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _clean_name(name: str) -> str | None:
    """The member name normalised, or None when it is absolute or climbs out with '..'."""
    if not name or name.startswith("/") or ".." in name.split("/"):
        return None
    return posixpath.normpath(name)


def check_members(tar: tarfile.TarFile, limit_bytes: int | None) -> int:
    """Validate every member; return the total size of regular files in bytes.

    Raises ArchiveError("unsafe") naming the first hostile member, ("too_large") when the
    files add up to more than ``limit_bytes``.
    """
    checker = _MemberChecker(limit_bytes)
    for m in tar.getmembers():
        checker.check(m)
    return checker.total


class _MemberChecker:
    """The safety rules, one member at a time (so a stream can be checked as it arrives)."""

    def __init__(self, limit_bytes: int | None) -> None:
        self.limit_bytes = limit_bytes
        self.total = 0
        self.names: set[str] = set()

    def check(self, m: tarfile.TarInfo) -> None:
        limit_bytes, names = self.limit_bytes, self.names
        name = _clean_name(m.name)
        if name is None:
            raise ArchiveError("unsafe", f"checkpoint member {m.name!r} has an absolute path or '..'; refusing the archive")
        if m.isdev() or m.isfifo() or not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise ArchiveError("unsafe", f"checkpoint member {m.name!r} is a device file or FIFO; refusing the archive")
        if m.issym():
            if m.linkname.startswith("/"):
                raise ArchiveError("unsafe", f"checkpoint symlink {m.name!r} points to absolute path {m.linkname!r}; refusing the archive")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            if target == ".." or target.startswith("../"):
                raise ArchiveError("unsafe", f"checkpoint symlink {m.name!r} -> {m.linkname!r} leaves the checkpoint directory; refusing the archive")
        if m.islnk():
            target = _clean_name(m.linkname)
            if target is None or target not in names:
                raise ArchiveError("unsafe", f"checkpoint hard link {m.name!r} -> {m.linkname!r} does not point to an earlier member; refusing the archive")
        if m.isreg():
            self.total += m.size
            if limit_bytes is not None and self.total > limit_bytes:
                raise ArchiveError("too_large", f"checkpoint holds more than the {limit_bytes}-byte quota (at member {m.name!r}); raise the migration quota on this node")
        names.add(name)


F_SETPIPE_SZ = 1031  # Linux fcntl: resize a pipe's buffer


def _grow_pipe(fd: int) -> None:
    """A 64 KiB pipe turns each 1 MiB chunk into 16 blocking hand-overs between the receiver
    and the unpack thread (measured: the transfer's bottleneck); 1 MiB makes it one."""
    try:
        import fcntl

        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK_BYTES)
    except (OSError, ImportError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: slower, still correct


class StreamUnpacker:
    """Unpacks a tar while its bytes arrive (``feed`` them in order), into a hidden sibling
    of ``dest_dir``; ``finish()`` renames it into place. Same rules as :func:`unpack`.

    A receiver that feeds chunks as they land has the checkpoint on disk when the last byte
    arrives, instead of writing it all again at commit. Nothing reaches ``dest_dir`` before
    ``finish()``, which the caller invokes only after verifying the digest.
    """

    def __init__(self, dest_dir: Path, limit_bytes: int | None = None) -> None:
        self.dest_dir = Path(dest_dir)
        self.tmp = self.dest_dir.with_name(f".{self.dest_dir.name}.unpacking")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.error: ArchiveError | None = None
        self.total = 0
        r, self._w = os.pipe()
        _grow_pipe(self._w)
        self._r = os.fdopen(r, "rb")
        self._thread = threading.Thread(target=self._run, args=(limit_bytes,), name=f"unpack-{self.dest_dir.name}", daemon=True)
        self._thread.start()

    def _run(self, limit_bytes: int | None) -> None:
        checker = _MemberChecker(limit_bytes)
        try:
            with tarfile.open(fileobj=self._r, mode="r|", bufsize=CHUNK_BYTES, copybufsize=CHUNK_BYTES) as tar:
                for m in tar:
                    checker.check(m)
                    tar.extract(m, self.tmp, filter="data")
            self.total = checker.total
            while self._r.read(CHUNK_BYTES):  # the record padding after the end blocks
                pass
        except ArchiveError as exc:
            self.error = exc
        except tarfile.FilterError as exc:
            self.error = ArchiveError("unsafe", f"checkpoint archive refused: {exc}")
        except tarfile.TarError as exc:
            self.error = ArchiveError("corrupt", f"checkpoint archive is not a valid tar: {exc}")
        except OSError as exc:
            self.error = _disk_error(exc, self.dest_dir, "unpacking the checkpoint into")
        finally:
            self._r.close()

    def feed(self, data: bytes) -> None:
        """Hand the next bytes of the tar over (blocks while the unpacker catches up)."""
        if self.error is not None or self._w < 0:
            return
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._w, view)
                view = view[n:]
        except BrokenPipeError:
            pass  # the unpacker stopped: its error is reported by finish()

    def _close_writer(self) -> None:
        if self._w >= 0:
            os.close(self._w)
            self._w = -1
        self._thread.join()

    def finish(self) -> int:
        """All bytes fed: wait, then move the tree to ``dest_dir``; bytes of files.

        Raises ArchiveError as :func:`unpack` does (and leaves nothing behind).
        """
        self._close_writer()
        if self.error is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise self.error
        shutil.rmtree(self.dest_dir, ignore_errors=True)
        os.rename(self.tmp, self.dest_dir)
        return self.total

    def abort(self) -> None:
        self._close_writer()
        shutil.rmtree(self.tmp, ignore_errors=True)


def unpack(tar_path: Path, dest_dir: Path, limit_bytes: int | None = None, sha256: str | None = None) -> int:
    """Unpack ``tar_path`` into ``dest_dir`` (which must not exist yet); return bytes of files.

    When ``sha256`` is given the tar's digest is checked first. On any error nothing is left
    at ``dest_dir``. Raises ArchiveError ("corrupt", "unsafe", "too_large", "disk_full").
    """
    tar_path, dest_dir = Path(tar_path), Path(dest_dir)
    if dest_dir.exists():
        raise ArchiveError("corrupt", f"unpack destination {dest_dir} already exists; remove it first")
    if sha256 is not None:
        actual = sha256_file(tar_path)
        if actual != sha256:
            raise ArchiveError("corrupt", f"checkpoint digest mismatch: expected sha256 {sha256}, received {actual}; the transfer was corrupted")
    tmp = dest_dir.with_name(f".{dest_dir.name}.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(tar_path, mode="r:", copybufsize=CHUNK_BYTES) as tar:
            total = check_members(tar, limit_bytes)
            tmp.mkdir(parents=True)
            # The data filter re-checks every path against tmp (defence in depth).
            tar.extractall(tmp, filter="data")
        os.rename(tmp, dest_dir)
        return total
    except ArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except tarfile.FilterError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError("unsafe", f"checkpoint archive refused: {exc}") from None
    except tarfile.TarError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError("corrupt", f"checkpoint archive {tar_path} is not a valid tar: {exc}") from None
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_error(exc, dest_dir, "unpacking the checkpoint into") from None
