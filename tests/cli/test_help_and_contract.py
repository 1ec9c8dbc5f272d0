"""agentctl's contract: help on every option of every verb, help without raw markup, the
documented exit codes (0 ok, 1 refused or failed, 2 usage or unreachable) for every verb,
node names from the cluster file, and replay's typed JSON lines."""

from __future__ import annotations

import argparse
import json
import re
import sys

import pytest

from agentd.cli import build_parser
from tests.cli.test_agentctl import agentctl

# What must never show in --help: reST/Markdown literals, rich markup tags, escape sequences,
# an unformatted argparse placeholder.
RAW_MARKUP = re.compile(r"``|\[/?(bold|red|green|yellow|dim|b|i)\]|\x1b|%\(|`[^`]+`")


def _verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _verbs(sub, (*path, name))
    return out


VERBS = _verbs(build_parser())


def test_every_verb_is_walked():
    names = {" ".join(p) for p, _ in VERBS}
    for verb in ("submit", "jobs", "show", "pause", "resume", "priority", "cancel", "logs", "migrate", "nodes",
                 "whoami", "watch", "top", "record", "replay", "recording info", "recording set", "cluster from-slurm",
                 "keys show", "keys authorize"):
        assert verb in names, verb


@pytest.mark.parametrize("path,parser", VERBS, ids=[" ".join(p) or "agentctl" for p, _ in VERBS])
def test_every_option_has_help_and_help_has_no_raw_markup(path, parser):
    missing = [a.option_strings or [a.dest] for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and a.help != argparse.SUPPRESS
               and not (a.help or "").strip()]
    assert not missing, f"agentctl {' '.join(path)}: no help for {missing}"
    res = agentctl(*path, "--help")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert not RAW_MARKUP.search(res.stdout), f"agentctl {' '.join(path)} --help shows raw markup: {RAW_MARKUP.search(res.stdout)}"


def test_out_of_range_and_malformed_values_are_usage_errors_before_sending(agentd):
    """A value the schema forbids is exit 2 with one line, whatever the verb; nothing reaches
    the node (the node would have refused: exit 1)."""
    r = agentctl("--node", agentd.ctl, "submit", "--json", "--", sys.executable, "-c", "import time; time.sleep(60)")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["id"]
    for argv in (["priority", job, "11"], ["priority", job, "high"], ["priority", job, "-11"],
                 ["submit", "--priority", "99", "--", "true"], ["submit", "--gpus", "-1", "--", "true"],
                 ["submit", "--cpus", "0", "--", "true"], ["submit", "--checkpoint-timeout", "-5", "--", "true"],
                 ["cancel", "--grace", "-1", job], ["logs", "--bytes", "0", job], ["watch", "--count", "0"],
                 ["top", "--count", "-2"], ["jobs", "--timeout", "0"], ["replay", "x.db", "--speed", "fast"]):
        res = agentctl("--node", agentd.ctl, *argv)
        assert res.returncode == 2, (argv, res.returncode, res.stderr)
        assert "Traceback" not in res.stderr and res.stderr.strip(), argv
    shown = json.loads(agentctl("--node", agentd.ctl, "--json", "show", job).stdout)
    assert shown["priority"] == 0  # nothing was sent
    # refusals by the node are 1
    res = agentctl("--node", agentd.ctl, "priority", "n1.999", "3")
    assert res.returncode == 1 and "n1.999" in res.stderr
    assert agentctl("--node", agentd.ctl, "priority", job, "10").returncode == 0
    assert agentctl("--node", agentd.ctl, "cancel", "--grace", "0", job).returncode == 0


def test_node_names_from_the_cluster_file(agentd_factory, tmp_path):
    a = agentd_factory("alpha", simulate_gpus=0)
    b = agentd_factory("beta", simulate_gpus=0)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(f'[[node]]\nname = "alpha"\nendpoint = "{a.ctl}"\n\n[[node]]\nname = "beta"\nendpoint = "{b.ctl}"\n')
    r = agentctl("--cluster", str(cluster), "submit", "--node", "beta", "--json", "--", sys.executable, "-c",
                 "import time; time.sleep(60)")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["node"] == "beta" and job["id"].startswith("beta.")
    # without --node, submit to a cluster of 2 is a usage error that names the way out
    r = agentctl("--cluster", str(cluster), "submit", "--", "true")
    assert r.returncode == 2 and "--node NAME" in r.stderr and "alpha" in r.stderr
    # an unknown name names the file's nodes; a name without a cluster file says what is missing
    r = agentctl("--cluster", str(cluster), "submit", "--node", "gamma", "--", "true")
    assert r.returncode == 2 and "'gamma'" in r.stderr and "alpha, beta" in r.stderr
    r = agentctl("submit", "--node", "beta", "--", "true")
    assert r.returncode == 2 and "--cluster" in r.stderr
    # --node NAME narrows the other verbs too
    r = agentctl("--cluster", str(cluster), "--node", "alpha", "--json", "nodes")
    assert [n["name"] for n in json.loads(r.stdout)] == ["alpha"]
    assert agentctl("--cluster", str(cluster), "cancel", "--grace", "0", job["id"]).returncode == 0


def test_replay_prints_jobs_events_links_and_gaps_as_typed_lines(tmp_path):
    from tests.recording.conftest import make_recording

    p = tmp_path / "s.db"
    make_recording(p, seconds=30, drop={"n1": (10, 16)})
    res = agentctl("replay", str(p), "--json")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    kinds = {d["type"] for d in lines}
    assert kinds == {"sample", "job", "event", "link", "gap"}, kinds
    assert [d["ts"] for d in lines] == sorted(d["ts"] for d in lines)
    job = next(d for d in lines if d["type"] == "job")
    assert job["job"]["id"] and job["job"]["state"] and "pids" in job["job"]
    event = next(d for d in lines if d["type"] == "event")
    assert {"kind", "message", "job_id", "actor", "ok", "data"} <= set(event)
    gap = next(d for d in lines if d["type"] == "gap")
    assert gap["node"] == "n1" and gap["end"] > gap["ts"] and gap["reason"]
    # the human form shows them too
    text = agentctl("replay", str(p)).stdout
    assert "link down" in text and "gap of" in text and "paused n0.1" in text
    # --from past the end (or --to before the start) is one line and exit 2
    for argv in (["--from", "1h"], ["--from", "40"], ["--to", "1999-01-01T00:00:00"]):
        res = agentctl("replay", str(p), "--json", *argv)
        assert res.returncode == 2 and res.stdout == "", argv
        assert len(res.stderr.strip().splitlines()) == 1 and ("past the end" in res.stderr or "before the start" in res.stderr)
