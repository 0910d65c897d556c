"""Running an exported ONNX model with onnxruntime, called like a torch network.

:class:`OnnxNetwork` maps an (N, 3, H, W) float tensor in [0, 1] to its SR output, so it slots
into :func:`src.ops.inference.upscale` (tiling, self-ensemble) exactly where a torch network
goes. ``src.export`` writes the scale and the probe-measured working memory per LR pixel into
the file's metadata (``srlab.*`` keys); files from elsewhere work too, their scale measured with
one small run.

A video network's file takes clips (N, T, 3, H, W) of a fixed T (``src.export frames=``): its
metadata says how it uses time (``srlab.frames``: ``window`` or ``sequence``, as
:class:`src.archs.base.NetworkTraits`), T (``srlab.num_frames``) and, for a window, the frame it
restores (``srlab.window_position``). :class:`OnnxGraph` declares the same, so an SRModule runs it
through the clip path (:mod:`src.ops.video_inference`) as it runs the torch network, every call
with exactly T frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from src.archs.base import NetworkTraits
from src.models.checkpoint import CheckpointError
from src.utils.choices import SEQUENCE, SINGLE, WINDOW

ONNX_SUFFIX = ".onnx"
META_SCALE = "srlab.scale"
META_BYTES_PER_PIXEL = "srlab.bytes_per_lr_pixel"
META_MODEL_CONFIG = "srlab.model_config"
META_FRAMES = "srlab.frames"
META_NUM_FRAMES = "srlab.num_frames"
META_WINDOW_POSITION = "srlab.window_position"
SCALE_PROBE = 16
# Input ranks: an image batch (N, C, H, W) and a clip batch (N, T, C, H, W).
IMAGE_RANK, CLIP_RANK = 4, 5


def is_onnx(path: str | Path | None) -> bool:
    return path is not None and Path(str(path)).suffix.lower() == ONNX_SUFFIX


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CheckpointError(
            "running an ONNX model needs onnxruntime: pip install -e '.[onnx]'"
        ) from None
    return onnxruntime


class OnnxNetwork:
    """An ONNX super-resolution model in an onnxruntime session (CPU, or CUDA if available)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = _onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model not found: {self.path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=ort.get_available_providers()
            )
        except Exception as error:  # onnxruntime raises its own types for a bad file
            raise CheckpointError(f"cannot load {self.path} as an ONNX model: {error}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise CheckpointError(f"{self.path}: expected one input and one output")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        input_shape, output_rank = list(inputs[0].shape), len(outputs[0].shape)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.frames, self.num_frames, self.window_position = self._time_use(
            input_shape, output_rank
        )
        channel_axis = 2 if len(input_shape) == CLIP_RANK else 1
        stated_channels = input_shape[channel_axis] if len(input_shape) > channel_axis else None
        # RGB unless the graph fixes another channel count (a single-channel network's).
        self.channels = stated_channels if isinstance(stated_channels, int) else 3
        stated = self.metadata.get(META_BYTES_PER_PIXEL)
        # Read by src.ops.inference for tile="auto": torch cannot see inside onnxruntime.
        self.bytes_per_lr_pixel = float(stated) if stated else None
        scale = self.metadata.get(META_SCALE)
        self.scale = int(scale) if scale else self._measure_scale()

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        if self.num_frames is not None and lr.dim() == CLIP_RANK and lr.shape[1] != self.num_frames:
            raise CheckpointError(
                f"{self.path.name} takes clips of exactly {self.num_frames} frames (its export's "
                f"frames), got {lr.shape[1]}"
            )
        feed = {self.input_name: lr.detach().to("cpu", torch.float32).numpy()}
        (sr,) = self.session.run([self.output_name], feed)
        return torch.from_numpy(np.asarray(sr)).to(lr.device)

    @property
    def is_video(self) -> bool:
        return self.frames != SINGLE

    def _time_use(self, input_shape: list[Any], output_rank: int) -> tuple[str, int | None, int]:
        """(frames kind, frames per call or None where the graph leaves T free, restored frame):
        from ``src.export``'s metadata, else from the input and output ranks."""
        stated = self.metadata.get(META_FRAMES)
        if stated is None and len(input_shape) != CLIP_RANK:
            return SINGLE, None, 0
        kind = stated or (WINDOW if output_rank == IMAGE_RANK else SEQUENCE)
        if kind not in (SINGLE, WINDOW, SEQUENCE):
            raise CheckpointError(f"{self.path}: unknown {META_FRAMES}={kind!r} in its metadata")
        if kind == SINGLE:
            return SINGLE, None, 0
        count = self.metadata.get(META_NUM_FRAMES) or input_shape[1]
        frames = int(count) if isinstance(count, int) or str(count).isdigit() else None
        if kind == WINDOW and frames is None:
            raise CheckpointError(f"{self.path}: a window network's file must fix its frame count")
        position = self.metadata.get(META_WINDOW_POSITION)
        return kind, frames, int(position) if position else (frames or 1) // 2

    def _measure_scale(self) -> int:
        size = (self.num_frames or 1, self.channels) if self.is_video else (self.channels,)
        lr = torch.rand(1, *size, SCALE_PROBE, SCALE_PROBE)
        height = self(lr).shape[-2]
        if height % SCALE_PROBE:
            raise CheckpointError(f"{self.path}: output size is not a whole multiple of the input")
        return height // SCALE_PROBE


class OnnxGraph(nn.Module):
    """An :class:`OnnxNetwork` as a torch module without parameters: the network an SRModule
    runs when ``src.eval`` scores an ONNX file (fp32 or int8) through validation. The graph maps
    [0, 1] to [0, 1] (``value_range`` is inside it), so the module runs with value_range 1."""

    def __init__(self, network: OnnxNetwork):
        super().__init__()
        self.network = network
        self.image_channels = network.channels  # read by src.ops.inference.input_channels
        self.bytes_per_lr_pixel = network.bytes_per_lr_pixel
        self.display_name = f"{network.path.name} (onnxruntime)"
        if network.is_video:
            # Read by src.archs.base.frames_of and the SRModule's clip path, as a torch video
            # network's declaration and attributes are.
            self.traits = NetworkTraits(
                scales=(network.scale,),
                channels=(network.channels,),
                frames=network.frames,
                window=network.num_frames or 1,
            )
            self.num_frames = network.num_frames or 1
            self.center_frame = network.window_position
            if network.frames == SEQUENCE and network.num_frames is not None:
                self.fixed_frames = network.num_frames

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.network(lr)


def onnx_file(cfg: Any) -> str | None:
    """The ONNX file a command runs: ``onnx_path``, or a ``ckpt_path`` ending in .onnx."""
    path = cfg.get("onnx_path") or (cfg.ckpt_path if is_onnx(cfg.get("ckpt_path")) else None)
    return str(path) if path else None
