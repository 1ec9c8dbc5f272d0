"""agentd's options: ranges live in the DaemonConfig schema; a bad value names the option, the
value and what is allowed; the migration timing options have their documented defaults."""

from __future__ import annotations

import pytest

from agentd.config import ConfigError, build_config
from agentd.control.migration import SourceOptions


@pytest.mark.parametrize("overrides, named", [
    ({"interval": 0.01}, "--interval 0.01"),
    ({"interval": 61.0}, "--interval 61.0"),
    ({"simulate_gpus": 65}, "--simulate-gpus 65"),
    ({"slurm": "maybe"}, "--slurm maybe"),
    ({"max_ended_jobs": -1}, "max_ended_jobs = -1"),
    ({"migration_retry_s": float("nan")}, "migration_retry_s = nan"),
    ({"migration_call_timeout_s": float("inf")}, "migration_call_timeout_s = inf"),
    ({"migration_commit_resolve_s": 0}, "migration_commit_resolve_s = 0"),
])
def test_out_of_range_options_name_the_option_and_value(overrides, named):
    with pytest.raises(ConfigError) as err:
        build_config({}, overrides)
    assert str(err.value).startswith(named), str(err.value)
    assert "agentd.toml.example" in str(err.value)


def test_migration_timing_defaults_and_file_values():
    cfg = build_config({}, {})
    assert cfg.migration_call_timeout_s == 10.0
    assert cfg.migration_retry_s == SourceOptions.retry_s
    assert cfg.migration_commit_resolve_s == SourceOptions.commit_resolve_s
    cfg = build_config({"migration_retry_s": 3, "migration_call_timeout_s": 1.5}, {})
    assert (cfg.migration_retry_s, cfg.migration_call_timeout_s) == (3.0, 1.5)


def test_the_environment_does_not_configure_migration(monkeypatch):
    monkeypatch.setenv("AGENTD_MIGRATION_RETRY_S", "1")
    assert build_config({}, {}).migration_retry_s == SourceOptions.retry_s
