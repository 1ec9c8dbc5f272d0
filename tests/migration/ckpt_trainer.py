"""A tiny trainer with the checkpoint contract, for the migration tests.

Appends ``step N pid`` to $PROGRESS_FILE every STEP_S; on SIGUSR1 writes its step (plus
$PAD_BYTES of padding) to $AGENTD_CHECKPOINT_DIR and exits 0; with AGENTD_RESUME=1 starts from
the checkpointed step. Failure injection: IGNORE_CKPT=1 ignores the signal (SIG_IGN),
IGNORE_CKPT=catch catches it and never checkpoints, HANDLER_DELAY_S waits that long before
installing the handler (a job still loading). $HOLD_BYTES of random data are kept in memory
only (the bulk of a CRIU image, for jobs without a contract).
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

ckpt = Path(os.environ["AGENTD_CHECKPOINT_DIR"])
progress = Path(os.environ["PROGRESS_FILE"])  # argv[1] may repeat it, to find us by cmdline
step_s = float(os.environ.get("STEP_S", "0.02"))
pad = int(os.environ.get("PAD_BYTES", "0"))
held = os.urandom(int(os.environ.get("HOLD_BYTES", "0")))  # state kept in memory only (a CRIU image's bulk)
step = 0
if os.environ.get("AGENTD_RESUME") == "1":
    step = json.loads((ckpt / "state.json").read_text())["step"]
want_ckpt = False


def on_signal(signum, frame):
    global want_ckpt
    want_ckpt = True


def on_signal_ignored(signum, frame):
    pass


time.sleep(float(os.environ.get("HANDLER_DELAY_S", "0")))
handlers = {"1": signal.SIG_IGN, "catch": on_signal_ignored}
signal.signal(signal.SIGUSR1, handlers.get(os.environ.get("IGNORE_CKPT", ""), on_signal))
while True:
    if want_ckpt:
        t0 = time.monotonic()
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "state.json").write_text(json.dumps({"step": step}))
        if pad:
            with open(ckpt / "weights.bin", "wb") as f:
                block = os.urandom(min(pad, 1 << 20))
                for _ in range(max(1, pad >> 20)):
                    f.write(block)
                f.flush()
                os.fsync(f.fileno())
        with open(progress, "a") as f:
            f.write(f"ckpt {time.monotonic() - t0:.4f} {os.getpid()}\n")
        sys.exit(0)
    step += 1
    with open(progress, "a") as f:
        f.write(f"step {step} {os.getpid()} {time.time():.4f}\n")
    time.sleep(step_s)
