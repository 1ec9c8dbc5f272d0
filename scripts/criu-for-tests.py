#!/usr/bin/env python3
"""Unpack criu 4.1 from Debian 13 (trixie) into a private directory, for the CRIU tests.

Debian 12's criu 3.17 fails `criu check` on recent kernels (vDSO layout), so the tests that
really dump and restore a job need a newer criu. Installing trixie's package would pull a newer
libc into the system; instead its .deb and those of its libraries (libc included) are unpacked
into DEST, and DEST/criu runs the binary with that libc's own loader. Nothing outside DEST is
touched; agentd uses it only when told to (AGENTD_CRIU=DEST/criu), as the tests do.

    scripts/criu-for-tests.py [DEST]     (default /opt/fleetdeck-test/criu)
"""

from __future__ import annotations

import lzma
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
ROOT_PACKAGE = "criu"
SKIP = {"debconf", "libc-bin"}  # maintainer-script helpers: not needed to run a binary


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def parse_packages(text: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
        if "Package" in fields:
            out.setdefault(fields["Package"], fields)
    return out


def closure(pkgs: dict[str, dict[str, str]], root: str) -> list[str]:
    """``root`` and everything it depends on (first alternative of each dependency)."""
    providers: dict[str, str] = {}
    for name, fields in pkgs.items():
        for virtual in re.split(r",\s*", fields.get("Provides", "")):
            if virtual:
                providers.setdefault(virtual.split(" ")[0], name)
    seen: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop()
        name = name if name in pkgs else providers.get(name, "")
        if not name or name in seen or name in SKIP:
            continue
        seen.append(name)
        deps = f"{pkgs[name].get('Depends', '')}, {pkgs[name].get('Pre-Depends', '')}"
        for dep in deps.split(","):
            first = dep.split("|")[0].strip().split(" ")[0].split(":")[0]
            if first:
                todo.append(first)
    return seen


def main(argv: list[str]) -> int:
    dest = Path(argv[0] if argv else "/opt/fleetdeck-test/criu")
    if (dest / "criu").exists():
        return 0
    index = lzma.decompress(fetch(f"{MIRROR}/dists/{SUITE}/main/binary-amd64/Packages.xz")).decode("utf-8", "replace")
    pkgs = parse_packages(index)
    names = closure(pkgs, ROOT_PACKAGE)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for name in names:
            deb = Path(tmp) / f"{name}.deb"
            deb.write_bytes(fetch(f"{MIRROR}/{pkgs[name]['Filename']}"))
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(root, dest / "root", symlinks=True)
    libdir = dest / "root" / "usr" / "lib" / "x86_64-linux-gnu"
    wrapper = dest / "criu"
    wrapper.write_text(f'#!/bin/sh\nexec {libdir}/ld-linux-x86-64.so.2 --library-path {libdir} {dest}/root/usr/sbin/criu "$@"\n')
    wrapper.chmod(0o755)
    version = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True)
    print(f"criu-for-tests: {version.stdout.split(chr(10))[0]} in {dest} ({len(names)} packages)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as exc:  # noqa: BLE001 - a missing test tool is reported, never fatal
        print(f"criu-for-tests: could not unpack criu ({exc}); the CRIU migration test will skip", file=sys.stderr)
        sys.exit(0)
