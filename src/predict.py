"""``python -m src.predict``: upscale images and videos with a checkpoint, a model or ONNX.

    python -m src.predict ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt input=photos/
    python -m src.predict model=imdn scale=4 model.pretrained=IMDN_x4.pth input='shots/*.jpg' \
        output=sr/ tile=256 self_ensemble=true
    python -m src.predict onnx_path=edsr_x2.onnx input=clip.mp4 output=sr/

Every input goes through the shared inference path (:func:`src.ops.inference.upscale`, the one
validation and eval use). A file that cannot be read is reported and the others still run; the
exit status is 1 when any failed, 2 for an error that stops the run (bad option, no inputs).
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from src.io.media import available_memory, find_inputs, remove_stale_partials
from src.io.predict_io import Report, Upscaler, listing, upscale_files
from src.models.loading import load_module
from src.models.onnx_runtime import OnnxNetwork, is_onnx
from src.ops.inference import AUTO, input_channels, upscale
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.cli import quote_overrides, run_or_explain
from src.utils.errors import UserError
from src.utils.runtime import say
from src.utils.schema import check_config, check_writable_folder

EXIT_SOME_FAILED = 1


def check_options(cfg: DictConfig) -> None:
    """Refuse settings that would fail on every file, and an output that cannot be written,
    before any work."""
    check_config(cfg, "predict")
    pick_device(cfg.device)
    if not cfg.get("input"):
        raise UserError("give input=<file|folder|glob>")
    check_writable_folder(Path(cfg.output), "output")


def memory_budget(setting: float | str) -> int | None:
    """``memory_mb`` in bytes; ``auto``: 80% of the memory available now (None if unknown)."""
    if setting != AUTO:
        return int(float(setting) * 2**20)
    available = available_memory()
    return None if available is None else int(available * 0.8)


def pick_device(name: str) -> torch.device:
    """``device`` (already schema-checked) as a torch device; auto: cuda when one is visible,
    else cpu. A device this machine does not have is refused naming it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "" if torch.version.cuda else " (this torch is a CPU-only build)"
            raise UserError(f"device={name}: no CUDA device is visible{build}; use device=cpu")
        if device.index is not None and device.index >= count:
            raise UserError(
                f"device={name}: {count} CUDA device(s) visible, cuda:0 to cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device={name}: Apple's MPS is not available here; use device=cpu")
    return device


def onnx_upscaler(cfg: DictConfig, path: str) -> tuple[Upscaler, int, str, int]:
    """The shared inference path around an onnxruntime session."""
    network = OnnxNetwork(path)
    run = partial(
        upscale,
        network,
        scale=network.scale,
        tile=cfg.tile,
        tile_overlap=cfg.tile_overlap,
        self_ensemble=cfg.self_ensemble,
        tile_memory_mb=cfg.tile_memory_mb,
    )
    return run, network.scale, f"{Path(path).name} (onnxruntime)", network.channels


def torch_upscaler(cfg: DictConfig) -> tuple[Upscaler, int, str, int]:
    """SRModule.forward (the shared inference path, in fp32 with autocast off as eval runs it)
    on the chosen device."""
    device = pick_device(cfg.device)
    module = load_module(cfg).eval().to(device)

    def run(lr: torch.Tensor) -> torch.Tensor:
        return module(lr.to(device))

    return run, module.scale, type(module.net).__name__, input_channels(module.net)


def build_upscaler(cfg: DictConfig) -> tuple[Upscaler, int, str, int]:
    """The network's upscaler, scale, name and input channels (3, or 1 for a single-channel
    network)."""
    onnx_path = cfg.get("onnx_path") or (cfg.ckpt_path if is_onnx(cfg.get("ckpt_path")) else None)
    return onnx_upscaler(cfg, onnx_path) if onnx_path else torch_upscaler(cfg)


def predict(cfg: DictConfig) -> Report:
    """Upscale every input into ``output`` and print what happened."""
    check_options(cfg)
    inputs = find_inputs(str(cfg.input))
    upscaler, scale, name, channels = build_upscaler(cfg)
    output_dir = Path(cfg.output)
    tiling = f"tile={cfg.tile} tile_overlap={cfg.tile_overlap}" if cfg.tile else "whole images"
    if cfg.tile == AUTO:
        tiling += f" within {cfg.tile_memory_mb} MB"
    ensemble = ", x8 self-ensemble" if cfg.self_ensemble else ""
    count = f"{len(inputs)} input{'s' * (len(inputs) != 1)}"
    kind = ", single-channel" if channels == 1 else ""
    say(f"{name} x{scale} ({tiling}{ensemble}{kind}): {count} -> {output_dir}")
    removed = remove_stale_partials(output_dir)
    if removed:
        say(
            f"removed {len(removed)} unfinished file(s) an earlier, killed run left in {output_dir}"
        )
    report = upscale_files(
        upscaler,
        inputs,
        output_dir,
        scale,
        cfg.output_format,
        cfg.overwrite,
        cfg.progress,
        memory_budget(cfg.memory_mb),
        channels,
    )
    if report.skipped:
        say(
            f"skipped {len(report.skipped)} existing (overwrite=true replaces them): "
            f"{listing(report.skipped)}"
        )
    say(report.summary())
    if report.failed:
        print(
            f"error: {len(report.failed)} input(s) failed: {listing(report.failed)}",
            file=sys.stderr,
            flush=True,
        )
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    report = run_or_explain(lambda: predict(cfg))
    if report.failed:
        raise SystemExit(EXIT_SOME_FAILED)


if __name__ == "__main__":
    sys.argv = quote_overrides(sys.argv)
    main()
