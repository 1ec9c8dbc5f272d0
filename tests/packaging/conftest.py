"""Shared helpers of the packaging tests: the repository root and loud skips for missing tools."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def require_tool(name: str, package: str) -> str:
    """Path of ``name``, or a loud skip naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name.upper()} MISSING: apt-get install {package} (or `make system-deps`) to run this check"
        print(f"\n{'!' * 70}\n{msg}\n{'!' * 70}", file=sys.stderr)
        pytest.skip(msg)
    return path
