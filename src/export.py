"""``python -m src.export``: a checkpoint's or a model's inference network as ONNX or safetensors.

    python -m src.export ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt output=edsr.onnx
    python -m src.export model=imdn scale=4 model.pretrained=IMDN_x4.pth format=safetensors

ONNX: the graph of the shared path's network call (EMA weights, value_range), dynamic batch,
height and width, checked against PyTorch under onnxruntime (``verify=true``) before it takes its
name. safetensors: the same weights under the network's own keys, the model config as metadata.

The output is refused before any work when it is one of the inputs (``ckpt_path``,
``model.pretrained``; also through a symlink or a hard link), whatever ``overwrite`` says, and
when its suffix is not the format's (``.onnx``, ``.safetensors``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src.io.media import same_file
from src.models.exporting import (
    check_opset,
    export_onnx,
    export_safetensors,
    export_verified_onnx,
)
from src.models.loading import load_module
from src.models.onnx_runtime import is_onnx
from src.models.sr_module import SRModule
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.cli import quote_overrides, run_or_explain
from src.utils.errors import UserError
from src.utils.runtime import say
from src.utils.schema import check_config, check_writable_file

SUFFIXES = {"onnx": ".onnx", "safetensors": ".safetensors"}


def input_files(cfg: DictConfig) -> dict[str, Path]:
    """The files the export reads, by the key that names them."""
    named = {key: OmegaConf.select(cfg, key) for key in ("ckpt_path", "model.pretrained")}
    return {key: Path(str(value)) for key, value in named.items() if value}


def check_output(cfg: DictConfig, path: Path) -> None:
    """``path`` is none of the inputs and carries the format's suffix."""
    for key, source in input_files(cfg).items():
        if same_file(path, source):
            raise UserError(
                f"output={path} is one of the inputs ({key}={source}); an export never replaces "
                f"what it reads, whatever overwrite says: give another output"
            )
    suffix = SUFFIXES[cfg.format]
    if path.suffix.lower() != suffix:
        raise UserError(
            f"output={path}: format={cfg.format} writes a {suffix} file; name it "
            f"{path.with_suffix(suffix).name}"
            + "".join(
                f", or use format={name} for a {other} file"
                for name, other in SUFFIXES.items()
                if other == path.suffix.lower()
            )
        )


def target_path(cfg: DictConfig, module: SRModule) -> Path:
    """``output``, or ``<run folder>/<network>_x<scale>.<format>``; existing files need
    ``overwrite=true``."""
    name = f"{type(module.net).__name__.lower()}_x{module.scale}{SUFFIXES[cfg.format]}"
    path = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / name
    check_output(cfg, path)
    if path.exists() and not cfg.overwrite:
        raise UserError(f"{path} exists; pass overwrite=true to replace it")
    return path


def export(cfg: DictConfig) -> Path:
    """Write the file and report it (and, for ONNX, its agreement with PyTorch)."""
    check_config(cfg, "export")
    if cfg.output:
        check_writable_file(Path(cfg.output), "output")
        check_output(cfg, Path(cfg.output))
    if cfg.format == "onnx":
        check_opset(cfg.opset)
    if is_onnx(cfg.get("ckpt_path")):
        raise UserError(f"{cfg.ckpt_path} is already an ONNX file")
    module = load_module(cfg).eval()
    path = target_path(cfg, module)
    weights = "EMA" if module.ema is not None else "raw"
    if cfg.format == "safetensors":
        export_safetensors(module, path)
    elif cfg.verify:
        worst = export_verified_onnx(module, path, opset=cfg.opset, sample_size=cfg.sample_size)
        say(f"onnxruntime vs PyTorch: max |difference| {worst:.2e}")
    else:
        export_onnx(module, path, opset=cfg.opset, sample_size=cfg.sample_size)
    size_mb = path.stat().st_size / 2**20
    say(
        f"wrote {path} ({cfg.format}, {type(module.net).__name__} x{module.scale}, "
        f"{weights} weights, {size_mb:.1f} MB)"
    )
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_or_explain(lambda: export(cfg))


if __name__ == "__main__":
    sys.argv = quote_overrides(sys.argv)
    main()
