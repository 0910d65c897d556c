"""Every model config trains for two steps on the sample data through the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.models.zoo import model_names
from tests.helpers import run_module


@pytest.mark.slow
@pytest.mark.parametrize("model", model_names())
def test_every_model_trains_two_steps(model: str, tmp_path: Path):
    result = run_module(
        "src.train",
        [
            f"model={model}",
            "trainer.max_steps=2",
            "data=sample",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
        ],
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best PSNR_Y" in result.stdout
