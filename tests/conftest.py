"""Suite-wide settings: Qt offscreen, and no test may leave a process behind."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _become_subreaper() -> None:
    """Job shims outlive a SIGKILLed agentd; as their subreaper the test process collects
    them (pid 1 in some containers never does, leaving zombies)."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_become_subreaper()

import inspect
import re
import types

import pytest

from tests.agentd_proc import AgentdProc, reap_orphans, start_agentd

# ---- the `procs` marker: tests that start processes -----------------------------------------
# `make test-fast` runs `-m "not procs and not slurm"`: the pure tests, in seconds. A test is
# marked when it uses a fixture that starts processes (agentd, jobs, Slurm, Prometheus, users,
# network namespaces), or when its code, or a helper of the test suite it calls (two calls
# deep), names a way to start one. Marking too much only makes test-fast smaller.
PROCESS_FIXTURES = frozenset({
    "agentd", "agentd_factory", "hostile_agentd", "daemons", "node", "secure", "cluster", "manager",
    "make_manager", "slurm_cluster", "backend", "prometheus", "netns", "make_user", "user_python", "real_cgroups",
})
_STARTS_PROCESS = re.compile(r"\b(subprocess|Popen|start_agentd|AgentdProc|JobManager|sys\.executable|os\.fork|"
                             r"multiprocessing|agentctl\(|qt_shot)")


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _starts_processes(obj: object, depth: int = 2) -> bool:
    try:
        if _STARTS_PROCESS.search(inspect.getsource(obj)):  # type: ignore[arg-type]
            return True
    except (OSError, TypeError):
        return False
    code = getattr(obj, "__code__", None)
    if depth == 0 or code is None:
        return False
    scope = getattr(obj, "__globals__", {})
    for name in _code_names(code):
        target = scope.get(name)
        ours = (inspect.isfunction(target) or inspect.isclass(target)) and target.__module__.startswith("tests")
        if ours and _starts_processes(target, depth - 1):
            return True
    return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        func = getattr(item, "function", None)
        if fixtures & PROCESS_FIXTURES or (func is not None and _starts_processes(func)):
            item.add_marker(pytest.mark.procs)


@pytest.fixture
def agentd(tmp_path):
    """One real agentd with 2 simulated GPUs on free loopback ports; stopped afterwards."""
    proc = start_agentd(tmp_path, node="n1", simulate_gpus=2)
    yield proc
    proc.stop()
    reap_orphans()


@pytest.fixture
def agentd_factory(tmp_path):
    """Start several agentd processes; all are stopped (by pid) at the end of the test."""
    started: list[AgentdProc] = []

    def make(node: str = "n1", **kw) -> AgentdProc:
        p = start_agentd(tmp_path, node=node, **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()
    reap_orphans()



# ---- real unprivileged users (tests/users.py) ------------------------------------------------
from collections.abc import Callable, Iterator
from pathlib import Path

from tests import users as _users


@pytest.fixture
def netns():
    """Two network namespaces joined by a veth pair: hosts of their own (tests/netns_hosts.py)."""
    from tests.netns_hosts import namespaces

    with namespaces() as ns:
        yield ns


@pytest.fixture
def make_user() -> Iterator[Callable[..., _users.TestUser]]:
    """Factory: ``make_user(group=False, extra_groups=())`` creates a real user ``fdt<hex>`` with a
    home dir (and a fresh supplementary group with ``group=True``). At the end every such user's
    processes are killed by pid and the user, its home and its groups are removed."""
    why = _users.need_root()
    if why:
        pytest.skip(f"SKIPPED real-user test: {why}")
    made: list[_users.TestUser] = []

    def make(**kw) -> _users.TestUser:
        try:
            u = _users.create_user(**kw)
        except _users.UserSetupError as e:
            pytest.skip(f"SKIPPED real-user test: {e}")
        made.append(u)
        return u

    yield make
    for u in made:
        _users.remove_user(u)
    reap_orphans()


@pytest.fixture(scope="session")
def user_python() -> Path:
    """A Python interpreter an unprivileged user can run, with this repo importable."""
    why = _users.need_root()
    if why:
        pytest.skip(f"SKIPPED real-user test: {why}")
    try:
        return _users.build_user_python()
    except _users.UserSetupError as e:
        pytest.skip(f"SKIPPED real-user test: no Python a test user can run: {e}")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A dir under /tmp every user can traverse (0711), for state dirs of jobs run as test users
    (pytest's tmp_path sits under a 0700 dir); removed after."""
    import shutil

    d = _users.public_tmp()
    yield d
    shutil.rmtree(d, ignore_errors=True)
