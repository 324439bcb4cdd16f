"""The quickstart notebook runs headless against a trained, registered model."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


@pytest.mark.slow
def test_quickstart_notebook_runs(trained, tmp_path, monkeypatch):
    _, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders the chart
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "footballer" in text and "accuracy on these synthetic cases" in text
    assert "emergency" in text and "seek advice from a doctor" in text  # the swollen, warm leg
    assert "Points to" in text and "expected_information_gain" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)
