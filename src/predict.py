"""``python -m src.predict``: upscale images and videos with a checkpoint, a model or ONNX.

    python -m src.predict ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt input=photos/
    python -m src.predict model=imdn scale=4 model.pretrained=IMDN_x4.pth input='shots/*.jpg' \
        output=sr/ tile=256 self_ensemble=true
    python -m src.predict onnx_path=edsr_x2.onnx input=clip.mp4 output=sr/

Every input goes through the shared inference path (:func:`src.ops.inference.upscale`, the one
validation and eval use). With a video network (BasicVSR, EDVR, ...) a video file, or a folder of
frames, is one clip, streamed through the module's clip path
(:func:`src.ops.video_inference.stream_upscale`) in chunks of ``clip_length`` frames with
``clip_overlap`` frames of context, so a film never sits in memory whole:

    python -m src.predict model=basicvsr model.pretrained=BasicVSR_REDS4.pth input=film.mkv \
        video_codec=libx265 video_quality=20
    python -m src.predict model=basicvsr model.pretrained=... input=frames/ output=sr/  # sr/frames/

A file that cannot be read is reported and the others still run; the exit status is 1 when any
failed, 2 for an error that stops the run (bad option, no inputs).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from src.archs.base import traits_of
from src.io.media import available_memory, find_inputs, remove_stale_partials
from src.io.predict_io import (
    ClipUpscaler,
    Report,
    Upscaler,
    VideoSettings,
    check_video_settings,
    find_clip_inputs,
    listing,
    upscale_files,
)
from src.models.loading import load_module, load_onnx_module
from src.models.onnx_runtime import OnnxNetwork, is_onnx
from src.models.sr_module import SRModule
from src.ops.inference import AUTO, input_channels, upscale
from src.ops.video_inference import fixed_chunk_frames
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.cli import quote_overrides, run_or_explain
from src.utils.errors import UserError
from src.utils.precision import cpu_has_native_bf16
from src.utils.runtime import say
from src.utils.schema import check_config, check_writable_folder

EXIT_SOME_FAILED = 1


# The top-level clip options, handed to a checkpoint's module as the tile options are.
@dataclass(frozen=True)
class Network:
    """What runs the inputs: ``upscaler`` for one image, ``clip`` for a video network's clips
    (None: frame by frame), the scale, a name for the opening line and the input channels."""

    upscaler: Upscaler
    scale: int
    name: str
    channels: int
    clip: ClipUpscaler | None = None
    # Frames of every call of a recurrent network's ONNX file (its fixed clip length).
    fixed_frames: int | None = None


def video_settings(cfg: DictConfig) -> VideoSettings:
    """``video_codec`` and ``video_quality`` (null: the container's codec, its default CRF)."""
    return VideoSettings(codec=cfg.get("video_codec"), quality=cfg.get("video_quality"))


def check_options(cfg: DictConfig) -> None:
    """Refuse settings that would fail on every file, and an output that cannot be written,
    before any work."""
    check_config(cfg, "predict")
    pick_device(cfg.device)
    if not cfg.get("input"):
        raise UserError("give input=<file|folder|glob>")
    check_video_settings(video_settings(cfg))
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


def onnx_network(cfg: DictConfig, path: str) -> Network:
    """The shared inference path around an onnxruntime session (image networks: clips run
    frame by frame; a video network's file: :func:`onnx_video_network`)."""
    network = OnnxNetwork(path)
    if network.is_video:
        return onnx_video_network(cfg, network)
    run = partial(
        upscale,
        network,
        scale=network.scale,
        tile=cfg.tile,
        tile_overlap=cfg.tile_overlap,
        self_ensemble=cfg.self_ensemble,
        tile_memory_mb=cfg.tile_memory_mb,
    )
    return Network(run, network.scale, f"{Path(path).name} (onnxruntime)", network.channels)


def onnx_video_network(cfg: DictConfig, network: OnnxNetwork) -> Network:
    """A video network's ONNX file in an SRModule (:func:`load_onnx_module`, as ``src.eval``
    runs one): videos and frame folders stream through its clip path as with the torch network,
    each call on the file's fixed number of frames."""
    module = load_onnx_module(network, cfg).eval()
    cpu = torch.device("cpu")

    def run(lr: torch.Tensor) -> torch.Tensor:
        return module(lr.to(cpu))

    fixed = getattr(module.net, "fixed_frames", None)
    name = f"{network.path.name} (onnxruntime, {network.frames} network)"
    clip = clip_upscaler(module, cpu)
    return Network(run, network.scale, name, network.channels, clip, fixed)


def clip_upscaler(module: SRModule, device: torch.device) -> ClipUpscaler:
    """The module's clip path over frames as they come (:meth:`SRModule.stream`)."""

    def run(frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        return module.stream(frame.to(device) for frame in frames)

    return run


def bf16_note(net: nn.Module, device: torch.device) -> str:
    """What running ``net`` under bf16 autocast on ``device`` means for its output and speed."""
    name = type(net).__name__
    traits = traits_of(net)
    notes = [f"{name} runs under bf16 autocast (precision=bf16): outputs differ from fp32's"]
    if traits is not None and not traits.bf16_safe:
        notes.append(f"{name} declares bf16 unsafe, so they may differ visibly")
    if device.type == "cpu" and not cpu_has_native_bf16():
        notes.append("this CPU has no bf16 instructions, so bf16 is slower than fp32 here")
    return "; ".join(notes)


def torch_network(cfg: DictConfig) -> Network:
    """SRModule.forward (the shared inference path, in fp32 with autocast off as eval runs it)
    on the chosen device; a video network's clip path beside it."""
    device = pick_device(cfg.device)
    module = load_module(cfg).eval().to(device)
    module.precision = cfg.precision
    if cfg.precision == "bf16":
        say(bf16_note(module.net, device))

    def run(lr: torch.Tensor) -> torch.Tensor:
        return module(lr.to(device))

    clip = clip_upscaler(module, device) if module.is_video_network else None
    name = type(module.net).__name__
    return Network(run, module.scale, name, input_channels(module.net), clip)


def build_network(cfg: DictConfig) -> Network:
    """The network an onnx_path (or a .onnx ckpt_path) names, else the torch module."""
    onnx_path = cfg.get("onnx_path") or (cfg.ckpt_path if is_onnx(cfg.get("ckpt_path")) else None)
    if onnx_path and cfg.precision != "fp32":
        raise UserError(
            f"precision={cfg.precision} is for torch networks; {onnx_path} runs in the precision "
            "its graph was exported in (see src.export quantize=int8): drop precision"
        )
    return onnx_network(cfg, onnx_path) if onnx_path else torch_network(cfg)


def describe(cfg: DictConfig, network: Network) -> str:
    """How the inputs will be run, for the opening line."""
    tiling = f"tile={cfg.tile} tile_overlap={cfg.tile_overlap}" if cfg.tile else "whole images"
    if cfg.tile == AUTO:
        tiling += f" within {cfg.tile_memory_mb} MB"
    if network.clip is not None:
        length = cfg.get("clip_length")
        chunks = (
            f"chunks of {length} frames with {cfg.clip_overlap} of context"
            if length
            else "whole clips"
        )
        if network.fixed_frames is not None:
            kept, context = fixed_chunk_frames(network.fixed_frames, cfg.clip_overlap)
            chunks = (
                f"calls of exactly {network.fixed_frames} frames (the ONNX file's), {kept} kept "
                f"of each with {context} of context"
            )
        tiling = f"videos and frame folders as clips in {chunks}, {tiling}"
    ensemble = ", x8 self-ensemble" if cfg.self_ensemble else ""
    kind = ", single-channel" if network.channels == 1 else ""
    return f"{network.name} x{network.scale} ({tiling}{ensemble}{kind})"


def predict(cfg: DictConfig) -> Report:
    """Upscale every input into ``output`` and print what happened."""
    check_options(cfg)
    # Before loading, so that an input naming nothing is said at once; frame folders are clips
    # for a video network only.
    clip_inputs = find_clip_inputs(str(cfg.input))
    network = build_network(cfg)
    inputs = clip_inputs if network.clip is not None else find_inputs(str(cfg.input))
    output_dir = Path(cfg.output)
    count = f"{len(inputs)} input{'s' * (len(inputs) != 1)}"
    say(f"{describe(cfg, network)}: {count} -> {output_dir}")
    removed = remove_stale_partials(output_dir)
    if removed:
        say(
            f"removed {len(removed)} unfinished file(s) an earlier, killed run left in {output_dir}"
        )
    report = upscale_files(
        network.upscaler,
        inputs,
        output_dir,
        network.scale,
        cfg.output_format,
        cfg.overwrite,
        cfg.progress,
        memory_budget(cfg.memory_mb),
        network.channels,
        video_settings(cfg),
        network.clip,
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
