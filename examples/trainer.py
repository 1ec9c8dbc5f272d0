#!/usr/bin/env python3
"""A numpy CPU "training" job for agentd: reports step, samples and loss; checkpoints on a signal.

On the checkpoint signal (env AGENTD_CHECKPOINT_SIGNAL, default SIGUSR1) it finishes the current
step, writes its full state (step, RNG state, weights) atomically to AGENTD_CHECKPOINT_DIR and
exits 0. With AGENTD_RESUME=1 it continues from that checkpoint; the result is bit-identical to
a run that was never interrupted.

    python examples/trainer.py --steps 2000 --step-time 0.02 --checkpoint-mb 64
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

try:
    from agentd import report
except ImportError:  # run outside the project: metrics go to stdout lines only
    report = None  # type: ignore[assignment]

CHECKPOINT_NAME = "trainer-checkpoint.npz"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000, help="total optimisation steps (default 1000)")
    p.add_argument("--step-time", type=float, default=0.05, help="seconds of CPU work per step (default 0.05)")
    p.add_argument("--checkpoint-mb", type=float, default=0.0, help="pad the checkpoint to this many MiB")
    p.add_argument("--dim", type=int, default=64, help="model width (default 64)")
    p.add_argument("--batch", type=int, default=32, help="samples per step (default 32)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=os.environ.get("AGENTD_CHECKPOINT_DIR", "checkpoints"))
    p.add_argument("--out", help="write the final weights here (.npy)")
    return p.parse_args(argv)


class Trainer:
    """Linear regression by SGD; the data come from a seeded generator that is part of the state."""

    def __init__(self, dim: int, batch: int, lr: float, seed: int) -> None:
        self.batch, self.lr = batch, lr
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.true_w = np.random.Generator(np.random.PCG64(seed + 1)).normal(size=dim)
        self.w = np.zeros(dim)
        self.step = 0

    def train_step(self) -> float:
        x = self.rng.normal(size=(self.batch, self.w.size))
        y = x @ self.true_w + 0.01 * self.rng.normal(size=self.batch)
        err = x @ self.w - y
        self.w -= self.lr * (x.T @ err) / self.batch
        self.step += 1
        return float(np.mean(err ** 2))

    def save(self, directory: Path, pad_mb: float) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, w=self.w, step=np.array(self.step), rng=np.array(json.dumps(self.rng.bit_generator.state)),
                 pad=np.zeros(int(pad_mb * (1 << 20)), dtype=np.uint8))
        final = directory / CHECKPOINT_NAME
        tmp = directory / (CHECKPOINT_NAME + ".tmp")
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)  # atomic: a reader sees the old checkpoint or the new one, never half
        return final

    def load(self, path: Path) -> None:
        with np.load(path) as data:
            self.w = data["w"].copy()
            self.step = int(data["step"])
            self.rng.bit_generator.state = json.loads(str(data["rng"]))


def burn(seconds: float, size: int = 48) -> None:
    """Busy CPU work (not part of the model state) so a step takes about ``seconds``."""
    end = time.perf_counter() + seconds
    a = np.ones((size, size))
    while time.perf_counter() < end:
        a = np.tanh(a @ a / size)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trainer = Trainer(args.dim, args.batch, args.lr, args.seed)
    ckpt_dir = Path(args.checkpoint_dir)
    if os.environ.get("AGENTD_RESUME") == "1" and (ckpt_dir / CHECKPOINT_NAME).exists():
        trainer.load(ckpt_dir / CHECKPOINT_NAME)
        print(f"resumed from step {trainer.step}", flush=True)

    requested = []
    sig = getattr(signal, os.environ.get("AGENTD_CHECKPOINT_SIGNAL", "SIGUSR1"), signal.SIGUSR1)
    signal.signal(sig, lambda *_: requested.append(True))

    loss = float("nan")
    while trainer.step < args.steps:
        loss = trainer.train_step()
        burn(args.step_time)
        if report is not None:
            report.metric(step=trainer.step, loss=loss)
            report.counter(samples=args.batch)
        if trainer.step % 100 == 0:
            print(f"step {trainer.step} loss {loss:.6f}", flush=True)
        if requested:
            path = trainer.save(ckpt_dir, args.checkpoint_mb)
            print(f"checkpoint at step {trainer.step} -> {path}", flush=True)
            return 0
    if args.out:
        np.save(args.out, trainer.w)
    print(f"done step={trainer.step} loss={loss:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
