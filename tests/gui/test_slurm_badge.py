"""Slurm jobs carry a visible badge in the job table."""

import pytest
from PySide6.QtCore import Qt

from gui.models.jobs import JobTableModel
from gui.state import ClusterState
from tests.gui.gui_factories import job, snapshot

pytestmark = [pytest.mark.gui]


def test_slurm_job_is_badged_and_explained(qapp):
    state = ClusterState()
    state.apply_snapshot("n1", snapshot("n1", jobs=[job("n1.1", name="train"), job("n1.slurm-42", name="sbatch-run", backend="slurm")]))
    model = JobTableModel(state)
    model.refresh()
    names = {model.data(model.index(r, 0)): model.data(model.index(r, 1)) for r in range(model.rowCount())}
    assert names == {"n1.1": "train", "n1.slurm-42": "sbatch-run  [Slurm]"}
    row = [r for r in range(model.rowCount()) if model.data(model.index(r, 0)) == "n1.slurm-42"][0]
    assert "Slurm job" in model.data(model.index(row, 1), Qt.ItemDataRole.ToolTipRole)
