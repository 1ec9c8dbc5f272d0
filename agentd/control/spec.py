"""Job specs from TOML/JSON files or dicts, checked at submit time with messages naming the field."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from agentd.protocol.codec import field_of
from agentd.protocol.errors import ErrorCode, ProtocolError
from agentd.protocol.jobs import JobSpec

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtTpP]?)(i?)([bB]?)\s*$")
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(value: str | int | float) -> int:
    """Bytes from ``4G``, ``512MiB``, ``1.5GB``, ``1000`` (binary units: K = 1024). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"size {value!r} is not a number of bytes")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"size {value!r} is negative")
        return int(value)
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"size {value!r} is not a size; write e.g. 4G, 512MiB or 1048576")
    number, unit, _i, _b = m.groups()
    return int(float(number) * 1024 ** _SIZE_POWERS[unit.lower()])


def signal_number(name: str) -> int:
    """The number of a signal named ``SIGUSR1``, ``USR1`` or ``10``. Raises ValueError."""
    text = name.strip().upper()
    if text.isdigit():
        n = int(text)
        if n in {s.value for s in signal.Signals}:
            return n
        raise ValueError(f"signal {name!r} is not a valid signal number")
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise ValueError(f"signal {name!r} is unknown; use a name like SIGUSR1 or SIGTERM") from None


def _invalid(message: str, field: str, code: ErrorCode = ErrorCode.INVALID) -> ProtocolError:
    return ProtocolError(code, message, field)


def spec_from_dict(data: Mapping[str, Any]) -> JobSpec:
    """Build a JobSpec from a dict (sizes as strings allowed). Raises ProtocolError(BAD_MESSAGE)."""
    if not isinstance(data, Mapping):
        raise _invalid(f"job spec must be a table/object, not {type(data).__name__}", "", ErrorCode.BAD_MESSAGE)
    data = dict(data)
    for key in ("memory", "mem"):
        if key in data and "memory_bytes" not in data:
            data["memory_bytes"] = data.pop(key)
    if isinstance(data.get("memory_bytes"), str):
        try:
            data["memory_bytes"] = parse_size(data["memory_bytes"])
        except ValueError as e:
            raise _invalid(str(e), "memory_bytes", ErrorCode.BAD_MESSAGE) from None
    if isinstance(data.get("argv"), str) and not data.get("shell"):
        raise _invalid("argv must be a list of strings; set shell = true to run a shell command string",
                       "argv", ErrorCode.BAD_MESSAGE)
    if isinstance(data.get("argv"), str):
        data["argv"] = [data["argv"]]
    try:
        return msgspec.convert(data, JobSpec, strict=False)
    except msgspec.ValidationError as e:
        raise _invalid(f"job spec: {e}", _field_of(str(e)), ErrorCode.BAD_MESSAGE) from None


def _field_of(message: str) -> str:
    """The dotted field a msgspec validation message is about (``checkpoint.when``)."""
    where = field_of(message)
    named = re.search(r"(?:unknown|required) field `([^`]+)`", message)
    if named:
        return f"{where}.{named.group(1)}" if where else named.group(1)
    return where


def load_spec(path: str | Path) -> JobSpec:
    """Read a spec file (``.toml`` or ``.json``). Raises ProtocolError(BAD_MESSAGE) on bad syntax."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise _invalid(f"cannot read job spec {str(p)!r}: {e.strerror}", "path", ErrorCode.BAD_MESSAGE) from None
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode())
        else:
            data = json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _invalid(f"job spec {str(p)!r} is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}",
                       "", ErrorCode.BAD_MESSAGE) from None
    return spec_from_dict(data)


def validate_spec(spec: JobSpec, *, gpu_count: int, cpu_count: int | None = None,
                  mem_total_bytes: int | None = None, search_path: str | None = None) -> None:
    """Check a spec against this node before it is queued. Raises ProtocolError(INVALID, field).

    Sizes and ranges (agentd.protocol.limits) are the schema's: a spec decoded from the wire
    already passed them; one built in Python passes through the schema here once more.
    """
    try:
        msgspec.convert(msgspec.to_builtins(spec), JobSpec)
    except (msgspec.ValidationError, TypeError, ValueError) as e:
        raise _invalid(f"job spec: {e}", _field_of(str(e))) from None
    if spec.shell and len(spec.argv) != 1:
        raise _invalid(f"with shell = true argv must hold one command string, not {len(spec.argv)} items", "argv")
    if spec.gpus > gpu_count:
        raise _invalid(f"the job asks for {spec.gpus} GPUs but this node has {gpu_count}; "
                       f"ask for at most {gpu_count} or submit to a bigger node", "gpus")
    if spec.cpus is not None and cpu_count is not None and spec.cpus > cpu_count:
        raise _invalid(f"the job asks for {spec.cpus} CPUs but this node has {cpu_count}", "cpus")
    if spec.memory_bytes is not None and mem_total_bytes is not None and spec.memory_bytes > mem_total_bytes:
        raise _invalid(f"the job asks for {spec.memory_bytes} bytes of memory but this node has "
                       f"{mem_total_bytes}", "memory_bytes")
    if spec.checkpoint is not None:
        try:
            signal_number(spec.checkpoint.signal)
        except ValueError as e:
            raise _invalid(str(e), "checkpoint.signal") from None
    if spec.cwd is not None and not Path(spec.cwd).is_dir():
        raise _invalid(f"cwd {spec.cwd!r} is not a directory on this node", "cwd")
    runner: _Runner | None = None
    if spec.user is not None:
        try:
            pw = pwd.getpwnam(spec.user)
        except KeyError:
            raise _invalid(f"user {spec.user!r} does not exist on this node", "user") from None
        if pw.pw_uid != os.geteuid():
            runner = _Runner(pw.pw_name, pw.pw_uid, frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid)), pw.pw_dir)
    cwd = spec.cwd if spec.cwd is not None or runner is None else runner.home
    if runner is not None and cwd is not None and not runner.can_enter(cwd):
        raise _invalid(f"cwd {cwd!r} is not accessible to user {runner.name!r} (a directory on the way lacks "
                       f"search permission for them); choose a directory they can enter", "cwd")
    if not spec.shell:
        prog = spec.argv[0]
        path = search_path if search_path is not None else spec.env.get("PATH", os.environ.get("PATH", os.defpath))
        if "/" in prog:
            full = prog if os.path.isabs(prog) or cwd is None else os.path.join(cwd, prog)
            if not (os.path.isfile(full) and os.access(full, os.X_OK)):
                raise _invalid(f"program {prog!r} does not exist or is not executable", "argv")
            if runner is not None and not runner.can_exec(full):
                raise _invalid(f"program {prog!r} is not executable by user {runner.name!r}, who the job runs "
                               f"as; give a program they can run (check the permissions of {full} and of "
                               "the directories above it)", "argv")
        else:
            found = shutil.which(prog, path=path)
            if found is None:
                raise _invalid(f"program {prog!r} is not on PATH ({path}); give its full path", "argv")
            if runner is not None:
                mine = [os.path.join(d, prog) for d in path.split(os.pathsep) if d]
                if not any(os.path.isfile(c) and runner.can_exec(c) for c in mine):
                    raise _invalid(f"program {prog!r} (found at {found}) is not executable by user "
                                   f"{runner.name!r}, who the job runs as; give a program they can run", "argv")


class _Runner(NamedTuple):
    """The user a job will run as, for permission checks made by root on their behalf
    (``os.access`` answers for root). Mode bits only; ACLs are not consulted."""

    name: str
    uid: int
    gids: frozenset[int]
    home: str

    def _allowed(self, st: os.stat_result, bit_owner: int, bit_group: int, bit_other: int) -> bool:
        if st.st_uid == self.uid:
            return bool(st.st_mode & bit_owner)
        if st.st_gid in self.gids:
            return bool(st.st_mode & bit_group)
        return bool(st.st_mode & bit_other)

    def _can_search(self, directory: str) -> bool:
        try:
            st = os.stat(directory)
        except OSError:
            return False
        return self._allowed(st, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)

    def _path_clear(self, path: str) -> bool:
        """Every directory on the way to ``path``, as written and as resolved, can be searched."""
        for p in {os.path.abspath(path), os.path.realpath(path)}:
            parts = Path(p).parents
            if not all(self._can_search(str(d)) for d in parts):
                return False
        return True

    def can_enter(self, directory: str) -> bool:
        return self._path_clear(directory) and self._can_search(directory)

    def can_exec(self, program: str) -> bool:
        try:
            st = os.stat(program)
        except OSError:
            return False
        return self._path_clear(program) and self._allowed(st, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
