"""The PyInstaller recipe: it runs, names files that exist and modules that import.

The fast test executes the spec with PyInstaller's build steps recorded instead of run; the slow
one runs PyInstaller's real dependency analysis of agentctl (no Qt) in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest

from tests.packaging.conftest import ROOT

SPEC = ROOT / "packaging" / "pyinstaller" / "fleetdeck.spec"


def _pyinstaller():
    try:
        import PyInstaller  # noqa: F401
        from PyInstaller.utils import hooks
    except ImportError:
        msg = "PYINSTALLER MISSING: .venv/bin/pip install pyinstaller to check packaging/pyinstaller/fleetdeck.spec"
        print(f"\n{'!' * 70}\n{msg}\n{'!' * 70}", file=sys.stderr)
        pytest.skip(msg)
    return hooks


class _Step:
    calls: ClassVar[list[tuple[str, tuple, dict]]] = []

    def __init__(self, *args, **kw):
        type(self).calls.append((type(self).__name__, args, kw))
        self.args, self.kw = args, kw
        self.pure, self.scripts, self.binaries, self.datas = [], [], [], []


def test_spec_executes_with_real_files_and_modules():
    _pyinstaller()
    _Step.calls = []
    steps = {name: type(name, (_Step,), {}) for name in ("Analysis", "PYZ", "EXE", "COLLECT")}
    namespace = {"SPECPATH": str(SPEC.parent), "__file__": str(SPEC), **steps}
    exec(compile(SPEC.read_text(), str(SPEC), "exec"), namespace)
    analyses = [c for c in _Step.calls if c[0] == "Analysis"]
    assert len(analyses) == 2
    for _, args, kw in analyses:
        [script] = args[0]
        assert Path(script).is_file()
        compile(Path(script).read_text(), script, "exec")
        for src, _dest in kw["datas"]:
            assert Path(src).is_file(), src
        unresolved = [m for m in kw["hiddenimports"] if importlib.util.find_spec(m) is None]
        assert not unresolved, f"hidden imports that do not exist: {unresolved}"
        assert "agentd.control.slurm" not in kw["excludes"]  # agentctl cluster from-slurm needs it
    names = sorted(c[2]["name"] for c in _Step.calls if c[0] == "EXE")
    assert names == ["agentctl", "fleetdeck"]
    [collect] = [c for c in _Step.calls if c[0] == "COLLECT"]
    assert collect[2]["name"] == "fleetdeck"


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_agentctl_analysis_runs(tmp_path):
    """PyInstaller's real Analysis of agentctl (its whole import graph), without building."""
    _pyinstaller()
    script = tmp_path / "analyse.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from PyInstaller import config as C, compat
        from PyInstaller.building import build_main
        C.CONF.update(specpath={str(SPEC.parent)!r}, specnm="fleetdeck", workpath={str(tmp_path / 'work')!r},
                      distpath={str(tmp_path / 'dist')!r}, warnfile={str(tmp_path / 'warn.txt')!r},
                      code_cache={{}}, noconfirm=True, upx_available=False,
                      hiddenimports=[], ui_admin=False, ui_access=False, tests_modgraph=None,
                      spec={str(SPEC)!r})
        C.CONF["dot-file"] = {str(tmp_path / 'graph.dot')!r}
        C.CONF["xref-file"] = {str(tmp_path / 'xref.html')!r}
        os.makedirs(C.CONF["workpath"], exist_ok=True)
        a = build_main.Analysis([{str(SPEC.parent / 'agentctl_main.py')!r}], pathex=[{str(ROOT)!r}],
                                hiddenimports=["agentd.cli.cluster", "agentd.control.slurm"])
        mods = {{name for name, *_ in a.pure}}
        missing = [m for m in ("agentd.cli", "agentd.cli.cluster", "agentd.control.slurm", "msgspec") if m not in mods]
        print("PURE", len(mods), "MISSING", missing)
        sys.exit(1 if missing else 0)
    """))
    env = {**os.environ, "PYINSTALLER_CONFIG_DIR": str(tmp_path / "cfg")}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=270, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MISSING []" in proc.stdout
