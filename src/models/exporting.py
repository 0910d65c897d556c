"""Exporting an SRModule's inference network: ONNX and safetensors.

Both take the weights inference uses (the EMA copy when the module has one). The ONNX graph is
:meth:`SRModule.run_net` on those weights, so a network trained on 0..255 values
(``value_range=255``) is wrapped the same way as in validation and eval: the file maps [0, 1]
RGB to [0, 1] RGB. Tiling and self-ensemble stay outside the graph: ``src.predict`` applies them
around onnxruntime through the same :func:`src.ops.inference.upscale`.

ONNX export uses ``torch.onnx.export(dynamo=True)`` (needs ``onnxscript``) at opset 18 by default,
the lowest that exporter writes natively; batch, height and width are dynamic axes. Opsets from 18
to the newest the installed ``onnx`` knows are written as asked. Lower ones are refused: the
exporter converts down only where every operator allows and otherwise keeps 18 without a word
(measured with torch 2.13: EDSR converts to 16 and 17, RLFN, RFDN and SPAN stay at 18), and the
older TorchScript exporter (deprecated) fails on RLFN, RFDN and SPAN. The opset of the written
file is checked against the one asked for. The file carries ``srlab.*`` metadata: scale, model
config (JSON), which weights, and the working memory per LR pixel measured by the tile probe (for
``tile=auto`` under onnxruntime).

Video networks (``NetworkTraits.frames``) export with clips (N, T, C, H, W) in: N, H and W
dynamic, T fixed at trace time (the recurrent networks' Python loops over frames unroll into the
graph), chosen by ``frames`` for a recurrent network (default :data:`DEFAULT_CLIP_FRAMES`, at
least the network's ``min_frames``) and the window itself for a window network (EDVR: T in, the
centre frame out). The file's ``srlab.frames``, ``srlab.num_frames`` and
``srlab.window_position`` say so (:mod:`src.models.onnx_runtime`), and the parity check runs
clips of that T.

Tracing and the parity check run in fp32 with autocast off (:func:`fp32_scoring`), whatever
context calls them, so the graph holds no bf16 casts and the check compares fp32 with fp32. With
``verify``, :func:`export_verified_onnx` checks the file before it takes its final name: a graph
that fails leaves an earlier file of that name as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from src.archs.base import frames_of
from src.models.onnx_runtime import (
    META_BYTES_PER_PIXEL,
    META_FRAMES,
    META_MODEL_CONFIG,
    META_NUM_FRAMES,
    META_SCALE,
    META_WINDOW_POSITION,
    OnnxNetwork,
)
from src.models.sr_module import SRModule
from src.ops.inference import input_channels, measure_bytes_per_lr_pixel
from src.utils.choices import SINGLE, WINDOW
from src.utils.errors import UserError
from src.utils.files import atomic_path
from src.utils.precision import fp32_scoring

# The opset torch's dynamo exporter implements its operators in (its TORCHLIB_OPSET).
DEFAULT_OPSET = MIN_OPSET = 18
CPU = torch.device("cpu")
INPUT_NAME, OUTPUT_NAME = "lr", "sr"
# Loggers of the exporter that report every optimisation pass at INFO (Hydra logs INFO).
NOISY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo")
# Input sizes the ONNX file is checked at (two, to show the height and width axes are dynamic);
# a video network's file is checked on clips of its T frames at the same sizes.
VERIFY_SHAPES = ((1, 3, 40, 48), (1, 3, 29, 53))
# A recurrent network's exported clip length without ``frames``: Vimeo-90K's septuplets.
DEFAULT_CLIP_FRAMES = 7
# The batch traced: torch.export fixes an axis whose sample size is 1 (its 0/1 specialisation),
# which kept a batch of 1 inside EDVR's and IconVSR's reshapes while the input said "any".
TRACE_BATCH = 2
# Outputs are in [0, 1]; float32 graphs agree to about 1e-6, a graph fixed at the traced size
# is off by tenths.
PARITY_TOLERANCE = 1e-3


class ExportError(UserError):
    """The model cannot be exported as asked (a missing package, an unsupported operator)."""


@dataclass(frozen=True)
class ClipShape:
    """How an exported video network takes time: ``kind`` (``window`` or ``sequence``), the
    frames T of every call, and for a window the position of the frame it restores."""

    kind: str
    frames: int
    position: int = 0

    def metadata(self) -> dict[str, str]:
        return {
            META_FRAMES: self.kind,
            META_NUM_FRAMES: str(self.frames),
            META_WINDOW_POSITION: str(self.position),
        }


def clip_shape(net: nn.Module, frames: int | None = None) -> ClipShape | None:
    """The clips ``net`` is exported for (None: an image network): ``frames`` for a recurrent
    network (default :data:`DEFAULT_CLIP_FRAMES`, raised to its ``min_frames``), its window for a
    window network; a ``frames`` the network cannot take is refused naming it."""
    kind, window, position = frames_of(net)
    name = type(net).__name__
    if kind == SINGLE:
        if frames is not None:
            raise ExportError(
                f"frames={frames} sets the clip length of a video network; {name} takes images: "
                "drop frames"
            )
        return None
    if kind == WINDOW:
        if frames is not None and frames != window:
            raise ExportError(
                f"frames={frames}: {name} takes windows of exactly {window} frames (its "
                f"num_frames) and restores frame {position}; drop frames or give frames={window}"
            )
        return ClipShape(kind, window, position)
    least = int(getattr(net, "min_frames", 1))
    count = max(DEFAULT_CLIP_FRAMES, least) if frames is None else frames
    if count < least:
        raise ExportError(
            f"frames={frames}: {name} takes clips of at least {least} frames; give frames={least} "
            "or more"
        )
    return ClipShape(kind, count)


def sample_input(net: nn.Module, clip: ClipShape | None, size: int) -> torch.Tensor:
    """The traced input: images (:data:`TRACE_BATCH`, C, size, size) or clips
    (:data:`TRACE_BATCH`, T, C, size, size)."""
    channels = input_channels(net)
    if clip is None:
        return torch.rand(TRACE_BATCH, channels, size, size)
    return torch.rand(TRACE_BATCH, clip.frames, channels, size, size)


def verify_shapes(network: OnnxNetwork) -> list[tuple[int, ...]]:
    """:data:`VERIFY_SHAPES` for ``network``'s input: its channels and, for clips, its T."""
    if not network.is_video:
        return [(n, network.channels, h, w) for n, _, h, w in VERIFY_SHAPES]
    frames = network.num_frames or DEFAULT_CLIP_FRAMES
    return [(n, frames, network.channels, h, w) for n, _, h, w in VERIFY_SHAPES]


class InferenceGraph(nn.Module):
    """The module's inference network behind :meth:`SRModule.run_net`, as one exportable module.

    Holding ``run_net`` as a plain attribute keeps the rest of the SRModule (loss, metrics) out of
    the exported graph.
    """

    def __init__(self, module: SRModule):
        super().__init__()
        self.net = module.inference_net
        self.run_net = module.run_net

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.run_net(lr, self.net)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep the exporter's pass-by-pass logging and deprecation warnings off the terminal."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)  # dynamo's tracing notes
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def root_message(error: BaseException) -> str:
    """The first line of the innermost cause of ``error``: what actually went wrong."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def describe(module: SRModule, model_config: dict[str, Any] | None) -> dict[str, str]:
    """The ``srlab.*`` metadata both formats carry."""
    config = dict(model_config or module.model_config or {})
    config["pretrained"] = None  # the weights are in the exported file
    config["pretrained_parts"] = {}
    return {
        META_SCALE: str(module.scale),
        META_MODEL_CONFIG: json.dumps(config, sort_keys=True),
        "srlab.weights": "ema" if module.ema is not None else "raw",
        "srlab.network": type(module.net).__name__,
    }


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter cannot write as asked (see the module docstring)."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ExportError(
            "ONNX export needs onnx and onnxscript: pip install -e '.[onnx]'"
        ) from None
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        why = (
            f"below {MIN_OPSET} it converts only some networks and keeps {MIN_OPSET} for the others"
            if opset < MIN_OPSET
            else f"{newest} is the newest the installed onnx {onnx.__version__} knows"
        )
        raise ExportError(
            f"opset={opset}: torch's ONNX exporter writes opsets {MIN_OPSET} to {newest}; {why}"
        )


def export_failure(net: nn.Module, clip: ClipShape | None, error: BaseException) -> str:
    """The one line for an export the exporter refused: its innermost cause and what the graph
    must allow."""
    failed = f"ONNX export of {type(net).__name__} failed: {root_message(error)}"
    if clip is None:
        needs = (
            "The graph must not depend on concrete input sizes (networks that resize with the "
            "MATLAB-exact imresize cannot)"
        )
    else:
        needs = (
            f"It was traced on clips (N, {clip.frames}, C, H, W), N, H and W dynamic and the "
            f"{clip.frames} frames unrolled: no step may depend on concrete sizes, nor branch on "
            "pixel values outside torch.cond"
        )
    return f"{failed}. {needs}; format=safetensors works for every network"


def onnx_program(
    module: SRModule,
    model_config: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    sample_size: int = 64,
    frames: int | None = None,
) -> tuple[Any, InferenceGraph]:
    """The exporter's program of ``module``'s inference graph in fp32 (its ``srlab.*`` metadata
    set), and that graph; ``frames``: a recurrent video network's clip length
    (:func:`clip_shape`)."""
    check_opset(opset)
    module.eval()
    clip = clip_shape(module.net, frames)
    graph = InferenceGraph(module).float().eval()
    sample = sample_input(module.net, clip, sample_size)
    dynamic = torch.export.Dim.DYNAMIC
    # Batch, height and width; a clip's T (axis 1) stays the traced one.
    axes = (0, 3, 4) if clip is not None else (0, 2, 3)
    with torch.no_grad(), fp32_scoring(CPU), quiet_exporter():
        try:
            program = torch.onnx.export(
                graph,
                (sample,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"lr": dict.fromkeys(axes, dynamic)},
                opset_version=opset,
                verbose=False,
            )
        except Exception as error:  # the exporter's own error types are private
            raise ExportError(export_failure(module.net, clip, error)) from error
        per_pixel = measure_bytes_per_lr_pixel(graph, sample[:1])  # per image or clip
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    written = program.model.opset_imports.get("")
    if written != opset:
        raise ExportError(f"opset={opset}: the exporter wrote opset {written} instead")
    metadata = {
        **describe(module, model_config),
        META_BYTES_PER_PIXEL: f"{per_pixel:.1f}",
        "srlab.opset": str(opset),
        **(clip.metadata() if clip is not None else {}),
    }
    for key, value in metadata.items():
        program.model.metadata_props[key] = value
    return program, graph


def export_onnx(
    module: SRModule,
    path: Path,
    model_config: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    sample_size: int = 64,
    frames: int | None = None,
) -> InferenceGraph:
    """Write ``module``'s inference graph to ``path`` (atomically); returns the exported graph."""
    program, graph = onnx_program(module, model_config, opset, sample_size, frames)
    with atomic_path(path) as temporary:
        program.save(temporary, external_data=False)
    return graph


def export_verified_onnx(
    module: SRModule,
    path: Path,
    opset: int = DEFAULT_OPSET,
    sample_size: int = 64,
    frames: int | None = None,
) -> float:
    """:func:`export_onnx`, the file checked by :func:`check_onnx_parity` before it takes the
    name ``path``; returns the largest difference from PyTorch."""
    with atomic_path(path) as temporary:
        graph = export_onnx(module, temporary, None, opset, sample_size, frames)
        return check_onnx_parity(temporary, graph, type(module.net).__name__)


@torch.no_grad()
def onnx_max_difference(path: Path, graph: nn.Module) -> float:
    """Largest absolute difference between onnxruntime and PyTorch (``graph``, float32 weights,
    run in fp32 with autocast off) over :func:`verify_shapes` (clips of a video network's T)."""
    network = OnnxNetwork(path)
    worst = 0.0
    for shape in verify_shapes(network):
        lr = torch.rand(shape, dtype=torch.float32)
        with fp32_scoring(CPU):
            expected = graph(lr)
        got = network(lr)
        if got.shape != expected.shape:
            raise ExportError(
                f"{path}: output shape {tuple(got.shape)} for input {shape}, "
                f"PyTorch gives {tuple(expected.shape)}"
            )
        worst = max(worst, float(np.abs((got - expected).numpy()).max()))
    return worst


def check_onnx_parity(path: Path, graph: nn.Module, network_name: str) -> float:
    """:func:`onnx_max_difference`, refusing (and removing) a file that disagrees with PyTorch:
    the exporter fixed some size-dependent step (adaptive pooling, say) at the traced size."""
    worst = onnx_max_difference(path, graph)
    if worst > PARITY_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"ONNX export of {network_name} does not hold at other input sizes (max |difference| "
            f"{worst:.2g} from PyTorch at {', '.join(f'{s[2]}x{s[3]}' for s in VERIFY_SHAPES)}): "
            f"some step was fixed at the traced size; export format=safetensors instead"
        )
    return worst


def export_safetensors(
    module: SRModule, path: Path, model_config: dict[str, Any] | None = None
) -> None:
    """Write the inference weights to ``path`` (atomically), the model config as metadata.

    The keys are the network's own, so ``model=<name> model.pretrained=<file>`` loads them.
    """
    from safetensors.torch import save_file

    state = {
        key: value.detach().to("cpu").contiguous().clone()
        for key, value in module.inference_net.state_dict().items()
    }
    metadata = {"format": "pt", **describe(module, model_config)}
    with atomic_path(path) as temporary:
        save_file(state, str(temporary), metadata=metadata)
