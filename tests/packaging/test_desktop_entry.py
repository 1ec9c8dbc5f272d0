"""Desktop entry, AppStream metadata and icons: validated by the freedesktop tools themselves."""

from __future__ import annotations

import configparser
import struct
import subprocess
import xml.etree.ElementTree as ET

from tests.packaging.conftest import ROOT, require_tool

RES = ROOT / "resources"
APP_ID = "io.fleetdeck.Fleetdeck"
SIZES = (16, 32, 48, 64, 128, 256, 512)


def test_desktop_file_validates():
    tool = require_tool("desktop-file-validate", "desktop-file-utils")
    proc = subprocess.run([tool, str(RES / "fleetdeck.desktop")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr  # not even a hint


def test_metainfo_validates():
    tool = require_tool("appstreamcli", "appstream")
    proc = subprocess.run([tool, "validate", "--no-net", str(RES / f"{APP_ID}.metainfo.xml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "W:" not in proc.stdout and "E:" not in proc.stdout, proc.stdout


def test_entry_metainfo_and_icons_agree():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read(RES / "fleetdeck.desktop")
    d = entry["Desktop Entry"]
    assert d["Exec"].split()[0] == "fleetdeck" and d["Icon"] == APP_ID
    meta = ET.parse(RES / f"{APP_ID}.metainfo.xml").getroot()
    assert meta.findtext("id") == APP_ID
    assert meta.findtext("launchable") == "fleetdeck.desktop"
    assert meta.findtext("icon") == APP_ID
    svg = RES / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg") and root.get("viewBox") == "0 0 512 512"
    for size in SIZES:
        png = RES / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        head = png.read_bytes()[:32]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", png
        width, height = struct.unpack(">II", head[16:24])
        assert (width, height) == (size, size), png
        color_type = head[25]
        assert color_type == 6, f"{png}: expected RGBA (rounded corners are transparent)"
