"""Who a caller is and what it may do: roles, job ownership, privacy.

The transport hands every request over with a peer id the client could not choose
(:mod:`agentd.transport.auth`); this module turns it into a :class:`Caller` and answers the
daemon's questions about it. The model follows Slurm's: the kernel (munge there) names a local
caller, jobs run as their submitter, ``AdminLevel`` becomes the roles below, ``PrivateData``
the privacy rules.

Roles, each including the ones before it:

========  ==============================================================================
viewer    see the cluster: inventory, samples, jobs (without private fields), events
user      also submit jobs (run as its own Unix user) and control its own jobs
operator  also control every job, read every job's logs and private fields
admin     also submit jobs as another user
========  ==============================================================================

``daemon`` is apart: peer daemons may offer, send and commit migrations, and see what a viewer
sees, nothing else. Root on the node, and the user the daemon runs as, are admins; other local
users are users, operators or admins as the config's ``operators``/``admins`` lists say (names,
or ``@group``); a caller the daemon cannot verify is a viewer.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from agentd.protocol import ErrorCode, JobInfo, ProtocolError
from agentd.transport.auth import authorized_keys

ROLE_RANK = {"viewer": 0, "daemon": 0, "user": 1, "operator": 2, "admin": 3}


@dataclass(frozen=True)
class Caller:
    """A verified caller: its role, the Unix user it acts as, and how the daemon knows."""

    role: str
    user: str | None  # the Unix user it acts as; None: it cannot own jobs
    name: str  # how events and the audit log name it: "alice", "key bob-laptop (alice)"
    verified_by: str  # "peer credentials", "kernel TCP table", "CURVE key NAME", "" (unverified)
    uid: int | None = None
    note: str = field(default="", compare=False)  # what the client said about itself

    @property
    def verified(self) -> bool:
        return bool(self.verified_by)

    def at_least(self, role: str) -> bool:
        return ROLE_RANK.get(self.role, 0) >= ROLE_RANK[role]

    def may_see_private(self, owner: str) -> bool:
        """Env values, argv beyond the program, logs: the owner's, operators' and admins'."""
        return self.at_least("operator") or (self.role == "user" and bool(self.user) and self.user == owner)


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _in_list(user: str, entries: list[str]) -> bool:
    """Is ``user`` named in ``entries`` (user names, or ``@group`` for a group's members)?"""
    for entry in entries:
        if entry == user:
            return True
        if entry.startswith("@"):
            try:
                group = grp.getgrnam(entry[1:])
                primary = pwd.getpwnam(user).pw_gid
            except KeyError:
                continue
            if user in group.gr_mem or primary == group.gr_gid:
                return True
    return False


class AccessPolicy:
    """Resolves peer ids to callers, with the node's config and its authorized keys."""

    def __init__(self, keys_root: Path, *, operators: list[str] | None = None, admins: list[str] | None = None,
                 daemon_uid: int | None = None) -> None:
        self.keys_root = keys_root
        self.operators = list(operators or [])
        self.admins = list(admins or [])
        self.daemon_uid = os.geteuid() if daemon_uid is None else daemon_uid

    def caller(self, peer: str, note: str = "") -> Caller:
        """The caller behind a peer id (``unix:UID``, ``key:Z85``, anything else: unverified)."""
        kind, _, value = peer.partition(":")
        if kind == "unix":
            uid, _, how = value.partition(":")
            if uid.isdigit():
                return self._local(int(uid), "kernel TCP table" if how == "tcp" else "peer credentials", note)
        if kind == "key":
            key = authorized_keys(self.keys_root).get(value.encode())
            if key is None:  # removed since the connection was made: revoked
                return Caller("viewer", None, "revoked key", "", note=note)
            name = f"key {key.name}" + (f" ({key.user})" if key.user else "")
            return Caller(key.role, key.user, name, f"CURVE key {key.name}", note=note)
        return Caller("viewer", None, "unverified", "", note=note)

    def _local(self, uid: int, how: str, note: str) -> Caller:
        user = _user_name(uid)
        if user is None:  # a uid with no passwd entry can watch but own nothing
            return Caller("viewer", None, f"uid {uid}", how, uid, note)
        if uid in (0, self.daemon_uid) or _in_list(user, self.admins):
            role = "admin"
        elif _in_list(user, self.operators):
            role = "operator"
        else:
            role = "user"
        return Caller(role, user, user, how, uid, note)

    # ---- questions the daemon asks ------------------------------------------------------
    def require_role(self, caller: Caller, cmd: str, needed: str, hint: str = "") -> None:
        """Refuse (401) a request whose command needs more than the caller's role."""
        if needed == "daemon":
            if caller.role in ("daemon", "admin"):
                return
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{caller.name} (role {caller.role}) may not send {cmd!r}: "
                                "only peer daemons (keys under authorized_keys/daemon/) and admins may")
        if caller.at_least(needed):
            return
        if not caller.verified:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{cmd!r} needs role {needed}, and this daemon could not verify "
                                f"who you are, so you may only watch; {hint or 'connect through the node local socket or with a CURVE key'}")
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{caller.name} has role {caller.role}; {cmd!r} needs {needed} "
                            "(an admin can grant it: the operators/admins lists of agentd's config, or a key under "
                            f"authorized_keys/{needed}/)")

    def require_control(self, caller: Caller, action: str, job: JobInfo) -> None:
        """Refuse (403) an action on a job that is neither the caller's nor within its role."""
        owner = owner_of(job)
        if caller.at_least("operator") or (caller.role == "user" and caller.user and caller.user == owner):
            return
        raise ProtocolError(ErrorCode.FORBIDDEN, f"job {job.id} belongs to {owner or 'another user'}; "
                            f"{caller.name} (role {caller.role}) may {action} only its own jobs", "job")

    def run_as(self, caller: Caller, requested: str | None) -> str:
        """The Unix user a job submitted by ``caller`` runs as (``requested``: the spec's user)."""
        if caller.role == "admin":
            user = requested or caller.user
            if not user:
                raise ProtocolError(ErrorCode.INVALID, f"{caller.name} acts as no Unix user; name the user the job "
                                    "runs as in the spec (user = NAME)", "spec.user")
            return user
        if not caller.user:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{caller.name} maps to no Unix user, so it cannot submit jobs; "
                                "authorize the key with `agentctl keys authorize --user NAME ...`")
        if requested and requested != caller.user:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"{caller.name} may not run a job as {requested!r}: only an admin "
                                "may submit as another user", "spec.user")
        return caller.user


def owner_of(job: JobInfo) -> str:
    """The Unix user a job runs as ("" when unknown)."""
    return job.owner or job.spec.user or ""


def public_job(job: JobInfo) -> JobInfo:
    """What everyone may see of a job: no env values, no argv beyond the program."""
    spec = job.spec
    if not spec.env and len(spec.argv) <= 1 and not spec.shell:
        return job
    program = spec.argv[0].split()[0] if spec.shell and spec.argv else (spec.argv[0] if spec.argv else "")
    hidden = msgspec.structs.replace(spec, argv=[program] if program else [], env=dict.fromkeys(spec.env, ""))
    return msgspec.structs.replace(job, spec=hidden)


def without_env_values(job: JobInfo) -> JobInfo:
    """A job for lists and snapshots shown to its owner: argv whole, env names only."""
    if not job.spec.env:
        return job
    return msgspec.structs.replace(job, spec=msgspec.structs.replace(job.spec, env=dict.fromkeys(job.spec.env, "")))
