"""Video networks through the same training path as images: clip batches, EMA, the checkpoint that
src.eval scores with the validation's own numbers, an exact resume, and DDP on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import SMALL_CLIPS, run_module
from tests.test_ddp import last_logged

TINY_BASICVSR = [
    "model=basicvsr",
    "scale=4",
    "model.net.num_features=8",
    "model.net.num_blocks=1",
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.deterministic=true",
]


def train(run_dir: Path, *extra: str) -> None:
    result = run_module(
        "src.train",
        [*TINY_BASICVSR, *SMALL_CLIPS, f"hydra.run.dir={run_dir}", *extra],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def network_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("net.", "ema."))}


def test_a_video_network_trains_in_bf16_with_ema_and_eval_scores_its_checkpoint_alike(
    tmp_path: Path,
):
    run_dir = tmp_path / "run"
    # bf16 autocast in the training steps; validation and eval score in fp32 alike.
    bf16 = "trainer.precision=bf16-mixed"
    train(
        run_dir, "trainer.max_steps=2", "trainer.val_check_interval=2", "model.ema_decay=0.5", bf16
    )
    logged = last_logged(run_dir, "val/psnr_y")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert any(k.startswith("ema.") for k in network_weights(checkpoint))
    evaluated = tmp_path / "eval"
    result = run_module(
        "src.eval",
        [f"ckpt_path={checkpoint}", *SMALL_CLIPS, "comparisons=1", f"hydra.run.dir={evaluated}"],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((evaluated / "results.json").read_text())
    (video_set,) = results["sets"]
    assert (video_set["clips"], video_set["images"]) == (2, 6)  # 2 photos x 1 clip x 3 frames
    assert video_set["psnr_y"] == pytest.approx(logged, abs=1e-4)
    assert {row["clip"] for row in results["clips"]} == {r["clip"] for r in results["images"]}
    assert results["meta"]["crop_border"] == 0  # video sets are scored whole
    assert list((evaluated / "comparisons").glob("*_frame0001.png"))  # the middle frame


@pytest.mark.slow
def test_a_resumed_video_run_equals_an_uninterrupted_one(tmp_path: Path):
    # A schedule that does not depend on max_steps, so the first half is the same run.
    common = ["trainer.val_check_interval=2", "model.ema_decay=0.5", "scheduler=constant"]
    train(tmp_path / "whole", "trainer.max_steps=4", *common)
    train(tmp_path / "first", "trainer.max_steps=2", *common)
    first_half = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(tmp_path / "resumed", "trainer.max_steps=4", f"ckpt_path={first_half}", *common)
    whole = network_weights(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    resumed = network_weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert whole.keys() == resumed.keys()
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_video_training_under_ddp_on_cpu(tmp_path: Path):
    log_dir = tmp_path / "outputs"
    result = run_module(
        "src.train",
        [
            *TINY_BASICVSR,
            *SMALL_CLIPS,
            "trainer=ddp_cpu",
            "trainer.max_steps=2",
            f"paths.log_dir={log_dir}",
        ],
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    assert last_logged(run_dir, "val/psnr_y") > 0
