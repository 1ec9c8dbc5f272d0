#!/usr/bin/env bash
# Installs the Debian packages the test suite uses, once, when running as root.
# Without root it only says what is missing; the tests that need a package skip and say why.
set -u
PKGS=(
  iproute2 procps psmisc            # ip netns for multi-host tests
  tmux                              # drives `agentctl top` on a real terminal
  nftables                          # blocks a daemon's port inside its own namespace (migration faults)
  criu                              # the real `criu check` verdict (Debian 12's 3.17 fails on new kernels)
  xvfb x11-apps imagemagick xdotool libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0
  libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
  slurmctld slurmd slurm-client munge  # a real single-node Slurm for the Slurm tests
  prometheus                        # promtool validates /metrics
  desktop-file-utils appstream      # desktop entry and AppStream validators
)
# criu 4.1 for the CRIU migration test, unpacked privately (see the script); as root only.
criu_for_tests() {
  [ "$(id -u)" -eq 0 ] && [ ! -x /opt/fleetdeck-test/criu/criu ] && python3 "$(dirname "$0")/criu-for-tests.py"
  return 0
}
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { criu_for_tests; exit 0; }
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: not root; missing Debian packages: ${missing[*]} (tests that need them will skip)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
# Services must not start at install time: the tests start their own, by pid.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/fleetdeck-apt.log 2>&1 \
  || { echo "system-deps: apt-get failed (see /tmp/fleetdeck-apt.log); dependent tests will skip" >&2; tail -5 /tmp/fleetdeck-apt.log >&2; }
rm -f /usr/sbin/policy-rc.d
criu_for_tests
exit 0
