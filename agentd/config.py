"""agentd's configuration: defaults, a TOML file, and command-line overrides, validated."""

from __future__ import annotations

import math
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from agentd.control.spec import parse_size
from agentd.control.transfer import DEFAULT_COMMIT_RESOLVE_S, DEFAULT_RETRY_S
from agentd.protocol.limits import DEFAULT_JOB_RETENTION_S, MAX_ENDED_JOBS

DEFAULT_CTL = "tcp://127.0.0.1:7710"
DEFAULT_PUB = "tcp://127.0.0.1:7711"
DEFAULT_INTERVAL_S = 1.0
MIN_INTERVAL_S = 0.1
MAX_INTERVAL_S = 60.0
MAX_SIMULATED_GPUS = 64
MAX_MAX_ENDED_JOBS = 1_000_000
DEFAULT_MIGRATION_CALL_TIMEOUT_S = 10.0  # one request to a peer daemon (a 1 MiB chunk is well inside it)
MAX_MIGRATION_WAIT_S = 86400.0
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float) -> float:
    """Seconds from ``3600``, ``90m``, ``24h``, ``7d``. Raises ValueError."""
    if isinstance(value, bool):
        raise TypeError(f"duration {value!r} is not a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower()
        unit = text[-1:] if text[-1:] in _DURATION_UNITS else ""
        try:
            seconds = float(text[:-1] if unit else text) * _DURATION_UNITS[unit]
        except ValueError:
            raise ValueError(f"duration {value!r} is not a duration; write e.g. 3600, 90m, 24h or 7d") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration {value!r} must be a finite number of seconds, 0 or more")
    return seconds


def default_state_dir() -> Path:
    if os.geteuid() == 0 and Path("/var/lib").is_dir():
        return Path("/var/lib/fleetdeck")
    import platformdirs

    return Path(platformdirs.user_state_dir("fleetdeck"))


def default_local_socket(state_dir: Path) -> Path:
    """``STATE_DIR/agentd.sock``, or, where that path is too long for a Unix socket (108
    bytes), a short name for it under /run/fleetdeck (root) or the user's runtime dir."""
    path = state_dir / "agentd.sock"
    if len(str(path)) <= 100:
        return path
    import hashlib

    base = Path("/run/fleetdeck") if os.geteuid() == 0 else Path(os.environ.get("XDG_RUNTIME_DIR") or state_dir)
    return base / f"agentd-{hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]}.sock"


# Ranges msgspec checks while converting, so a bad value is refused naming the option.
IntervalSeconds = Annotated[float, msgspec.Meta(ge=MIN_INTERVAL_S, le=MAX_INTERVAL_S)]
SimulatedGpus = Annotated[int, msgspec.Meta(ge=0, le=MAX_SIMULATED_GPUS)]
EndedJobs = Annotated[int, msgspec.Meta(ge=0, le=MAX_MAX_ENDED_JOBS)]
MigrationWait = Annotated[float, msgspec.Meta(gt=0, le=MAX_MIGRATION_WAIT_S)]  # finite: NaN fails every comparison


class DaemonConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every agentd option; packaging/agentd.toml.example documents each one."""

    state_dir: str = ""
    ctl: str = DEFAULT_CTL
    pub: str = DEFAULT_PUB
    node_name: str = ""
    interval: IntervalSeconds = DEFAULT_INTERVAL_S
    simulate_gpus: SimulatedGpus = 0
    metrics_listen: str = ""
    slurm: Literal["auto", "on", "off"] = "auto"
    authorized_keys: str = ""  # default: STATE_DIR/authorized_keys
    labels: dict[str, str] = {}
    log_level: str = "info"
    migration_quota: int | str = 64 * 1024**3  # bytes, or a size such as "64G"
    local_socket: str = ""  # the ipc socket every local user reaches (default STATE_DIR/agentd.sock; "off": none)
    operators: list[str] = []  # local users (or @groups) who may control every job
    admins: list[str] = []  # local users (or @groups) who may also run jobs as others (root always may)
    job_retention: float | str = DEFAULT_JOB_RETENTION_S  # seconds, or "24h", "7d": ended jobs are forgotten after it
    max_ended_jobs: EndedJobs = MAX_ENDED_JOBS  # ended jobs kept at most (oldest forgotten first)
    metrics_job_retention: float | str = 600.0  # seconds, or "10m": an ended job's state stays in /metrics this long
    # Migration timing (seconds): one request to a peer daemon; giving up on an unreachable
    # target without progress; asking a silent target about a sent commit.
    migration_call_timeout_s: MigrationWait = DEFAULT_MIGRATION_CALL_TIMEOUT_S
    migration_retry_s: MigrationWait = DEFAULT_RETRY_S
    migration_commit_resolve_s: MigrationWait = DEFAULT_COMMIT_RESOLVE_S
    health_rules: str = ""  # a TOML file overriding the health rules' defaults (docs/health.md)
    radar: dict[str, int | float] = {}  # [agentd.radar]: RadarConfig fields overriding the radar's rules (docs/groups.md)

    def resolved(self) -> DaemonConfig:
        return msgspec.structs.replace(
            self,
            state_dir=self.state_dir or str(default_state_dir()),
            node_name=self.node_name or socket.gethostname().split(".")[0],
            local_socket=self.local_socket or str(default_local_socket(Path(self.state_dir or default_state_dir()))),
        )


class ConfigError(ValueError):
    """A bad option or config file; the message names it and says what is allowed."""


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("agentd", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [agentd] must be a table of options")
    return section


_FLAGS = {"interval": "--interval", "simulate_gpus": "--simulate-gpus", "slurm": "--slurm"}


def build_config(file_values: dict[str, Any], overrides: dict[str, Any]) -> DaemonConfig:
    merged = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        cfg = msgspec.convert(merged, DaemonConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(_option_error(exc, merged)) from None
    try:
        quota = parse_size(cfg.migration_quota)
    except ValueError as exc:
        raise ConfigError(f"--migration-quota: {exc}") from None
    if quota <= 0:
        raise ConfigError(f"--migration-quota {cfg.migration_quota!r} must be more than 0 bytes")
    try:
        retention = parse_duration(cfg.job_retention)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--job-retention: {exc}") from None
    try:
        metrics_retention = parse_duration(cfg.metrics_job_retention)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metrics_job_retention: {exc}") from None
    return msgspec.structs.replace(cfg.resolved(), migration_quota=quota, job_retention=retention,
                                  metrics_job_retention=metrics_retention)


def _option_error(exc: msgspec.ValidationError, values: dict[str, Any]) -> str:
    """``--interval 0.01: Expected `float` >= 0.1``: the option (its flag where it has one),
    the value given, and what msgspec says is allowed."""
    text = str(exc)
    what, _, where = text.rpartition(" - at `$.")
    name = where.rstrip("`").split(".", 1)[0].split("[", 1)[0] if what else ""
    if not name:
        return f"bad agentd option: {text}"
    shown = f"{_FLAGS[name]} {values.get(name)}" if name in _FLAGS else f"{name} = {values.get(name)!r}"
    return f"{shown} is not allowed ({what}); see packaging/agentd.toml.example"
