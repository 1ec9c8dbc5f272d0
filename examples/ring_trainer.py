#!/usr/bin/env python3
"""A dependency-free distributed "trainer": ring all-reduce over TCP with torchrun's environment.

Every rank reads exactly the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT), so a Fleetdeck group, torchrun or a shell
loop can start it. Rendezvous: rank 0 listens on MASTER_ADDR:MASTER_PORT; every rank opens its own
ring listener, registers its address there and gets back the whole table, then connects to its
right neighbour and accepts its left one. Each step: a fixed amount of CPU work ("work units";
rank 0 calibrates how many make ``--compute-ms`` and every rank does that many, so
``--slow-factor`` is a real factor of work), then a ring all-reduce of the gradient (reduce-scatter,
all-gather). Waiting ranks block in select/recv; while they wait they send a small heartbeat to
their right neighbour, so a rank that hears nothing from its left for ``--peer-timeout`` knows that
neighbour itself is stuck (not merely waiting) and names it. A lost or stuck peer is announced
around the ring in both directions: every rank exits with status 3 naming the same rank.

Per step it reports ``step``, ``step_compute_s`` (wall seconds of compute), ``step_cpu_s`` (CPU
seconds of that compute), ``step_wait_s`` (wall seconds in the all-reduce) and ``samples_per_s``:
through ``agentd.report`` under agentd, else as ``AGENTD_METRIC`` lines on stdout.

Checkpoints (``--checkpoint-dir``, default $AGENTD_CHECKPOINT_DIR): every ``--checkpoint-every``
steps, at the end, and when any rank gets the checkpoint signal ($AGENTD_CHECKPOINT_SIGNAL,
default SIGUSR1). The stop request rides in the all-reduce, so every rank stops after the same
step. Each rank keeps its last two checkpoints (atomic writes); on start the ranks agree on the
newest step all of them hold and resume there.

    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 RANK=0 python examples/ring_trainer.py &
    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 RANK=1 python examples/ring_trainer.py
"""

from __future__ import annotations

import argparse
import array
import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from agentd import report
except ImportError:  # run outside the project: metrics go to stdout lines only
    report = None  # type: ignore[assignment]

EXIT_USAGE = 2
EXIT_PEER = 3
_FRAME = struct.Struct("!cI")  # kind, payload length
DATA, HEARTBEAT, ABORT, HELLO, BYE = b"D", b"H", b"A", b"O", b"B"
ITERS_PER_UNIT = 1000
_stop_requested = False


class PeerLost(Exception):
    """A ring neighbour (or, via an abort notice, any rank) is gone or stuck."""

    def __init__(self, rank: int, why: str) -> None:
        super().__init__(f"lost peer rank {rank}: {why}")
        self.rank, self.why = rank, why


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int


def dist_from_env(env: dict[str, str]) -> Dist:
    """torchrun's variables; SystemExit(2) naming the variable and the remedy when one is wrong."""
    def num(name: str, default: int | None) -> int:
        raw = env.get(name)
        if raw is None:
            if default is None:
                sys.exit(f"ring_trainer: {name} is not set; start the ranks with torchrun's environment "
                         f"(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), e.g. through agentctl submit --nodes")
            return default
        try:
            return int(raw)
        except ValueError:
            sys.exit(f"ring_trainer: {name}={raw!r} is not a whole number")
    world = num("WORLD_SIZE", 1)
    rank = num("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        sys.exit(f"ring_trainer: RANK={rank} must be in 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    port = num("MASTER_PORT", 29500 if world == 1 else None)
    if not 0 < port < 65536:
        sys.exit(f"ring_trainer: MASTER_PORT={port} is not a TCP port (1..65535)")
    return Dist(rank, world, num("LOCAL_RANK", rank), num("LOCAL_WORLD_SIZE", world), num("NODE_RANK", 0),
                env.get("MASTER_ADDR", "127.0.0.1"), port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--steps", type=int, default=100, help="total steps (default 100)")
    p.add_argument("--compute-ms", type=float, default=50.0,
                   help="compute per step; rank 0 calibrates work units to this once (default 50)")
    p.add_argument("--work-units", type=int, default=0, help="work units per step (overrides --compute-ms)")
    p.add_argument("--dim", type=int, default=256, help="gradient length (default 256)")
    p.add_argument("--batch", type=int, default=32, help="samples per step per rank, for samples_per_s")
    p.add_argument("--slow-rank", type=int, default=-1, help="this rank's compute takes --slow-factor as long")
    p.add_argument("--slow-factor", type=float, default=1.0)
    p.add_argument("--hang-rank", type=int, default=-1, help="this rank hangs at --hang-at-step")
    p.add_argument("--hang-at-step", type=int, default=5)
    p.add_argument("--hang-mode", choices=("spin", "sleep"), default="spin",
                   help="a hung rank spins on the CPU (stuck compute) or sleeps (deadlock)")
    p.add_argument("--checkpoint-dir", default=os.environ.get("AGENTD_CHECKPOINT_DIR") or None)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--peer-timeout", type=float, default=300.0,
                   help="seconds without a word from the left neighbour before it counts as stuck")
    p.add_argument("--rendezvous-timeout", type=float, default=120.0)
    p.add_argument("--out", help="write the final state of this rank here (JSON; {rank} is replaced)")
    return p.parse_args(argv)


# ---- wire -------------------------------------------------------------------------------------

def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    sock.sendall(_FRAME.pack(kind, len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int, peer: int, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise PeerLost(peer, f"sent a partial message and then nothing for {timeout_s:.0f} s") from None
        except OSError as e:
            raise PeerLost(peer, f"connection failed ({e.strerror or e})") from None
        if not chunk:
            raise PeerLost(peer, "closed the connection (exited or was killed)")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, peer: int, timeout_s: float) -> tuple[bytes, bytes]:
    kind, n = _FRAME.unpack(_recv_exact(sock, _FRAME.size, peer, timeout_s))
    return kind, _recv_exact(sock, n, peer, timeout_s) if n else b""


class Ring:
    """The two neighbour connections of one rank; every wait blocks in select."""

    def __init__(self, rank: int, world: int, left: socket.socket, right: socket.socket, peer_timeout: float) -> None:
        self.rank, self.world, self.left, self.right = rank, world, left, right
        self.left_rank, self.right_rank = (rank - 1) % world, (rank + 1) % world
        self.peer_timeout = peer_timeout
        self.heartbeat_s = max(0.05, min(2.0, peer_timeout / 4))
        self.right_done = False  # the right neighbour finished cleanly: it sends and expects nothing more

    def _abort_notice(self, payload: bytes) -> PeerLost:
        info = json.loads(payload)
        return PeerLost(int(info["lost"]), f"{info['why']} (announced by rank {info['by']})")

    def recv_data(self) -> bytes:
        """The next data frame from the left; heartbeats keep the wait alive, abort notices end it."""
        heard = time.monotonic()
        next_beat = heard + self.heartbeat_s
        while True:
            now = time.monotonic()
            if now - heard > self.peer_timeout:
                raise PeerLost(self.left_rank, f"sent nothing for {self.peer_timeout:.0f} s while this rank "
                                               "waited (stuck: neither computing to the end nor waiting)")
            timeout = max(0.0, min(next_beat, heard + self.peer_timeout) - now)
            watch = [self.left] if self.right_done else [self.left, self.right]
            ready, _, _ = select.select(watch, [], [], timeout)
            if self.right in ready:  # only a goodbye, an abort notice or EOF ever comes back from the right
                kind, payload = recv_frame(self.right, self.right_rank, self.peer_timeout)
                if kind == ABORT:
                    raise self._abort_notice(payload)
                self.right_done = kind == BYE
            if self.left in ready:
                kind, payload = recv_frame(self.left, self.left_rank, self.peer_timeout)
                heard = time.monotonic()
                if kind == DATA:
                    return payload
                if kind == ABORT:
                    raise self._abort_notice(payload)
            if time.monotonic() >= next_beat and not self.right_done:
                try:  # "I am alive and waiting", for the right neighbour's timeout
                    send_frame(self.right, HEARTBEAT)
                except OSError as e:
                    raise PeerLost(self.right_rank, f"connection failed ({e.strerror or e})") from None
                next_beat = time.monotonic() + self.heartbeat_s

    def send_data(self, payload: bytes) -> None:
        self.right.settimeout(self.peer_timeout)
        try:
            send_frame(self.right, DATA, payload)
        except OSError as e:
            raise PeerLost(self.right_rank, f"connection failed ({e.strerror or e})") from None

    def allreduce(self, vec: array.array[float]) -> array.array[float]:
        """Sum ``vec`` over all ranks (reduce-scatter then all-gather); every rank gets identical bytes."""
        n, w, r = len(vec), self.world, self.rank
        out = array.array("d", vec)
        bounds = [n * i // w for i in range(w + 1)]

        def chunk(i: int) -> slice:
            return slice(bounds[i % w], bounds[i % w + 1])

        for s in range(w - 1):  # reduce-scatter: after it, rank r owns the full sum of chunk r+1
            self.send_data(out[chunk(r - s)].tobytes())
            got = array.array("d")
            got.frombytes(self.recv_data())
            sl = chunk(r - s - 1)
            out[sl] = array.array("d", (a + b for a, b in zip(out[sl], got, strict=True)))
        for s in range(w - 1):  # all-gather: pass the finished chunks around
            self.send_data(out[chunk(r + 1 - s)].tobytes())
            got = array.array("d")
            got.frombytes(self.recv_data())
            out[chunk(r - s)] = got
        return out

    def announce(self, lost: PeerLost) -> None:
        """Tell both neighbours (best effort) which rank was lost, so every rank names the same one."""
        note = json.dumps({"lost": lost.rank, "why": lost.why, "by": self.rank}).encode()
        for sock in (self.right, self.left):
            try:
                sock.settimeout(1.0)
                send_frame(sock, ABORT, note)
            except OSError:
                pass

    def close(self, clean: bool) -> None:
        if clean:  # the left neighbour may still wait for its last chunk: tell it this EOF is no loss
            try:
                self.left.settimeout(1.0)
                send_frame(self.left, BYE)
            except OSError:
                pass
        else:
            self._drain()
        for sock in (self.left, self.right):
            sock.close()

    def _drain(self, limit_s: float = 1.0) -> None:
        """After an abort notice: stop sending and read until the neighbours hang up (or
        ``limit_s``). Closing a socket with unread data sends a reset, and a reset can reach a
        neighbour before it reads the notice: it would then name this rank, not the lost one."""
        open_socks = []
        for sock in {self.left, self.right}:  # a ring of two: one socket both ways
            try:
                sock.shutdown(socket.SHUT_WR)
                open_socks.append(sock)
            except OSError:
                pass
        deadline = time.monotonic() + limit_s
        while open_socks and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(open_socks, [], [], left)
            for sock in ready:
                try:
                    if not sock.recv(65536):
                        open_socks.remove(sock)
                except OSError:
                    open_socks.remove(sock)


# ---- rendezvous -------------------------------------------------------------------------------

def _connect(addr: tuple[str, int], deadline: float, what: str) -> socket.socket:
    while True:
        try:
            return socket.create_connection(addr, timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        except OSError as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"ring_trainer: cannot reach {what} at {addr[0]}:{addr[1]} ({e.strerror or e}); "
                                 "check MASTER_ADDR/MASTER_PORT and that rank 0 runs") from None
            time.sleep(0.2)


def _read_json_line(sock: socket.socket, deadline: float, what: str) -> dict[str, Any]:
    buf = b""
    while not buf.endswith(b"\n"):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise SystemExit(f"ring_trainer: rendezvous timed out waiting for {what}") from None
        if not chunk:
            raise SystemExit(f"ring_trainer: {what} closed the connection during rendezvous")
        buf += chunk
    out: dict[str, Any] = json.loads(buf)
    return out


def calibrate(target_ms: float) -> int:
    """Work units that take about ``target_ms`` here (measured once, by rank 0)."""
    t0 = time.perf_counter()
    work(20)
    per_unit = (time.perf_counter() - t0) / 20
    return max(1, round(target_ms / 1000 / per_unit))


def work(units: int) -> int:
    """A fixed amount of pure CPU work: ``units`` × ITERS_PER_UNIT steps of an LCG."""
    x = 1
    for _ in range(units * ITERS_PER_UNIT):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def rendezvous(d: Dist, args: argparse.Namespace, my_ckpt_steps: list[int]) -> tuple[Ring | None, dict[str, Any]]:
    """Register with rank 0, learn the plan (work units, resume step), connect the ring."""
    deadline = time.monotonic() + args.rendezvous_timeout
    me: dict[str, Any] = {"rank": d.rank, "world_size": d.world_size, "steps": my_ckpt_steps}
    if d.rank == 0:
        master = socket.create_server((d.master_addr, d.master_port), reuse_port=False, backlog=max(16, d.world_size))
        host = master.getsockname()[0]
    else:
        reg = _connect((d.master_addr, d.master_port), deadline, "rank 0 (the master)")
        host = reg.getsockname()[0]  # the address on the route to the master: reachable by the others
    listener = socket.create_server((host, 0), backlog=4)
    me["addr"] = [host, listener.getsockname()[1]]
    if d.rank == 0:
        entries = {0: me}
        conns = []
        while len(entries) < d.world_size:
            master.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                conn, _ = master.accept()
            except TimeoutError:
                missing = sorted(set(range(d.world_size)) - entries.keys())
                raise SystemExit(f"ring_trainer: rendezvous timed out; ranks {missing} never registered") from None
            info = _read_json_line(conn, deadline, "a registering rank")
            if info["world_size"] != d.world_size or info["rank"] in entries:
                raise SystemExit(f"ring_trainer: rank registration {info} clashes (WORLD_SIZE {d.world_size}, "
                                 f"known ranks {sorted(entries)}); every rank needs a distinct RANK and one WORLD_SIZE")
            entries[int(info["rank"])] = info
            conns.append(conn)
        common = set.intersection(*(set(e["steps"]) for e in entries.values()))
        plan: dict[str, Any] = {"addrs": [entries[r]["addr"] for r in range(d.world_size)],
                "units": args.work_units or calibrate(args.compute_ms),
                "resume_step": max(common, default=0)}
        for conn in conns:
            conn.sendall(json.dumps(plan).encode() + b"\n")
            conn.close()
        master.close()
    else:
        reg.sendall(json.dumps(me).encode() + b"\n")
        plan = _read_json_line(reg, deadline, "rank 0 (the master)")
        reg.close()
    if d.world_size == 1:
        listener.close()
        return None, plan
    right_rank = (d.rank + 1) % d.world_size
    host_r, port_r = plan["addrs"][right_rank]
    right = _connect((str(host_r), int(port_r)), deadline, f"rank {right_rank}")
    send_frame(right, HELLO, str(d.rank).encode())
    listener.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        left, _ = listener.accept()
    except TimeoutError:
        raise SystemExit(f"ring_trainer: rank {(d.rank - 1) % d.world_size} never connected") from None
    listener.close()
    kind, who = recv_frame(left, -1, args.rendezvous_timeout)
    if kind != HELLO or int(who) != (d.rank - 1) % d.world_size:
        raise SystemExit(f"ring_trainer: expected rank {(d.rank - 1) % d.world_size} on the left, got {who!r}")
    for s in (left, right):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Ring(d.rank, d.world_size, left, right, args.peer_timeout), plan


# ---- the model --------------------------------------------------------------------------------

def gradient(rank: int, step: int, dim: int) -> array.array[float]:
    """Whole numbers, so sums are exact in any order: the expected all-reduce is easy to check."""
    return array.array("d", (float(((rank + 1) * (step + 1) + i) % 13 - 6) for i in range(dim)))


def _ckpt_path(directory: Path, rank: int, step: int) -> Path:
    return directory / f"rank-{rank}.step-{step}.json"


def checkpoint_steps(directory: Path | None, rank: int) -> list[int]:
    if directory is None or not directory.is_dir():
        return []
    steps = []
    for p in directory.glob(f"rank-{rank}.step-*.json"):
        try:
            steps.append(int(p.name.rsplit("-", 1)[1].split(".")[0]))
        except ValueError:
            continue
    return sorted(steps)


def save_checkpoint(directory: Path, rank: int, step: int, weights: array.array[float]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    final = _ckpt_path(directory, rank, step)
    tmp = final.with_name(final.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"rank": rank, "step": step, "weights": list(weights)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)  # atomic: a reader sees a whole checkpoint or none
    for old in checkpoint_steps(directory, rank)[:-2]:  # keep two: the ranks may be one checkpoint apart
        _ckpt_path(directory, rank, old).unlink(missing_ok=True)


def emit(**values: float) -> None:
    if report is not None and report.enabled():
        report.metric(**values)
    else:
        print("AGENTD_METRIC " + " ".join(f"{k}={v:.6g}" for k, v in values.items()), flush=True)


def hang(mode: str) -> None:
    """Never return: spin on the CPU (a stuck compute loop) or sleep (a deadlock)."""
    while True:
        if mode == "spin":
            work(100)
        else:
            time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    d = dist_from_env(dict(os.environ))
    ckpt_dir = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    sig = getattr(signal, os.environ.get("AGENTD_CHECKPOINT_SIGNAL", "SIGUSR1"), signal.SIGUSR1)

    def request_stop(*_: object) -> None:
        global _stop_requested
        _stop_requested = True

    signal.signal(sig, request_stop)
    ring, plan = rendezvous(d, args, checkpoint_steps(ckpt_dir, d.rank))
    units = int(plan["units"])
    if d.rank == args.slow_rank:
        units = max(1, round(units * args.slow_factor))
    weights = array.array("d", [0.0] * args.dim)
    step = int(plan["resume_step"])
    if step and ckpt_dir is not None:
        saved = json.loads(_ckpt_path(ckpt_dir, d.rank, step).read_text())
        weights = array.array("d", saved["weights"])
        print(f"rank {d.rank}: resumed from step {step}", flush=True)
    print(f"rank {d.rank}/{d.world_size}: {units} work units per step, starting at step {step}", flush=True)
    reduced = array.array("d", [0.0] * args.dim)
    lr = 0.5 ** 10
    stop = False
    try:
        while step < args.steps:
            t0, c0 = time.perf_counter(), time.process_time()
            if d.rank == args.hang_rank and step + 1 >= args.hang_at_step:
                print(f"rank {d.rank}: hanging at step {step + 1} ({args.hang_mode})", flush=True)
                hang(args.hang_mode)
            work(units)
            t1, c1 = time.perf_counter(), time.process_time()
            grad = gradient(d.rank, step, args.dim)
            grad.append(1.0 if _stop_requested else 0.0)  # the stop request rides along: all ranks agree
            summed = ring.allreduce(grad) if ring is not None else grad
            t2 = time.perf_counter()
            stop = summed.pop() > 0
            reduced = summed
            for i, g in enumerate(reduced):
                weights[i] -= lr * g / d.world_size
            step += 1
            emit(step=step, step_compute_s=t1 - t0, step_cpu_s=c1 - c0, step_wait_s=t2 - t1,
                 samples_per_s=args.batch / max(t2 - t0, 1e-9))
            if ckpt_dir is not None and (stop or step % args.checkpoint_every == 0 or step == args.steps):
                save_checkpoint(ckpt_dir, d.rank, step, weights)
            if stop:
                # Our own checkpoint signal may still be on its way (a peer's stop came first):
                # ignored from now on, it cannot kill us while we exit (Python puts its default
                # action back at shutdown for signals it handles).
                signal.signal(sig, signal.SIG_IGN)
                print(f"rank {d.rank}: checkpoint at step {step}, stopping", flush=True)
                break
    except PeerLost as lost:
        if ring is not None:
            ring.announce(lost)
            ring.close(clean=False)
        print(f"ring_trainer rank {d.rank}: {lost}", file=sys.stderr, flush=True)
        return EXIT_PEER
    if ring is not None:
        ring.close(clean=True)
    if stop:
        return 0
    digest = hashlib.sha256(weights.tobytes()).hexdigest()[:16]
    if args.out:
        Path(args.out.format(rank=d.rank)).write_text(json.dumps({"rank": d.rank, "step": step, "weights_sha": digest,
                                              "last_allreduce": list(reduced)}))
    print(f"done rank={d.rank} step={step} weights={digest} allreduce_sum={sum(reduced):.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
