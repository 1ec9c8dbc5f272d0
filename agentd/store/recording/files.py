"""Recording files on disk: checks before opening, hardened SQLite connections, errors in words.

A recording may come from anyone (a colleague's file, a download), so opening one never runs
anything stored in it and never costs more than a bounded amount of memory and time: only regular
files are opened (a FIFO would block, a device never ends), read-only unless writing, with
``trusted_schema`` off, no extensions, ``cell_size_check`` on and a cap on the size of any one
value (:func:`harden`); a file whose schema holds views, triggers, virtual tables or generated
columns is refused before anything is read (:func:`check_schema`); any one query can be given a
deadline (:func:`time_limit`). Every failure raises :class:`RecordingError`, whose message names
the file and the remedy.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = [
    "MAX_VALUE_BYTES", "QUERY_TIME_LIMIT_S", "SQLITE_MAGIC", "TABLES", "RecordingError", "app_version",
    "check_recording_file", "check_schema", "connect", "describe_sqlite_error", "harden", "time_limit",
]

SQLITE_MAGIC = b"SQLite format 3\x00"


# Bounds for reading files from anyone (docs/recording.md, "Opening untrusted recordings").
#: No single value (string or blob) read from a recording may be longer (SQLITE_LIMIT_LENGTH).
MAX_VALUE_BYTES = 32 * 2**20
#: Any one query of a reader is interrupted after this long (a forged file can make SQL slow).
QUERY_TIME_LIMIT_S = 60.0
#: Schema objects, nodes, shapes and node-name lengths a recording may declare.
MAX_SCHEMA_OBJECTS = 200
MAX_NODES = 10_000
MAX_NAME_CHARS = 1024
MAX_SHAPES = 100_000
MAX_SHAPE_BYTES = 64 * 2**20
#: Metadata values (title, notes...) are read up to this many characters.
MAX_META_CHARS = 64 * 1024
#: Wall times outside this range (seconds since 1970) are not times (negative, 1e300, inf).
MIN_WALL_S, MAX_WALL_S = 0.0, 1e11
#: A read of samples by time may span at most this many more samples than it returns: more
#: means the samples are far out of time order (a forged file); reading on would cost memory.
MAX_DISORDER = 5000
#: The most events :meth:`RecordingReader.events` returns at once; gaps listed per node.
MAX_EVENTS = 200_000
MAX_GAPS_PER_NODE = 1000
#: Steps between samples looked at to find a node's usual interval (the median).
GAP_MEDIAN_STEPS = 10_001
#: The tables a recording of each schema version holds; each must be a plain table.
TABLES: dict[int, tuple[str, ...]] = {1: ("meta", "nodes", "samples", "inventory", "snapshots", "jobs", "events", "links")}
TABLES[2] = TABLES[1] + ("chunks", "tail", "shapes")


class RecordingError(Exception):
    """A recording cannot be written or read; the message says which file, why, and what to do."""


def app_version() -> str:
    """The installed Fleetdeck version ("dev" from a checkout), written into new recordings."""
    try:
        return version("fleetdeck")
    except PackageNotFoundError:  # not installed (running from a checkout)
        return "dev"


def describe_sqlite_error(path: Path, exc: sqlite3.Error, writing: bool) -> str:
    text = str(exc)
    low = text.lower()
    if "full" in low:
        return f"recording {path}: the disk is full ({text}); free space or record to another disk"
    if "readonly" in low or "read-only" in low or "permission" in low:
        return f"recording {path} cannot be written ({text}); choose a writable path"
    if "unable to open" in low:
        where = path.parent if not path.parent.is_dir() else path
        return f"recording {path} cannot be opened ({text}); check that {where} exists and is writable"
    if "not a database" in low or "malformed" in low or "disk i/o" in low:
        return f"{path} is not a readable Fleetdeck recording ({text}); the file is damaged or truncated"
    verb = "written" if writing else "read"
    return f"recording {path} could not be {verb}: {text}"


def harden(conn: sqlite3.Connection, *, read_only: bool) -> None:
    """Settings for a file that may come from anyone: nothing stored in it runs, nothing it
    holds is bigger than :data:`MAX_VALUE_BYTES`, no query runs for ever."""
    # Functions with side effects may not be used from the schema (views, triggers, defaults,
    # generated columns, expression indexes): the schema cannot make us do anything.
    conn.execute("PRAGMA trusted_schema = OFF")
    # A damaged b-tree cell is reported as corruption instead of read past its page.
    conn.execute("PRAGMA cell_size_check = ON")
    conn.execute("PRAGMA mmap_size = 0")
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    if read_only:
        conn.execute("PRAGMA query_only = ON")


def time_limit(conn: sqlite3.Connection) -> list[float]:
    """Interrupt any statement of ``conn`` that runs past the deadline in the returned list
    (monotonic seconds; 0 = none); the owner sets it before each query."""
    deadline = [0.0]

    def too_long() -> int:
        return 1 if deadline[0] and time.monotonic() > deadline[0] else 0

    conn.set_progress_handler(too_long, 200_000)
    return deadline


def connect(path: Path, *, create: bool, writable: bool = True) -> sqlite3.Connection:
    """A connection to ``path``: created (rwc), read-write (rw) or read-only (ro, the default
    of readers, so that nothing a reader does can change the file)."""
    mode = "rwc" if create else ("rw" if writable else "ro")
    if mode == "rw" and not os.access(path, os.W_OK):
        mode = "ro"
    try:
        # The path goes into a URI: characters that mean something there are escaped.
        from urllib.parse import quote

        conn = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        harden(conn, read_only=mode == "ro")
        return conn
    except sqlite3.Error as exc:
        raise RecordingError(describe_sqlite_error(path, exc, create)) from None


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_regular(path: Path, mode: int) -> RecordingError:
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    via = " (through a symbolic link)" if path.is_symlink() else ""
    return RecordingError(f"{path} is {kind}{via}, not a recording file; give the path of a .db file")


def check_recording_file(path: Path) -> None:
    """Fail early, in words, on a missing, empty, non-SQLite or truncated file, and on anything
    that is not a regular file (a directory, FIFO, socket or device, also behind a symlink).
    Never blocks: a FIFO is recognised without opening it for a blocking read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RecordingError(f"recording {path} does not exist; check the path") from None
    except OSError as exc:
        raise RecordingError(f"recording {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since stat(), open() must not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path, st.st_mode)
            head = os.pread(fd, 100, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RecordingError(f"recording {path} cannot be read: {exc.strerror}") from None
    size = st.st_size
    if size == 0:
        raise RecordingError(f"{path} is empty (0 bytes); it is not a Fleetdeck recording")
    if not head.startswith(SQLITE_MAGIC):
        raise RecordingError(f"{path} is not a SQLite file, so not a Fleetdeck recording")
    if len(head) == 100:
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(head[28:32], "big")
        wal = Path(f"{path}-wal")
        # The header's page count is only trustworthy when no WAL carries newer pages.
        if pages and size < pages * page_size and not (wal.exists() and wal.stat().st_size):
            raise RecordingError(
                f"{path} is truncated ({size} bytes, its header says {pages * page_size}); "
                "copy the whole file again"
            )


def check_schema(conn: sqlite3.Connection, path: Path, version: int) -> None:
    """Refuse a file whose schema could run something or stand in for our tables: views,
    triggers, virtual tables, generated columns, or a table of ours that is missing. Reads
    only sqlite_master and table_xinfo, before any row of the recording is read."""
    try:
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master LIMIT ?",
                               (MAX_SCHEMA_OBJECTS + 1,)).fetchall()
    except sqlite3.Error as exc:
        raise RecordingError(describe_sqlite_error(path, exc, False)) from None
    if len(objects) > MAX_SCHEMA_OBJECTS:
        raise RecordingError(f"{path} declares more than {MAX_SCHEMA_OBJECTS} tables and indexes; "
                             "it is not a Fleetdeck recording")
    for kind, name, _table, sql in objects:
        if kind in ("view", "trigger"):
            raise RecordingError(
                f"{path} contains a {kind} ({name!r}); Fleetdeck recordings have none and a {kind} could run "
                "SQL stored in the file, so it is not opened; ask for the original recording")
        if kind == "table" and isinstance(sql, str) and sql.lstrip().upper().startswith("CREATE VIRTUAL"):
            raise RecordingError(f"{path} contains a virtual table ({name!r}); Fleetdeck recordings have none, "
                                 "so it is not opened")
    tables = {name for kind, name, _, _ in objects if kind == "table"}
    for name in TABLES.get(version, ()):
        if name not in tables:
            raise RecordingError(f"{path} has no table {name!r}; it is not a complete Fleetdeck recording "
                                 f"(schema {version})")
        try:
            generated = [c[1] for c in conn.execute(f"PRAGMA table_xinfo({name})") if c[6] not in (0, 1)]
        except sqlite3.Error as exc:
            raise RecordingError(describe_sqlite_error(path, exc, False)) from None
        if generated:
            raise RecordingError(f"{path}: table {name!r} has computed (generated) column {generated[0]!r}; "
                                 "Fleetdeck recordings have none, so it is not opened")

