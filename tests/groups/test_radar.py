"""The straggler and hang radar on synthetic series of synchronous groups (pure: simulated time)."""

from __future__ import annotations

from agentd.groups.radar import RadarConfig, RankPoint, RankSeries, analyse
from tests.groups.sim import SyncGroup

KEEP_S = 200.0  # what a live radar keeps per rank: more than the window and the hang history


def flagged(group: SyncGroup, now: float, cfg: RadarConfig | None = None) -> dict[int, str]:
    return {v.rank: v.status for v in analyse(group.series(now - KEEP_S), now, cfg) if v.status != "ok"}


def test_a_rank_ten_percent_slower_in_sixteen_is_named_within_a_minute():
    g = SyncGroup(world=16, slow={7: 1.10}, seed=1)
    named_at = None
    t = 0.0
    while t < 120 and named_at is None:
        t += 5
        g.run_until(t)
        found = flagged(g, g.t)
        assert set(found) <= {7}, found  # never another rank
        if found:
            named_at = g.t
    assert named_at is not None and named_at <= 60, named_at
    v = next(v for v in analyse(g.series(g.t - KEEP_S), g.t) if v.rank == 7)
    assert v.status == "straggler" and v.likely == "extra_work"
    assert v.evidence["busy_ratio"] >= 1.09 and v.evidence["others_wait_s"] > v.evidence["wait_s"]
    assert v.node == "n1" and "while the others wait on it" in v.reason


def test_a_healthy_group_raises_nothing_in_thirty_minutes():
    g = SyncGroup(world=16, seed=2)
    t = 0.0
    while t < 30 * 60:
        t += 10
        g.run_until(t)
        assert flagged(g, g.t) == {}, t


def test_no_call_before_a_whole_window_is_observed():
    g = SyncGroup(world=4, slow={1: 1.5}, seed=3)
    g.run_until(20)
    assert flagged(g, g.t) == {}
    g.run_until(45)
    assert flagged(g, g.t) == {1: "straggler"}


def test_a_burst_is_not_a_straggler():
    g = SyncGroup(world=8, seed=4)
    g.run_until(60)
    g.slow[3] = 1.4
    g.run_until(70)  # 10 s of a slow rank, then back to normal
    g.slow.clear()
    for t in range(75, 130, 5):
        g.run_until(t)
        assert flagged(g, g.t) == {}, t


def test_same_cpu_work_but_slower_wall_is_a_slow_host():
    g = SyncGroup(world=8, host_slow={5: 1.2}, seed=5)
    g.run_until(60)
    v = next(v for v in analyse(g.series(), g.t) if v.rank == 5)
    assert v.status == "straggler" and v.likely == "slow_host", v
    assert abs(v.evidence["cpu_per_step_ratio"] - 1.0) < 0.03


def test_low_clocks_make_a_slow_gpu():
    g = SyncGroup(world=8, slow={2: 1.25}, gpu_clock={2: 1350.0}, seed=6)
    g.run_until(60)
    v = next(v for v in analyse(g.series(), g.t) if v.rank == 2)
    assert v.status == "straggler" and v.likely == "slow_gpu", v
    assert v.evidence["gpu_sm_clock_mhz"] == 1350.0 and v.evidence["group_median_sm_clock_mhz"] == 1800.0


def test_busier_but_nobody_waits_is_not_a_straggler():
    """Independent ranks (no collective): one does more work, but nobody waits on it."""
    pts = []
    for r in range(4):
        c = 0.6 if r == 0 else 0.5
        pts.append(RankSeries(rank=r, node="n", points=[
            RankPoint(t_s=i * c, step=i, step_compute_s=c, step_wait_s=0.0, cpu_s=i * c) for i in range(200)]))
    assert all(v.status == "ok" for v in analyse(pts, 80.0))


def test_a_spinning_hung_rank_is_named_and_the_others_wait():
    g = SyncGroup(world=8, seed=7)
    g.run_until(100)
    stop = g.t
    cfg = RadarConfig(min_hang_s=20)
    g.stall(stop + 15, spinning={3})
    assert flagged(g, g.t, cfg) == {}  # under max(10 x 0.5 s, 20 s): not yet
    g.stall(stop + 25, spinning={3})
    verdicts = {v.rank: v for v in analyse(g.series(g.t - KEEP_S), g.t, cfg)}
    assert verdicts[3].status == "hung" and "stuck computing" in verdicts[3].reason
    assert verdicts[3].evidence["stalled_s"] >= 20 and verdicts[3].evidence["active"] == 1.0
    assert {r for r, v in verdicts.items() if v.status == "waiting"} == set(range(8)) - {3}
    assert "rank 3" in verdicts[0].reason


def test_a_hang_that_began_before_the_radar_looked_is_named_from_the_reported_step_time():
    """The leader may start following a group after it already hung (a hang at step 30 of a fast
    ring): it never sees progress, so it measures the stall against the step time the ranks last
    reported; and their repeated last reports make no straggler of anyone."""
    g = SyncGroup(world=4, seed=11)
    g.run_until(20)
    stop = g.t
    cfg = RadarConfig(min_hang_s=8, sustain_s=12, slices=4)
    g.stall(stop + 40, spinning={3})
    seen = g.series(stop + 0.5)  # everything the late radar has: no progress at all
    verdicts = {v.rank: v for v in analyse(seen, g.t, cfg)}
    assert verdicts[3].status == "hung" and "stuck computing" in verdicts[3].reason, verdicts[3]
    assert {r for r, v in verdicts.items() if v.status == "waiting"} == {0, 1, 2}
    # Before the floor (8 s of stall seen), nothing is called; repeated reports are no straggler.
    until_7s = [RankSeries(rank=x.rank, node=x.node, points=[q for q in x.points if q.t_s <= stop + 7]) for x in seen]
    early = {v.rank: v.status for v in analyse(until_7s, stop + 7, cfg)}
    assert set(early.values()) <= {"ok"}, early


def test_a_rank_behind_the_others_is_the_hung_one():
    g = SyncGroup(world=4, seed=8)
    g.run_until(60)
    # rank 2 never finishes its step; the other three finish theirs and block in the next collective
    for r in (0, 1, 3):
        last = g.points[r][-1]
        g.points[r].append(RankPoint(t_s=last.t_s + 0.5, step=(last.step or 0) + 1, cpu_s=last.cpu_s))
    g.t += 0.5
    g.stall(g.t + 60, spinning=set())
    verdicts = {v.rank: v.status for v in analyse(g.series(), g.t)}
    assert verdicts == {0: "waiting", 1: "waiting", 2: "hung", 3: "waiting"}


def test_a_whole_stalled_group_with_no_odd_one_out_is_hung_everywhere():
    g = SyncGroup(world=4, seed=9)
    g.run_until(60)
    g.stall(g.t + 60, spinning=set())
    verdicts = analyse(g.series(), g.t)
    assert {v.status for v in verdicts} == {"hung"} and "no rank stands out" in verdicts[0].reason


def test_roles_are_compared_only_among_themselves():
    """A rollout worker's step is not a trainer's: different step times across roles are no straggler."""
    series = []
    for r in range(6):
        role, c = ("trainer", 1.0) if r < 2 else ("rollout", 0.3)
        series.append(RankSeries(rank=r, node="n", role=role, points=[
            RankPoint(t_s=i * c, step=i, step_compute_s=c * 0.9, step_wait_s=c * 0.1, cpu_s=i * c * 0.9)
            for i in range(int(100 / c))]))
    assert all(v.status == "ok" for v in analyse(series, 90.0))
