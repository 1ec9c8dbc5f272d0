"""Where a job's cgroup lives: shared by the control layer (creates it) and the reader."""

from __future__ import annotations

import msgspec


class CgroupRef(msgspec.Struct, frozen=True, kw_only=True):
    """A job's cgroup directories.

    ``version`` 2: ``paths == {"unified": "/sys/fs/cgroup/.../job-3"}``.
    ``version`` 1: one path per controller hierarchy the job is in, keyed by controller name
    (``cpu``, ``cpuacct``, ``memory``, ``blkio``, ``pids``, ``freezer``); a hybrid host may
    also give ``unified`` for the v2 freezer and pressure files.
    """

    version: int
    paths: dict[str, str]
