"""Every model config trains for two steps on the sample data through the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.models.zoo import model_names
from tests.helpers import run_module

# The big classical transformers train here at a reduced width and depth (the same code paths):
# at their real sizes two CPU steps take minutes each.
WINDOW_TINY = ["model.net.embed_dim=12", "model.net.window_size=4", "model.net.num_features=8"]
REDUCED: dict[str, list[str]] = {
    **{
        name: [*WINDOW_TINY, "model.net.depths=[2]", "model.net.num_heads=[2]"]
        for name in ("hat", "hat_l", "srformer")
    },
    **{
        name: [*WINDOW_TINY, "model.net.depths=[2]", "model.net.num_heads=[3]", "model.net.gc=4"]
        for name in ("drct", "drct_l")
    },
    "atd": [
        *WINDOW_TINY,
        "model.net.depths=[2]",
        "model.net.num_heads=[2]",
        "model.net.category_size=8",
        "model.net.num_tokens=4",
        "model.net.reducted_dim=4",
        "model.net.convffn_kernel_size=3",
    ],
    "dat": [
        "model.net.embed_dim=96",
        "model.net.depth=[2,2]",
        "model.net.num_heads=[4,4]",
        "model.net.split_size=[4,8]",
        "model.net.expansion_factor=2.0",
        "model.net.num_features=16",
    ],
}
REDUCED["hat"].append("model.net.squeeze_factor=4")
REDUCED["hat_l"].append("model.net.squeeze_factor=4")


@pytest.mark.slow
@pytest.mark.parametrize("model", model_names())
def test_every_model_trains_two_steps(model: str, tmp_path: Path):
    result = run_module(
        "src.train",
        [
            f"model={model}",
            *REDUCED.get(model, []),
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
