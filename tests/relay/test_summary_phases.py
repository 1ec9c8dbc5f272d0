"""Summary phases: a client of a big subtree takes each node's summary every few seconds, so
its work per second does not grow with the fleet (issue 15: 10,000 nodes, app < 50 % of a core)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentd.protocol import relay as relay_protocol
from agentd.protocol.codec import topic_of
from agentd.protocol.link import LinkMessage, LinkSnapshot
from agentd.protocol.messages import SampleMsg
from agentd.protocol.relay import SUMMARY_PHASES, NodeSummary, SummaryMsg, phased_topics, summary_phases
from agentd.transport.client import LinkSet
from gui.sources.relay_fanin import SILENT_AFTER_S, RelayFanIn
from tests.relay.relay_helpers import relay, sim_fleet, wait_nodes


def test_a_summary_batch_is_published_on_its_phase_and_nsum_still_matches_every_phase():
    assert topic_of(SummaryMsg(node="r", seq=1, phase=3)) == b"nsum3|"
    assert topic_of(SummaryMsg(node="r", seq=1, phase=3)).startswith(b"nsum")
    assert phased_topics(SUMMARY_PHASES) == (b"",)
    one = phased_topics(1)
    assert b"nsum0|" in one and b"nsum" not in one and not any(t.startswith(b"nsum1") for t in one)
    assert {b"hb", b"sample", b"event", b"job", b"inv", b"d:"} <= set(one)


def test_phases_taken_keep_a_client_near_the_rate_whatever_the_size():
    rate = relay_protocol.SUMMARY_RATE_MAX
    assert summary_phases(50) == SUMMARY_PHASES and summary_phases(rate) == SUMMARY_PHASES
    assert summary_phases(10_000) == 1 and summary_phases(100_000) == 1
    for n in (2_000, 3_000, 5_000, 10_000):
        k = summary_phases(n)
        assert 1 <= k < SUMMARY_PHASES and n * k / SUMMARY_PHASES <= rate, n


def _summaries(n: int) -> list[NodeSummary]:
    return [NodeSummary(node=f"n{i:05d}", link="live") for i in range(n)]


def test_the_fan_in_narrows_a_big_relay_says_how_often_and_its_own_messages_keep_it_healthy():
    fan = RelayFanIn(set())
    fan.relay_up("r", "relay", 0.0)
    fan.on_nodes_reply("r", _summaries(10_000), 0.0)
    out = fan.take()
    assert out.narrow == [("r", 1)] and len(out.added) == 10_000
    assert any("10,000 nodes" in n and "every 10 s" in n for n in out.notices), out.notices
    # No summary for longer than the silence limit, but its own samples arrive: still healthy.
    t = SILENT_AFTER_S + 5
    fan.heard("r", t)
    assert fan._healthy(fan.relays["r"], t)
    # Shrunk below the rate: all phases again.
    fan.on_nodes_reply("r", _summaries(50), t)
    assert fan.take().narrow == [("r", SUMMARY_PHASES)]
    # A relay taken whole is judged by its summaries only.
    fan.heard("r", t + SILENT_AFTER_S + 1)
    assert not fan._healthy(fan.relays["r"], t + SILENT_AFTER_S + 1)


@pytest.mark.procs
def test_a_link_on_one_phase_gets_each_node_every_ten_ticks_and_never_resyncs(tmp_path: Path) -> None:
    with sim_fleet(tmp_path, 20) as cluster, relay(tmp_path, cluster, interval=0.2) as r:
        wait_nodes(r, 21, timeout_s=60)
        links = LinkSet()
        links.add(r.ctl).set_topics(phased_topics(1))  # before it subscribes: it subscribes narrowed
        snapshots, samples, batches = 0, 0, []
        deadline = time.monotonic() + 8.0
        try:
            while time.monotonic() < deadline:
                for ev in links.poll(0.2):
                    if isinstance(ev, LinkSnapshot):
                        snapshots += 1
                    elif isinstance(ev, LinkMessage) and isinstance(ev.msg, SummaryMsg):
                        batches.append(ev.msg)
                    elif isinstance(ev, LinkMessage) and isinstance(ev.msg, SampleMsg):
                        samples += 1
        finally:
            links.close()
    assert snapshots == 1, "a partial subscription's seq gaps are no losses: no resync"
    # 8 s of 0.2 s ticks = ~40 ticks: one batch (21 nodes) on phase 0 every 10th tick; a full
    # subscription would have taken ~40 (tick lengths stretch on a loaded machine: fewer, not more).
    assert 1 <= len(batches) <= 6, [b.seq for b in batches]
    assert all(b.phase == 0 and len(b.nodes) == 21 for b in batches)
    assert samples >= 10, "the relay's own samples still arrive every tick"
