"""The app's submit dialog (issue 14): its fields checked before anything is sent (messages name
the field and the remedy), and the flow that sends a job or a group through the DataSource,
cancelling the accepted ranks when any rank is refused. No daemon here: a scripted source answers
(the real daemons are in test_submit_live.py)."""

from __future__ import annotations

import time

import pytest

from agentd.protocol.gang import GroupOpen, GroupOpenReply
from agentd.protocol.messages import Cancel, JobReply, Submit
from gui.sources.base import Capabilities, DataSource, NodeAddress, RequestFailure
from gui.submitform import FormError, GroupPlan, JobPlan, NodeOffer, SubmitForm, check_form
from tests.gui.gui_factories import job, snapshot

pytestmark = [pytest.mark.gui, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]

OFFERS = {"n1": NodeOffer(name="n1", gpus=[0, 1]), "n2": NodeOffer(name="n2", gpus=[0, 1]),
          "cpu": NodeOffer(name="cpu", gpus=[]), "far": NodeOffer(name="far", gpus=[0], relay="r1")}


def _error(form: SubmitForm) -> FormError:
    with pytest.raises(FormError) as e:
        check_form(form, OFFERS)
    return e.value


@pytest.mark.parametrize(("form", "field", "words"), [
    (SubmitForm(command="  ", nodes=["n1"]), "Command", "e.g. python train.py"),
    (SubmitForm(command="python -c 'print(1)", nodes=["n1"]), "Command", "close the quote"),
    (SubmitForm(command="x", nodes=[]), "Nodes", "check one node"),
    (SubmitForm(command="x", nodes=["n1"], env_text="A=1\nnot a pair"), "Environment", "line 2"),
    (SubmitForm(command="x", nodes=["n1"], checkpoint_signal="SIGKILL"), "Checkpoint signal", "SIGUSR1"),
    (SubmitForm(command="x", nodes=["n1", "far"]), "Nodes", "relay r1"),
    (SubmitForm(command="x", nodes=["n1", "cpu"], per_gpu=True), "One rank per GPU", "'GPUs per rank'"),
    (SubmitForm(command="x", nodes=["n1", "n2"], gpus=2, ranks_per_node=2), "GPUs per rank", "'Ranks per node'"),
    (SubmitForm(command="x", nodes=["n1", "n2"], name="no spaces"), "Name", "letters, digits"),
    (SubmitForm(command="x", nodes=["n1"], name="n" * 300), "Name", "shorten"),
])
def test_a_bad_field_is_named_with_its_remedy_in_the_dialogs_words(form, field, words):
    e = _error(form)
    assert e.field == field and words in e.message, e.message
    assert "--" not in e.message and "Traceback" not in e.message  # dialog words, not CLI flags


def test_one_node_is_a_job_and_several_are_a_group_of_ranks():
    plan = check_form(SubmitForm(command="python train.py --lr '3e-4 x'", nodes=["n2"], name="t", gpus=1, priority=-3,
                                 checkpoint_signal="usr2", env_text="# data\nHF_HOME=/data\n\nA=b=c"), OFFERS)
    assert isinstance(plan, JobPlan) and plan.node == "n2"
    s = plan.spec
    assert s.argv == ["python", "train.py", "--lr", "3e-4 x"] and (s.name, s.gpus, s.priority) == ("t", 1, -3)
    assert s.env == {"HF_HOME": "/data", "A": "b=c"} and s.checkpoint is not None and s.checkpoint.signal == "SIGUSR2"
    shell = check_form(SubmitForm(command="echo $HOME | wc", nodes=["far"], shell=True), OFFERS)
    assert isinstance(shell, JobPlan) and shell.spec.shell and shell.spec.argv == ["echo $HOME | wc"]  # a relay forwards jobs
    group = check_form(SubmitForm(command="echo hi | cat", nodes=["n2", "n1"], per_gpu=True, shell=True, priority=4), OFFERS)
    assert isinstance(group, GroupPlan) and group.spec.node_order() == ["n2", "n1"]  # rank 0 on the first checked
    assert [(a.node, a.local_rank) for a in group.ranks] == [("n2", 0), ("n2", 1), ("n1", 0), ("n1", 1)]
    assert group.ranks[0].argv == ["/bin/sh", "-c", "echo hi | cat"] and group.limits.priority == 4


def test_the_dialog_shows_what_is_wrong_keeps_open_and_accepts_a_good_group(qtbot):
    from PySide6.QtCore import Qt

    from gui.views.submit import SubmitDialog

    dlg = SubmitDialog(OFFERS)
    qtbot.addWidget(dlg)
    dlg.show()
    assert dlg.checked_nodes() == ["cpu"]  # the first node, so one click away from a job
    assert not dlg.ranks_box.isEnabled() and dlg.gpus_label.text() == "GPUs:"
    dlg.submit_button.click()
    assert dlg.result() != dlg.DialogCode.Accepted and dlg.isVisible() and dlg.plan is None
    assert dlg.error.text().startswith("Command: it is empty;")
    dlg.command.setText("python train.py")
    assert dlg.error.text() == "" and "One job on <b>cpu</b>" in dlg.summary.text()
    items = {dlg.nodes.item(i).data(Qt.ItemDataRole.UserRole + 1): dlg.nodes.item(i) for i in range(dlg.nodes.count())}
    items["cpu"].setCheckState(Qt.CheckState.Unchecked)
    for k in ("n1", "n2"):
        items[k].setCheckState(Qt.CheckState.Checked)
    assert dlg.ranks_box.isEnabled() and dlg.gpus_label.text() == "GPUs per rank:"
    dlg.ranks.setValue(2)
    dlg.gpus.setValue(1)
    assert "4 ranks on 2 nodes" in dlg.summary.text()
    dlg.env.setPlainText("oops")
    dlg.submit_button.click()
    assert dlg.error.text().startswith("Environment: line 1 'oops' is not KEY=VALUE") and dlg.plan is None
    dlg.env.setPlainText("NCCL_DEBUG=INFO")
    dlg.submit_button.click()
    assert dlg.result() == dlg.DialogCode.Accepted and isinstance(dlg.plan, GroupPlan) and len(dlg.plan.ranks) == 4


class Scripted(DataSource):
    """Records requests; the test answers them (the flow must not care who does)."""

    def __init__(self, relayed: dict[str, str] | None = None, control: bool = True) -> None:
        super().__init__()
        self.sent: list[tuple[int, str, object]] = []
        self.relayed = relayed or {}
        self.control = control

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def nodes(self) -> list[str]: return ["n1", "n2"]
    def now_s(self) -> float: return time.time()
    def capabilities(self) -> Capabilities: return Capabilities(can_control=self.control, label="test")

    def address(self, key: str) -> NodeAddress | None:
        return None if key in self.relayed else NodeAddress(key, f"tcp://127.0.0.{key[-1]}:7710")

    def relay_of(self, key: str) -> str | None:
        return self.relayed.get(key)

    def request(self, key: str, req) -> int:
        self.sent.append((len(self.sent) + 1, key, req))
        return len(self.sent)


def _state():
    from gui.state import ClusterState

    st = ClusterState()
    for n in ("n1", "n2"):
        st.apply_snapshot(n, snapshot(n, jobs=[]))
        st.set_link(n, "live")
    return st


def test_a_refused_rank_cancels_the_accepted_ones_and_says_so(qtbot):
    from gui.submit import Submitter, offers

    src, st = Scripted(), _state()
    sub = Submitter(src, st)
    failed: list[str] = []
    sub.failed.connect(failed.append)
    assert set(offers(src, st)) == {"n1", "n2"} and offers(src, st)["n1"].gpus == [0, 1]
    sub.submit(check_form(SubmitForm(command="python ring.py", nodes=["n1", "n2"], name="ring"), offers(src, st)))
    (tok, key, req), = src.sent
    assert key == "n1" and isinstance(req, GroupOpen)
    src.request_done.emit(tok, key, GroupOpenReply(group_id="n1.run-4", master_port=29555))
    ranks = src.sent[1:]
    assert [(k, r.spec.group.rank) for _, k, r in ranks] == [("n1", 0), ("n2", 1)]
    r0 = ranks[0][2].spec
    assert r0.env["MASTER_ADDR"] == "127.0.0.1" and r0.env["MASTER_PORT"] == "29555" and r0.name == "ring-r0"
    assert r0.group.leader == "tcp://127.0.0.1:7710" and r0.group.nodes == ["tcp://127.0.0.1:7710", "tcp://127.0.0.2:7710"]
    src.request_done.emit(ranks[0][0], "n1", JobReply(job=job("n1.7", gpus=())))
    src.request_failed.emit(ranks[1][0], RequestFailure("n2", ranks[1][2], 3, "node n2 has 512 unfinished jobs; wait"))
    assert [(k, r.job) for _, k, r in src.sent[3:]] == [("n1", "n1.7")] and isinstance(src.sent[3][2], Cancel)
    assert len(failed) == 1 and "n1.run-4" in failed[0] and "node n2, rank 1: node n2 has 512 unfinished jobs" in failed[0]
    assert "being cancelled" in failed[0]
    assert any(e.message == failed[0] and not e.ok for e in st.events)  # the event log has it


def test_a_job_behind_a_relay_names_its_node_and_a_read_only_view_sends_nothing(qtbot):
    from gui.submit import Submitter, offers

    src, st = Scripted(relayed={"n2": "r1"}), _state()
    sub = Submitter(src, st)
    done: list[str] = []
    sub.succeeded.connect(done.append)
    sub.submit(check_form(SubmitForm(command="sleep 60", nodes=["n2"], name="nap"), offers(src, st)))
    (tok, key, req), = src.sent
    assert key == "n2" and isinstance(req, Submit) and req.node == "n2" and req.spec.argv == ["sleep", "60"]
    src.request_done.emit(tok, "n2", JobReply(job=job("n2.3", state="queued", gpus=())))
    assert done == ["Submitted job 'nap' on n2: n2.3, now queued"] and st.job("n2.3") is not None
    ro = Scripted(control=False)
    sub2 = Submitter(ro, st)
    failed: list[str] = []
    sub2.failed.connect(failed.append)
    sub2.submit(check_form(SubmitForm(command="x", nodes=["n1"]), {"n1": NodeOffer("n1")}))
    assert ro.sent == [] and "read-only" in failed[0]


def test_the_submit_action_is_in_the_jobs_toolbar_and_menu_and_greyed_with_a_reason_in_replay(qtbot, settings):
    from gui.main_window import MainWindow

    live = MainWindow(Scripted(), settings, state=_state())
    qtbot.addWidget(live)
    a = live.jobs.act_submit
    assert a.isEnabled() and a.shortcut().toString() == "Ctrl+N"
    assert a in live.menuBar().actions()[2].menu().actions()  # Jobs ▸ Submit…
    live.submit_dialog()
    assert live.submit_dlg is not None and live.submit_dlg.checked_nodes() == ["n1"]
    live.submit_dlg.reject()
    ro = MainWindow(Scripted(control=False), settings, state=_state())
    qtbot.addWidget(ro)
    assert not ro.jobs.act_submit.isEnabled() and "replay" in ro.jobs.act_submit.toolTip()
    ro.submit_dialog()
    assert ro.submit_dlg is None

