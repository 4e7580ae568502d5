"""demo/demo.ipynb runs top to bottom on the CPU with the tiny golden checkpoint (nbclient, this venv's Python)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "demo" / "demo.ipynb"
KERNEL = "groupvit-test"
TIMEOUT_S = 300  # per cell


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    # A kernel spec of its own for this interpreter, so that no other installed "python3" kernel is picked.
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("GROUPVIT_CKPT", str(REPO / "tests" / "golden" / "tiny_official_ckpt.pth"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # on the CPU, as in CI

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name=KERNEL, resources={"metadata": {"path": str(REPO)}}).execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "tiny_official_ckpt.pth" in text and "parameters on cpu" in text
    assert "('background', 'cup', 'saucer', 'spoon', 'table')" in text
    assert "%" in text.rsplit("background threshold", 1)[1]  # the shares of the classes found
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 2  # the prediction and final groups, then every grouping stage
