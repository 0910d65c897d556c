"""``python -m src.export``: a checkpoint's or a model's inference network as ONNX or safetensors.

    python -m src.export ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt output=edsr.onnx
    python -m src.export model=imdn scale=4 model.pretrained=IMDN_x4.pth format=safetensors
    python -m src.export model=rlfn model.pretrained=rlfn_x2.pth quantize=int8 calibration=photos/

ONNX: the graph of the shared path's network call (EMA weights, value_range), dynamic batch,
height and width, checked against PyTorch under onnxruntime (``verify=true``) before it takes its
name. safetensors: the same weights under the network's own keys, the model config as metadata.
``quantize=int8``: the ONNX graph quantised after training by ONNX Runtime, calibrated on LR
patches of the images in ``calibration`` (:mod:`src.models.quantization`).

A video network (BasicVSR, IconVSR, BasicVSR++, EDVR, RealBasicVSR) exports with clips
(N, T, C, H, W) in, T fixed (``frames``; a window network's own window), N, H and W dynamic:

    python -m src.export model=basicvsr model.pretrained=BasicVSR_REDS4.pth frames=15

The output is refused before any work when it is one of the inputs (``ckpt_path``,
``model.pretrained``; also through a symlink or a hard link), whatever ``overwrite`` says, and
when its suffix is not the format's (``.onnx``, ``.safetensors``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from src.io.images import images_in_folder
from src.io.media import same_file
from src.models.exporting import (
    ClipShape,
    check_opset,
    clip_shape,
    export_onnx,
    export_safetensors,
    export_verified_onnx,
)
from src.models.loading import load_module
from src.models.onnx_runtime import is_onnx
from src.models.quantization import (
    CalibrationSettings,
    Int8Export,
    QuantizeSettings,
    export_int8_onnx,
)
from src.models.sr_module import SRModule
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.choices import WINDOW
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
    kind = f"_{cfg.quantize}" if cfg.get("quantize") else ""
    name = f"{type(module.net).__name__.lower()}_x{module.scale}{kind}{SUFFIXES[cfg.format]}"
    path = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / name
    check_output(cfg, path)
    if path.exists() and not cfg.overwrite:
        raise UserError(f"{path} exists; pass overwrite=true to replace it")
    return path


def check_quantize(cfg: DictConfig) -> None:
    """``quantize`` needs format=onnx and a ``calibration`` folder holding images."""
    if not cfg.get("quantize"):
        return
    if cfg.format != "onnx":
        raise UserError(
            f"quantize={cfg.quantize} quantises the ONNX graph; it needs format=onnx, not "
            f"format={cfg.format}"
        )
    if not cfg.get("calibration"):
        raise UserError(
            f"quantize={cfg.quantize} needs calibration=<folder of images> to set the "
            f"activation ranges from"
        )
    images_in_folder(Path(str(cfg.calibration)), "calibration")


def calibration_settings(cfg: DictConfig, scale: int) -> CalibrationSettings:
    """The ``calibration*`` keys, at the network's ``scale``."""
    return CalibrationSettings(
        folder=Path(str(cfg.calibration)),
        scale=scale,
        patches=int(cfg.calibration_patches),
        size=int(cfg.calibration_size),
        seed=int(cfg.calibration_seed),
        downscale=bool(cfg.calibration_downscale),
    )


def check_clip_export(cfg: DictConfig, module: SRModule) -> ClipShape | None:
    """The clips a video network is exported for (ONNX; ``frames`` checked against the
    network), None for an image network or format=safetensors. int8 calibrates on images, so
    a video network is exported in fp32 only."""
    if cfg.format != "onnx":
        return None
    frames = cfg.get("frames")
    clip = clip_shape(module.net, None if frames is None else int(frames))
    if clip is not None and cfg.get("quantize"):
        raise UserError(
            f"quantize={cfg.quantize} calibrates on LR patches of images; "
            f"{type(module.net).__name__} is a video network, exported in fp32 only: drop quantize"
        )
    return clip


def clip_note(clip: ClipShape | None) -> str:
    """What a video network's file takes, for the closing line ('' for images)."""
    if clip is None:
        return ""
    kind = "windows" if clip.kind == WINDOW else "clips"
    restores = f", restores frame {clip.position}" if clip.kind == WINDOW else ""
    return f", {kind} of {clip.frames} frames (fixed; N, H, W dynamic{restores})"


def report_int8(measured: Int8Export) -> None:
    """The fp32 graph's check and the int8 graph's agreement with PyTorch fp32."""
    if measured.fp32_difference is not None:
        say(f"fp32 graph: onnxruntime vs PyTorch: max |difference| {measured.fp32_difference:.2e}")
    if measured.int8 is not None:
        say(
            f"int8 vs PyTorch fp32 on {measured.int8.inputs} other LR patches of the calibration "
            f"images: max |difference| {measured.int8.max_difference:.3g}, "
            f"PSNR {measured.int8.psnr:.2f} dB"
        )


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
    check_quantize(cfg)
    module = load_module(cfg).eval()
    clip = check_clip_export(cfg, module)
    frames = None if clip is None else clip.frames
    path = target_path(cfg, module)
    weights = "EMA" if module.ema is not None else "raw"
    if cfg.format == "safetensors":
        export_safetensors(module, path)
    elif cfg.get("quantize"):
        settings = QuantizeSettings(cfg.calibration_method, tuple(cfg.quantize_keep_float))
        calibration = calibration_settings(cfg, module.scale)
        report_int8(
            export_int8_onnx(
                module, path, calibration, settings, cfg.opset, cfg.sample_size, cfg.verify
            )
        )
    elif cfg.verify:
        worst = export_verified_onnx(
            module, path, opset=cfg.opset, sample_size=cfg.sample_size, frames=frames
        )
        on = "" if clip is None else f" on clips of {clip.frames} frames"
        say(f"onnxruntime vs PyTorch{on}: max |difference| {worst:.2e}")
    else:
        export_onnx(module, path, opset=cfg.opset, sample_size=cfg.sample_size, frames=frames)
    size_mb = path.stat().st_size / 2**20
    kind = f"{cfg.format} {cfg.quantize}" if cfg.get("quantize") else cfg.format
    say(
        f"wrote {path} ({kind}, {type(module.net).__name__} x{module.scale}, "
        f"{weights} weights, {size_mb:.1f} MB{clip_note(clip)})"
    )
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_or_explain(lambda: export(cfg))


if __name__ == "__main__":
    sys.argv = quote_overrides(sys.argv)
    main()
