"""What the submit dialog's fields mean, checked before anything is sent (no Qt).

:func:`check_form` turns the dialog's raw values into a :class:`JobPlan` (one node: a plain job)
or a :class:`GroupPlan` (several nodes: one group, expanded into ranks with the nodes' GPUs as
the app knows them), or raises :class:`FormError` naming the dialog field and the remedy. The
checks are the protocol's own (a JobSpec decoded under its limits) and the group spec's
(agentd.groups.spec / ranks), with the CLI flag names in their messages put in the dialog's words.
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from agentd.groups.ranks import RankAssignment, expand
from agentd.groups.spec import GroupSpec, GroupSpecError, check
from agentd.groups.submitplan import RankLimits
from agentd.protocol.jobs import CheckpointContract, JobSpec
from agentd.protocol.limits import PRIORITY_MAX, PRIORITY_MIN

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHELL = "/bin/sh"

# GroupSpecError messages speak of CLI flags; the dialog names its own fields instead.
_FLAG_WORDS = (("--ranks-per-node", "'Ranks per node'"), ("--per-gpu", "'One rank per GPU'"),
               ("--gpus-per-rank", "'GPUs per rank'"), ("--nodes a,b,...", "two or more nodes"),
               ("--nodes", "'Nodes'"), ("`agentctl nodes`", "the Cluster tree"))
_FIELD_OF = {"name": "Name", "argv": "Command", "nodes": "Nodes", "ranks_per_node": "Ranks per node",
             "per_gpu": "One rank per GPU", "gpus_per_rank": "GPUs per rank", "gpus": "GPUs per rank"}


class FormError(Exception):
    """A field of the dialog that cannot be sent: ``field`` is its label, ``message`` says why
    and what to do."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SubmitForm:
    """The dialog's values as typed. ``nodes``: the checked node keys, in the order shown."""

    command: str
    nodes: list[str]
    name: str = ""
    shell: bool = False
    ranks_per_node: int = 1
    per_gpu: bool = False
    gpus: int = 0  # a job's GPUs, or each rank's
    priority: int = 0
    checkpoint_signal: str = ""  # "": no checkpoint contract
    env_text: str = ""  # KEY=VALUE lines; blank lines and '#' comments are skipped


@dataclass(frozen=True)
class NodeOffer:
    """What the app knows of a node it could submit to: its daemon's name, its GPU indexes,
    and the relay it is reached through (None: followed directly)."""

    name: str
    gpus: list[int] = field(default_factory=list)
    relay: str | None = None


@dataclass(frozen=True)
class JobPlan:
    """One job for one node (key)."""

    node: str
    spec: JobSpec


@dataclass(frozen=True)
class GroupPlan:
    """A group: the spec (nodes by daemon name), its ranks, the limits every rank takes, and
    the node key of each name (rank 0's node first)."""

    spec: GroupSpec
    ranks: list[RankAssignment]
    limits: RankLimits
    keys: dict[str, str]  # daemon name -> node key in the app


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE lines as a dict. Raises FormError naming the line."""
    env: dict[str, str] = {}
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or not _ENV_NAME_RE.match(key.strip()):
            raise FormError("Environment", f"line {i} {line[:40]!r} is not KEY=VALUE with a name of letters, digits "
                                           "and '_'; write it as e.g. HF_HOME=/data")
        env[key.strip()] = value
    return env


def _argv(form: SubmitForm) -> list[str]:
    text = form.command.strip()
    if not text:
        raise FormError("Command", "it is empty; type the program and its arguments, e.g. python train.py")
    if form.shell:
        return [text]
    try:
        argv = shlex.split(text)
    except ValueError as e:  # an unclosed quote
        raise FormError("Command", f"{e} in {text[:60]!r}; close the quote, or tick 'Run through {SHELL}'") from None
    if not argv:
        raise FormError("Command", "it holds only quotes or spaces; type the program to run")
    return argv


def _checkpoint(sig: str) -> CheckpointContract | None:
    sig = sig.strip().upper()
    if not sig or sig == "NONE":
        return None
    if not sig.startswith("SIG"):
        sig = "SIG" + sig
    if sig not in signal.Signals.__members__ or sig in ("SIGKILL", "SIGSTOP"):
        raise FormError("Checkpoint signal", f"{sig!r} is not a signal a job can catch; pick one such as SIGUSR1, "
                                             "or leave it empty for a job without a checkpoint contract")
    return CheckpointContract(signal=sig)


def _dialog_words(message: str) -> str:
    for flag, words in _FLAG_WORDS:
        message = message.replace(flag, words)
    return message


def _checked_job(spec: dict[str, object]) -> JobSpec:
    """The spec decoded as a daemon decodes it: every protocol limit applies."""
    try:
        return msgspec.convert(spec, JobSpec)
    except msgspec.ValidationError as e:
        where = re.search(r"at `\$\.([a-z_]+)", str(e))
        label = {"argv": "Command", "name": "Name", "env": "Environment", "gpus": "GPUs"}.get(where.group(1) if where else "", "Job")
        raise FormError(label, f"{e}; shorten or correct it") from None


def check_form(form: SubmitForm, offers: Mapping[str, NodeOffer]) -> JobPlan | GroupPlan:
    """The dialog's values as a plan to send (see the module docstring). Raises FormError."""
    if not form.nodes:
        raise FormError("Nodes", "none is checked; check one node for a job, or several for a group")
    unknown = [k for k in form.nodes if k not in offers]
    if unknown:
        raise FormError("Nodes", f"{unknown[0]!r} is not connected now; check a live node")
    argv = _argv(form)
    env = parse_env(form.env_text)
    if not PRIORITY_MIN <= form.priority <= PRIORITY_MAX:
        raise FormError("Priority", f"{form.priority} is out of range; use {PRIORITY_MIN}..{PRIORITY_MAX}")
    ck = _checkpoint(form.checkpoint_signal)
    if len(form.nodes) == 1:
        raw: dict[str, object] = {"argv": argv, "shell": form.shell, "name": form.name.strip(), "env": env,
                                  "gpus": form.gpus, "priority": form.priority}
        if ck is not None:
            raw["checkpoint"] = msgspec.to_builtins(ck)
        return JobPlan(node=form.nodes[0], spec=_checked_job(raw))
    return _group(form, offers, argv, env, ck)


def _group(form: SubmitForm, offers: Mapping[str, NodeOffer], argv: Sequence[str], env: dict[str, str],
           ck: CheckpointContract | None) -> GroupPlan:
    relayed = [k for k in form.nodes if offers[k].relay is not None]
    if relayed:
        k = relayed[0]
        raise FormError("Nodes", f"{k} is reached through relay {offers[k].relay}, which forwards single jobs but "
                                 "cannot open a group; connect to every node of the group directly (Cluster ▸ "
                                 "Connect to node…), or submit a job to one node")
    keys = {offers[k].name: k for k in form.nodes}
    if len(keys) != len(form.nodes):
        raise FormError("Nodes", "two checked nodes are the same daemon (one name); check each node once")
    if form.shell:
        argv = [SHELL, "-c", argv[0]]  # a rank's spec has no shell flag: the shell is the program
    try:
        spec = check(GroupSpec(argv=list(argv), name=form.name.strip(), nodes=list(keys), env=env,
                               ranks_per_node=1 if form.per_gpu else form.ranks_per_node, per_gpu=form.per_gpu,
                               gpus_per_rank=form.gpus))
        ranks = expand(spec, {n: offers[k].gpus for n, k in keys.items()})
    except GroupSpecError as e:
        raise FormError(_FIELD_OF.get(e.field, "Group"), _dialog_words(e.message)) from None
    # Every rank carries the job fields the dialog set; decode one as its daemon will.
    _checked_job({"argv": ranks[0].argv, "env": env, "priority": form.priority})
    return GroupPlan(spec=spec, ranks=ranks, limits=RankLimits(priority=form.priority, checkpoint=ck), keys=keys)
