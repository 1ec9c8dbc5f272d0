"""The systemd unit and the annotated agentd.toml example."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from agentd.config import ConfigError, DaemonConfig, build_config, load_config_file
from tests.packaging.conftest import ROOT, require_tool

UNIT = ROOT / "packaging" / "systemd" / "agentd.service"
EXAMPLE = ROOT / "packaging" / "agentd.toml.example"


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(UNIT)
    return cp


def test_unit_verifies(tmp_path):
    tool = require_tool("systemd-analyze", "systemd")
    agentd = Path(sys.executable).with_name("agentd")
    assert agentd.exists(), f"{agentd}: install the project (pip install -e .) first"
    unit = tmp_path / "agentd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/agentd", str(agentd)))
    proc = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_unit_keeps_cgroups_and_jobs():
    s = _unit()["Service"]
    assert s["User"] == "root" and s["StateDirectory"] == "fleetdeck" and s["Delegate"] == "yes"
    assert s["KillMode"] == "process"  # a restart must not kill the jobs in agentd's subtree
    assert "--state-dir /var/lib/fleetdeck" in s["ExecStart"] and "--config /etc/fleetdeck/agentd.toml" in s["ExecStart"]
    # hardening that would take cgroups or /sys away from agentd must stay off
    for forbidden in ("ProtectControlGroups", "ProtectKernelTunables", "PrivateDevices", "DynamicUser", "ProtectSystem"):
        assert forbidden not in s, forbidden


def test_example_documents_and_loads_every_option():
    values = load_config_file(EXAMPLE)
    assert set(values) == set(DaemonConfig.__struct_fields__), "every agentd option, nothing else"
    cfg = build_config(values, {})
    assert msgspec.structs.replace(cfg, node_name="", state_dir="") == msgspec.structs.replace(
        build_config({}, {}), node_name="", state_dir=""
    ), "the example's values are the defaults"
    text = EXAMPLE.read_text()
    for name in DaemonConfig.__struct_fields__:
        # every option has a comment right above it
        idx = text.index(f"\n{name} = " if name != "labels" else "\n[labels]")
        assert text[:idx].rstrip().splitlines()[-1].startswith("#"), name


def test_migration_quota_takes_sizes_and_refuses_nonsense(tmp_path):
    assert build_config({"migration_quota": "512MiB"}, {}).migration_quota == 512 << 20
    assert build_config({}, {"migration_quota": "2G"}).migration_quota == 2 << 30
    for bad, words in (("lots", "not a size"), ("0", "more than 0")):
        with pytest.raises(ConfigError) as e:
            build_config({}, {"migration_quota": bad})
        assert "--migration-quota" in str(e.value) and words in str(e.value)
    out = subprocess.run([sys.executable, "-m", "agentd.daemon", "--state-dir", str(tmp_path), "--migration-quota", "lots"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("agentd: --migration-quota: size 'lots' is not a size"), out.stderr
