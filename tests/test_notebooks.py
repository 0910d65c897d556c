"""The notebooks run top to bottom (nbclient) and are stored without outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = REPO_ROOT / "notebooks"


def execute(name: str) -> str:
    """Run ``notebooks/<name>`` in a fresh kernel; returns all its text output."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    )
    client.execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            texts.append(output.get("data", {}).get("text/plain", ""))
            texts.append(output.get("data", {}).get("text/markdown", ""))
    return "\n".join(texts)


@pytest.mark.parametrize("name", ["quickstart.ipynb", "compare_runs.ipynb"])
def test_notebooks_are_stored_without_outputs(name: str):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def test_quickstart_runs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    text = execute("quickstart.ipynb")
    assert "PSNR_Y" in text and "upscaled 1 image" in text
    assert "bicubic PSNR_Y" in text and "gain" in text


def write_run(folder: Path, overrides: list[str], psnr: list[float]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "train/loss", "val/psnr_y"])
        for index, value in enumerate(psnr):
            writer.writerow([0, (index + 1) * 10, 0.1, ""])
            writer.writerow([0, (index + 1) * 10, "", value])


def test_compare_runs_plots_a_sweep_and_explains_an_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", ["logger=csv", "model.optimizer.lr=0.0001"], [20.0, 21.5, 22.25])
    write_run(sweep / "1", ["logger=csv", "model.optimizer.lr=0.0002"], [20.5, 23.125])
    monkeypatch.setenv("SRLAB_RUNS_DIR", str(sweep))
    text = execute("compare_runs.ipynb")
    assert "2 runs" in text and "shared overrides: logger=csv" in text
    best = [line for line in text.splitlines() if "model.optimizer.lr=" in line]
    assert "23.1250" in best[0] and "0.0002" in best[0] and "22.2500" in best[1]
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SRLAB_RUNS_DIR", str(tmp_path / "empty"))
    assert "No runs with val/psnr_y" in execute("compare_runs.ipynb")
