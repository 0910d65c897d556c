"""Small models, checkpoints and images for the predict and export tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import hydra
import numpy as np
import torch

from src.models.sr_module import SRModule
from tests.helpers import compose_config

# A 1-block, 8-feature EDSR: its receptive field reaches 6 LR pixels, so 8 px of tile overlap
# reproduce the whole-image result.
MICRO = ["model.net.num_blocks=1", "model.net.num_features=8"]


def micro_module(
    tmp_path: Path, scale: int = 2, extra: list[str] | None = None, seed: int = 0
) -> tuple[SRModule, dict]:
    """A seeded micro EDSR SRModule and the model config it records."""
    cfg = compose_config("predict", [f"scale={scale}", *MICRO, *(extra or [])], tmp_path / "cfg")
    torch.manual_seed(seed)
    module: SRModule = hydra.utils.instantiate(cfg.model)
    config = module.model_config
    assert config is not None
    return module.eval(), config


def write_checkpoint(path: Path, module: SRModule, model_config: dict | None = None) -> Path:
    """Save ``module`` the way src.train's checkpoints hold it (state dict + srlab metadata);
    ``model_config`` in place of the one the module records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = module.model_config if model_config is None else model_config
    meta = {"model_config": config, "scale": module.scale}
    torch.save({"state_dict": module.state_dict(), "srlab": meta}, path)
    return path


def smooth_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random float image in [0, 1], (H, W) or (H, W, C)."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(height // 6, 2), max(width // 6, 2), channels)).astype(np.float32)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return image.reshape(height, width, channels) if channels > 1 else image.reshape(height, width)


def quantize(image: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    return np.round(image * np.iinfo(dtype).max).astype(dtype)
