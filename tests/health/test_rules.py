"""Rules files: defaults, overrides, and errors that name the file, rule and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.health.rules import RULE_NAMES, HealthRules, RulesError, load_rules


def test_defaults_without_a_file() -> None:
    rules = load_rules(None)
    assert rules == HealthRules()
    assert rules.gpu_idle_allocated.for_s == 600 and rules.io_pressure.above_pct == 40
    assert "node_stale" in RULE_NAMES


def test_a_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    f = tmp_path / "rules.toml"
    f.write_text("[gpu_idle_allocated]\nfor_s = 900\n\n[mem_pressure]\nenabled = false\n")
    rules = load_rules(f)
    assert rules.gpu_idle_allocated.for_s == 900
    assert rules.gpu_idle_allocated.util_below_pct == 5.0
    assert rules.mem_pressure.enabled is False and rules.mem_pressure.above_pct == 20.0


@pytest.mark.parametrize(("text", "expect"), [
    ("[gpu_idel_allocated]\nfor_s = 1\n", "unknown rule [gpu_idel_allocated]"),
    ("[gpu_throttle]\nfor_s = -1\n", "[gpu_throttle] for_s"),
    ("[gpu_throttle]\nfor = 3\n", "[gpu_throttle]"),
    ("[job_stalled]\nfactor = nan\n", "not a finite number"),
    ("[gpu_throttle]\nseverity = \"loud\"\n", "[gpu_throttle] severity"),
    ("gpu_throttle = 3\n", "must be a table"),
    ("[gpu_throttle\n", "not valid TOML"),
])
def test_bad_files_are_refused_with_the_rule_and_key(tmp_path: Path, text: str, expect: str) -> None:
    f = tmp_path / "rules.toml"
    f.write_text(text)
    with pytest.raises(RulesError) as err:
        load_rules(f)
    assert expect in str(err.value) and str(f) in str(err.value)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="does not exist"):
        load_rules(tmp_path / "nope.toml")
