"""Running an exported ONNX model with onnxruntime, called like a torch network.

:class:`OnnxNetwork` maps an (N, 3, H, W) float tensor in [0, 1] to its SR output, so it slots
into :func:`src.ops.inference.upscale` (tiling, self-ensemble) exactly where a torch network
goes. ``src.export`` writes the scale and the probe-measured working memory per LR pixel into
the file's metadata (``srlab.*`` keys); files from elsewhere work too, their scale measured with
one small run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from src.models.checkpoint import CheckpointError

ONNX_SUFFIX = ".onnx"
META_SCALE = "srlab.scale"
META_BYTES_PER_PIXEL = "srlab.bytes_per_lr_pixel"
META_MODEL_CONFIG = "srlab.model_config"
SCALE_PROBE = 16


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
        stated_channels = inputs[0].shape[1] if len(inputs[0].shape) == 4 else None
        # RGB unless the graph fixes another channel count (a single-channel network's).
        self.channels = stated_channels if isinstance(stated_channels, int) else 3
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        stated = self.metadata.get(META_BYTES_PER_PIXEL)
        # Read by src.ops.inference for tile="auto": torch cannot see inside onnxruntime.
        self.bytes_per_lr_pixel = float(stated) if stated else None
        scale = self.metadata.get(META_SCALE)
        self.scale = int(scale) if scale else self._measure_scale()

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: lr.detach().to("cpu", torch.float32).numpy()}
        (sr,) = self.session.run([self.output_name], feed)
        return torch.from_numpy(np.asarray(sr)).to(lr.device)

    def _measure_scale(self) -> int:
        lr = torch.rand(1, self.channels, SCALE_PROBE, SCALE_PROBE)
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

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.network(lr)


def onnx_file(cfg: Any) -> str | None:
    """The ONNX file a command runs: ``onnx_path``, or a ``ckpt_path`` ending in .onnx."""
    path = cfg.get("onnx_path") or (cfg.ckpt_path if is_onnx(cfg.get("ckpt_path")) else None)
    return str(path) if path else None
