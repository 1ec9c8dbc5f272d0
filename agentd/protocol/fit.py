"""Keep listing replies (``jobs``, ``snapshot``) under the frame limit clients accept.

Every unfinished job is always listed; a job whose encoding is over MAX_LISTED_JOB_BYTES is
listed in short form (``short=True``: no env, labels, counters, cwd or tool calls, argv[0]
only; ``show`` gives all of it). Ended jobs follow, newest first, while they fit; the rest are
counted as omitted. With MAX_UNFINISHED_JOBS x MAX_LISTED_JOB_BYTES well under
MAX_MESSAGE_BYTES, the unfinished ones always fit.
"""

from __future__ import annotations

import msgspec

from agentd.protocol.jobs import TERMINAL_STATES, JobInfo, JobSpec
from agentd.protocol.limits import MAX_LISTED_JOB_BYTES
from agentd.protocol.messages import MAX_MESSAGE_BYTES

REPLY_HEADROOM_BYTES = 64 * 1024  # reply header, msgpack framing, a margin
REPLY_BUDGET_BYTES = MAX_MESSAGE_BYTES - REPLY_HEADROOM_BYTES
SHORT_ARG_CHARS = 512
SHORT_METRICS = 32

_encoder = msgspec.msgpack.Encoder()


def short_form(job: JobInfo) -> JobInfo:
    """``job`` as listed when it is too large: what a table row needs, nothing unbounded."""
    spec = job.spec
    small = JobSpec(argv=[spec.argv[0][:SHORT_ARG_CHARS]] if spec.argv else ["?"], name=spec.name, shell=spec.shell,
                    gpus=spec.gpus, cpus=spec.cpus, memory_bytes=spec.memory_bytes, priority=spec.priority,
                    kind=spec.kind, checkpoint=spec.checkpoint)
    metrics = dict(sorted(job.metrics.items())[:SHORT_METRICS])
    out = msgspec.structs.replace(job, spec=small, metrics=metrics, tool_calls=[], pids=job.pids[:64],
                                  reason=job.reason[:1024], short=True)
    if len(_encoder.encode(out)) > MAX_LISTED_JOB_BYTES:  # only absurd names/migration data get here
        out = msgspec.structs.replace(out, metrics={}, migration={}, name=out.name[:256], cgroup=None)
    return out


def fit_jobs(jobs: list[JobInfo], budget: int = REPLY_BUDGET_BYTES) -> tuple[list[JobInfo], int]:
    """The jobs to list within ``budget`` encoded bytes, and how many ended ones were left out.

    Unfinished jobs are taken first, then ended jobs newest first; the result keeps the
    order of ``jobs``.
    """
    order = {id(j): i for i, j in enumerate(jobs)}
    unfinished = [j for j in jobs if j.state not in TERMINAL_STATES]
    ended = sorted((j for j in jobs if j.state in TERMINAL_STATES),
                   key=lambda j: (j.ended_s or 0.0, j.submitted_s), reverse=True)
    out: list[tuple[int, JobInfo]] = []
    used = 0
    omitted = 0
    for original in unfinished + ended:
        job = original
        size = len(_encoder.encode(job))
        if size > MAX_LISTED_JOB_BYTES:
            job = short_form(job)
            size = len(_encoder.encode(job))
        if used + size > budget and (job.state in TERMINAL_STATES or out):
            omitted += 1
            continue
        out.append((order[id(original)], job))
        used += size
    out.sort(key=lambda pair: pair[0])
    return [job for _, job in out], omitted
