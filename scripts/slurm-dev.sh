#!/usr/bin/env bash
# A throwaway single-node Slurm on this machine (root), for trying agentd's Slurm backend and the
# app by hand. Its files live in a temp dir; Ctrl-C cancels its jobs and stops every daemon.
#   sudo scripts/slurm-dev.sh            # prints: export SLURM_CONF=/tmp/fleetdeck-slurm-XXXX/slurm.conf
#   export SLURM_CONF=...; sbatch --wrap 'sleep 600'; agentd --slurm on --node-name "$(hostname -s)"
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
exec "$PY" -m tests.slurm.cluster "$@"
