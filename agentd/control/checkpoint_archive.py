"""A checkpoint directory as a tar stream, and the safe unpacking of one on the other node.

The tar is uncompressed on purpose: checkpoints are mostly tensors that do not compress, and
the transfer must run at disk/network speed. The source never writes it: :class:`CheckpointTar`
reads any byte range of it straight from the checkpoint files, and :class:`OrderedDigest`
hashes it (SHA-256) as it goes out. The target unpacks the bytes as they arrive
(:class:`StreamUnpacker`) and keeps no tar either, so each byte is written once per node.

Unpacking treats the archive as hostile: absolute names, ``..``, links that leave the target
directory, device files and FIFOs are refused, and the total size is held to a quota as the
members arrive. Extraction goes to a temporary sibling directory that is renamed into place
only when complete (and, on a target, only after the digest matched), so a failed unpack
leaves nothing half-written behind.
"""

from __future__ import annotations

import bisect
import errno
import hashlib
import logging
import os
import posixpath
import queue
import shutil
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def _disk_error(exc: OSError, where: Path, action: str) -> ArchiveError:
    if exc.errno in _DISK_FULL_ERRNOS:
        return ArchiveError("disk_full", f"disk full while {action} {where}: {exc.strerror}; free space on that filesystem or raise its quota")
    return ArchiveError("corrupt", f"cannot {action} {where}: {exc}")


_TAR_BLOCK = 512
_END_OF_ARCHIVE = b"\0" * (2 * _TAR_BLOCK)


@dataclass(frozen=True)
class _Segment:
    """A run of the tar: literal bytes (headers, padding) or ``length`` bytes of a file."""

    start: int
    length: int
    data: bytes = b""
    path: str = ""


class CheckpointTar:
    """A checkpoint directory seen as an uncompressed tar that is never written to disk.

    The layout (headers, file extents, padding) is fixed from one walk of the directory, so
    :meth:`read` can produce any byte range on demand, straight from the files: the sender
    resends any chunk after a dropped connection, and the source pays no tar-sized write.
    The directory must not change while it is read (the job has exited after checkpointing);
    a file that shrank is reported, never sent short.

    Raises ArchiveError("missing") when ``src_dir`` is not a directory and ("unsafe") for
    entries a checkpoint cannot hold (FIFOs, sockets, devices).
    """

    def __init__(self, src_dir: Path) -> None:
        self.src_dir = Path(src_dir)
        if not self.src_dir.is_dir():
            raise ArchiveError("missing", f"checkpoint directory {self.src_dir} does not exist; the job wrote no checkpoint")
        self.files = 0
        self._segments: list[_Segment] = []
        offset = 0
        for arcname, full, st in self._walk():
            info = tarfile.TarInfo(arcname)
            info.mtime, info.mode, info.uid, info.gid = int(st.st_mtime), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
            else:
                raise ArchiveError("unsafe", f"checkpoint entry {full} is not a file, directory or symlink; "
                                             "remove it from the checkpoint directory")
            header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            offset = self._add(offset, data=header)
            if info.isreg():
                self.files += 1
                if info.size:
                    offset = self._add(offset, length=info.size, path=full)
                    offset = self._add(offset, data=b"\0" * (-info.size % _TAR_BLOCK))
            elif info.issym():
                self.files += 1
        self.size_bytes = self._add(offset, data=_END_OF_ARCHIVE)
        self._starts = [seg.start for seg in self._segments]

    def _walk(self) -> Iterator[tuple[str, str, os.stat_result]]:
        """(name in the archive, path, lstat) of every entry, parents first, sorted."""
        for root, dirs, names in os.walk(self.src_dir):
            dirs.sort()
            rel_root = os.path.relpath(root, self.src_dir)
            for name in sorted(dirs) + sorted(names):
                full = os.path.join(root, name)
                arc = name if rel_root == "." else posixpath.join(Path(rel_root).as_posix(), name)
                yield arc, full, os.lstat(full)

    def _add(self, offset: int, *, data: bytes = b"", length: int = 0, path: str = "") -> int:
        length = length or len(data)
        if length:
            self._segments.append(_Segment(offset, length, data, path))
        return offset + length

    def read(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the tar (fewer only at its end)."""
        end = min(offset + length, self.size_bytes)
        parts: list[bytes] = []
        i = bisect.bisect_right(self._starts, offset) - 1
        while offset < end:
            seg = self._segments[i]
            take = min(end, seg.start + seg.length) - offset
            within = offset - seg.start
            parts.append(seg.data[within:within + take] if not seg.path else self._read_file(seg, within, take))
            offset += take
            i += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_file(self, seg: _Segment, within: int, length: int) -> bytes:
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                data = os.pread(fd, length, within)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ArchiveError("corrupt", f"cannot read checkpoint file {seg.path}: {exc.strerror}") from None
        if len(data) != length:
            raise ArchiveError("corrupt", f"checkpoint file {seg.path} shrank below {seg.length} bytes while it was sent; "
                                          "the job must not touch its checkpoint after exiting")
        return data


class OrderedDigest:
    """SHA-256 of a stream whose bytes are seen in order, possibly more than once (resends):
    each byte is hashed the first time it is seen, and only then."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.upto = 0

    def update(self, offset: int, data: bytes) -> None:
        if offset <= self.upto < offset + len(data):
            self._hash.update(memoryview(data)[self.upto - offset:])
            self.upto = offset + len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _clean_name(name: str) -> str | None:
    """The member name normalised, or None when it is absolute or climbs out with '..'."""
    if not name or name.startswith("/") or ".." in name.split("/"):
        return None
    return posixpath.normpath(name)


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
            linked = _clean_name(m.linkname)
            if linked is None or linked not in names:
                raise ArchiveError("unsafe", f"checkpoint hard link {m.name!r} -> {m.linkname!r} does not point to an earlier member; refusing the archive")
        if m.isreg():
            self.total += m.size
            if limit_bytes is not None and self.total > limit_bytes:
                raise ArchiveError("too_large", f"checkpoint holds more than the {limit_bytes}-byte quota (at member "
                                                f"{m.name!r}); raise this node's migration_quota (agentd --migration-quota)")
        names.add(name)


_MAX_PAX_BYTES = 1024 * 1024  # a PAX header this big is not one our packer writes
_PAX_KEYS = {"path": "name", "linkpath": "linkname", "size": "size", "mtime": "mtime"}


class _TarWriter:
    """Extracts a tar fed as blocks, writing file data straight from the blocks received.

    tarfile's stream reader copies each byte three or four times under the GIL before it
    reaches the disk (profiled: as much time as the writes themselves); here the headers
    are parsed with ``tarfile.TarInfo.frombuf`` and every member goes through
    ``tarfile.data_filter`` (the realpath checks ``extract`` applies), then regular files
    are written with ``os.write`` from memoryviews of the chunks, which releases the GIL.
    Members are what our packer writes: PAX or ustar headers for files, directories,
    symlinks and hard links; anything else is refused.
    """

    def __init__(self, dest: Path, limit_bytes: int | None) -> None:
        self.dest = str(dest)
        self.checker = _MemberChecker(limit_bytes)
        self._header = bytearray()
        self._pax = bytearray()
        self._pax_size = 0
        self._overrides: dict[str, str] = {}
        self._fd = -1
        self._member: tarfile.TarInfo | None = None
        self._data_left = 0  # bytes of the current file still to write
        self._skip = 0  # padding (or a header's payload we ignore) still to skip
        self._ended = False
        self._dirs: list[tuple[str, int]] = []

    def feed(self, block: memoryview) -> None:
        while block and not self._ended:
            if self._data_left:
                n = min(self._data_left, len(block))
                _write_all(self._fd, block[:n])
                self._data_left -= n
                block = block[n:]
                if not self._data_left:
                    self._close_file()
            elif self._pax_size:
                n = min(self._pax_size - len(self._pax), len(block))
                self._pax += block[:n]
                block = block[n:]
                if len(self._pax) == self._pax_size:
                    self._overrides.update(_pax_records(bytes(self._pax)))
                    self._pax_size = 0
                    self._pax.clear()
            elif self._skip:  # padding after a payload
                n = min(self._skip, len(block))
                self._skip -= n
                block = block[n:]
            else:
                n = min(_TAR_BLOCK - len(self._header), len(block))
                self._header += block[:n]
                block = block[n:]
                if len(self._header) == _TAR_BLOCK:
                    self._on_header(bytes(self._header))
                    self._header.clear()

    def _on_header(self, raw: bytes) -> None:
        if raw == bytes(_TAR_BLOCK):
            self._ended = True  # end-of-archive; what follows is padding
            return
        try:
            info = tarfile.TarInfo.frombuf(raw, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise ArchiveError("corrupt", f"checkpoint archive has a bad tar header: {exc}") from None
        padding = -info.size % _TAR_BLOCK
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            if info.size > _MAX_PAX_BYTES:
                raise ArchiveError("corrupt", f"checkpoint archive has a {info.size}-byte PAX header; refusing it")
            if info.type == tarfile.XGLTYPE:  # global defaults: none matter here
                self._skip = info.size + padding
            else:
                self._pax_size, self._skip = info.size, padding
            return
        try:
            for key, value in self._overrides.items():
                setattr(info, _PAX_KEYS[key], int(float(value)) if key in ("size", "mtime") else value)
        except (ValueError, OverflowError):
            raise ArchiveError("corrupt", f"checkpoint archive has a bad PAX value for member {info.name!r}") from None
        self._overrides = {}
        if info.size < 0:
            raise ArchiveError("corrupt", f"checkpoint member {info.name!r} has a negative size")
        padding = -info.size % _TAR_BLOCK
        self._extract(info)
        if info.isreg():
            self._data_left = info.size
            if not info.size:
                self._close_file()
        elif info.size:
            raise ArchiveError("corrupt", f"checkpoint member {info.name!r} is not a file but carries {info.size} bytes")
        self._skip = padding

    def _extract(self, info: tarfile.TarInfo) -> None:
        self.checker.check(info)
        try:
            safe = tarfile.data_filter(info, self.dest)
        except tarfile.FilterError as exc:
            raise ArchiveError("unsafe", f"checkpoint archive refused: {exc}") from None
        path = os.path.join(self.dest, safe.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path) and not (safe.isdir() and os.path.isdir(path)):
            os.unlink(path)  # a later member of the same name replaces the earlier one
        if safe.isdir():
            os.makedirs(path, exist_ok=True)
            if safe.mode is not None:
                self._dirs.append((path, safe.mode))  # after the files: it may be read-only
        elif safe.issym():
            os.symlink(safe.linkname, path)
        elif safe.islnk():
            os.link(os.path.join(self.dest, safe.linkname), path, follow_symlinks=False)
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            self._member = safe

    def _close_file(self) -> None:
        fd, member = self._fd, self._member
        self._fd, self._member = -1, None
        try:
            if member is not None:
                if member.mode is not None:
                    os.fchmod(fd, member.mode)
                os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def finish(self) -> int:
        """The stream ended: check it was whole, set directory modes; bytes of files."""
        if not self._ended and (self._data_left or self._pax_size or self._header or self._skip):
            raise ArchiveError("corrupt", "checkpoint archive is truncated: it ends inside a member")
        for path, mode in reversed(self._dirs):
            os.chmod(path, mode)
        return self.checker.total

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a PAX extended header we apply ("LEN key=value\\n" each)."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ArchiveError("corrupt", "checkpoint archive has a malformed PAX header") from None
        record = data[space + 1:pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ArchiveError("corrupt", "checkpoint archive has a malformed PAX header")
        key, _, value = record[:-1].partition(b"=")
        name = key.decode("utf-8", "surrogateescape")
        if name in _PAX_KEYS:
            out[name] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


class StreamUnpacker:
    """Unpacks a tar while its bytes arrive (``feed`` them in order), into a hidden sibling
    of ``dest_dir``; ``finish()`` renames it into place. Same rules as :func:`unpack`.

    A receiver that feeds chunks as they land has the checkpoint on disk when the last byte
    arrives, instead of writing it all again at commit. Nothing reaches ``dest_dir`` before
    ``finish()``, which the caller invokes only after verifying the digest.
    """

    _QUEUED_BLOCKS = 16  # chunks waiting for the disk before feed() blocks

    def __init__(self, dest_dir: Path, limit_bytes: int | None = None) -> None:
        self.dest_dir = Path(dest_dir)
        self.tmp = self.dest_dir.with_name(f".{self.dest_dir.name}.unpacking")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.error: ArchiveError | None = None
        self.total = 0
        # A queue hands over the bytes objects themselves (a pipe copied each chunk twice
        # more, in 64 KiB steps); its bound holds memory and makes feed() wait for the disk.
        self._blocks: queue.Queue[bytes | None] = queue.Queue(self._QUEUED_BLOCKS)
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(limit_bytes,), name=f"unpack-{self.dest_dir.name}", daemon=True)
        self._thread.start()

    def _run(self, limit_bytes: int | None) -> None:
        writer = _TarWriter(self.tmp, limit_bytes)
        try:
            while (block := self._blocks.get()) is not None:
                writer.feed(memoryview(block))
            self.total = writer.finish()
        except ArchiveError as exc:
            self.error = exc
        except OSError as exc:
            self.error = _disk_error(exc, self.dest_dir, "unpacking the checkpoint into")
        finally:
            writer.close()
            while block is not None:  # stopped early: swallow the rest so feed() never blocks
                block = self._blocks.get()

    def feed(self, data: bytes) -> None:
        """Hand the next bytes of the tar over (blocks while the unpacker is far behind)."""
        if self._closed or not data:
            return
        self._blocks.put(data)  # after an error the unpacker drains: never stuck

    def _close_writer(self) -> None:
        if not self._closed:
            self._closed = True
            self._blocks.put(None)
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
