"""The node side of gang admission on a real JobManager: ranks are held (never started by the
local queue), reserved all-or-none, reservations lapse after their TTL, start uses them."""

from __future__ import annotations

import time

from agentd.protocol.jobs import GroupMember
from tests.control.control_helpers import spec

LEADER = "tcp://127.0.0.1:9"  # a gang member names its leader; the leader is played by the test


def _rank(gid: str, rank: int, local: int, *, gpus: int = 1) -> object:
    return spec(name=f"r{rank}", gpus=gpus, group=GroupMember(id=gid, rank=rank, world_size=4, local_rank=rank,
                                                                  local_world_size=local, leader=LEADER))


def test_ranks_are_held_and_do_not_block_the_local_queue(manager):
    m, _ = manager
    r0 = m.submit(_rank("n.run-1", 0, 2), actor="alice")
    plain = m.submit(spec(gpus=1), actor="alice")
    assert r0.state == "queued" and "held for gang n.run-1" in m.get(r0.id).reason
    assert plain.state == "running"  # a held rank blocks nothing behind it
    ready, members, expected, reason = m.gang_prepare("n.run-1", 5.0)
    assert (ready, members, expected) == (False, 1, 2) and "1 of its 2 ranks" in reason
    m.cancel(plain.id, grace_s=0)


def test_prepare_reserves_all_or_none_and_the_reservation_lapses(manager):
    m, _ = manager
    ids = [m.submit(_rank("n.run-2", r, 2), actor="alice").id for r in (0, 1)]
    blocker = m.submit(spec(gpus=1), actor="alice")
    ready, _, _, reason = m.gang_prepare("n.run-2", 5.0)
    assert not ready and "needs 2 GPUs, 1 free" in reason
    assert all(m.get(i).gpus == [] for i in ids)  # nothing kept for a group that does not fit
    m.cancel(blocker.id, grace_s=0)
    ready, _, _, _ = m.gang_prepare("n.run-2", 0.3)
    assert ready and sorted(g for i in ids for g in m.get(i).gpus) == [0, 1]
    late = m.submit(spec(gpus=1), actor="alice")
    assert late.state == "queued"  # the reserved GPUs are taken while the reservation lives
    time.sleep(0.4)
    m.tick()  # past the TTL: the GPUs go back, the plain job starts
    assert m.get(late.id).state == "running"
    assert all(m.get(i).gpus == [] and "reservation lapsed" in m.get(i).reason for i in ids)
    m.cancel(late.id, grace_s=0)


def test_start_runs_every_reserved_rank_and_release_keeps_them_queued_with_the_reason(manager):
    m, _ = manager
    ids = [m.submit(_rank("n.run-3", r, 2), actor="alice").id for r in (0, 1)]
    assert m.gang_prepare("n.run-3", 5.0)[0]
    m.gang_release("n.run-3", "waiting for node b: needs 1 GPUs, 0 free")
    assert all(m.get(i).state == "queued" and m.get(i).gpus == [] for i in ids)
    assert m.get(ids[0]).reason == "gang n.run-3: waiting for node b: needs 1 GPUs, 0 free"
    assert m.gang_prepare("n.run-3", 5.0)[0]
    started = m.gang_start("n.run-3", actor="leader")
    assert [j.state for j in started] == ["running", "running"] and sorted(g for j in started for g in j.gpus) == [0, 1]
    assert all(j.reason == "started on GPUs " + str(j.gpus) for j in started)
    cancelled = m.gang_cancel("n.run-3", "the group's failure policy", 0.0)
    assert all(j.state == "cancelled" or j.reason.startswith("cancelled by the group's failure policy") for j in cancelled)
