"""Post-training static int8 quantisation of an exported ONNX SR network (ONNX Runtime's quantiser).

``python -m src.export ... format=onnx quantize=int8 calibration=<folder>`` exports the fp32 graph
(:mod:`src.models.exporting`) to a temporary file and hands it to
``onnxruntime.quantization.quantize_static``: QDQ format (QuantizeLinear/DequantizeLinear pairs
around each quantised operator, which onnxruntime's CPU provider fuses into integer kernels),
int8 weights per output channel (symmetric), uint8 activations per tensor (asymmetric) -- the
U8S8 pairing onnxruntime recommends for x86 CPUs with VNNI; signed activations (S8S8) ran RLFN x2
2.4x slower here. The activation ranges come from calibration: the graph is run on LR patches
cut from a folder of images (:func:`calibration_patches`), and each tensor's range is its MinMax
or its Percentile range (``calibration_method``). Entropy calibration is not offered:
``quantize_static`` passes it no bin counts, and with its defaults (128 bins, 128 quantised bins)
it has no threshold to choose, so it wrote exactly MinMax's ranges.

The calibration images are HR by default (``calibration_downscale=true``): each is mod-cropped and
shrunk by the MATLAB-exact bicubic (:func:`src.ops.imresize.imresize_array`), the degradation the
network was trained and is scored on, so calibration sees the activations eval will;
``calibration_downscale=false`` takes the images as LR inputs as they are (real photographs for a
real-world network). Images and places are drawn from ``calibration_seed`` and each chosen image
is decoded once, so the same inputs give the same ranges.

Nodes named in ``keep_float`` (op types, or the network's modules by their state-dict names) stay
fp32 and read fp32 tensors (:func:`read_fp32_inputs`); see the README for what RLFN x2 needed.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from src.io.images import ImageReadError, images_in_folder, read_rgb
from src.models.exporting import (
    DEFAULT_OPSET,
    VERIFY_SHAPES,
    check_onnx_parity,
    export_onnx,
)
from src.models.onnx_runtime import OnnxNetwork
from src.models.sr_module import SRModule
from src.ops.imresize import imresize_array, modcrop
from src.utils.errors import UserError
from src.utils.files import atomic_path
from src.utils.precision import fp32_scoring

Network = Callable[[torch.Tensor], torch.Tensor]

CalibrationMethod = Literal["minmax", "percentile"]
# The most patches whose activations the calibrator holds at once (see calibration_stride).
MAX_STRIDE = 4
# Percentile calibration: the share of each tensor's values inside its range (onnxruntime's
# default).
PERCENTILE = 99.999
# LR patches (another draw of images and places than calibration's) the int8 graph is compared
# with PyTorch on.
CHECK_PATCHES = 16
META_QUANTIZATION = "srlab.quantization"
# Where torch's exporter records the module path of each node, and the network's own scope.
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
NETWORK = "net"
# How onnxruntime's quantiser names the dequantised copy of a tensor.
DEQUANTIZED_SUFFIX = "_DequantizeLinear_Output"


class QuantizationError(UserError):
    """The quantisation cannot be done as asked (no calibration images, a missing package)."""


@dataclass(frozen=True)
class CalibrationSettings:
    """Where the calibration patches come from: ``folder`` of images, ``patches`` LR patches of
    ``size`` x ``size`` pixels cut at places drawn from ``seed``; ``downscale``: the images are
    HR, shrunk by MATLAB's bicubic at 1/``scale`` (else they are LR as they stand)."""

    folder: Path
    scale: int
    patches: int = 64
    size: int = 64
    seed: int = 0
    downscale: bool = True


@dataclass(frozen=True)
class QuantizeSettings:
    """How the graph is quantised: the calibration ``method`` and what stays fp32."""

    method: CalibrationMethod = "percentile"
    keep_float: tuple[str, ...] = ()


@dataclass(frozen=True)
class Agreement:
    """How far the int8 graph's outputs are from fp32 ones on the same LR inputs."""

    max_difference: float
    psnr: float
    inputs: int


def lr_image(path: Path, scale: int, downscale: bool) -> np.ndarray:
    """The LR (H, W, 3) uint8 image a calibration file gives (see :class:`CalibrationSettings`)."""
    pixels = read_rgb(path)
    return imresize_array(modcrop(pixels, scale), 1.0 / scale) if downscale else pixels


def lr_images(
    settings: CalibrationSettings, rng: np.random.Generator, wanted: int
) -> list[np.ndarray]:
    """Up to ``wanted`` LR images of the calibration folder, taken in an order drawn from
    ``rng``, each decoded once; images smaller than a patch are passed over, and none left is
    an error. A large folder is not decoded whole."""
    files = images_in_folder(settings.folder, "calibration")
    images: list[np.ndarray] = []
    for index in rng.permutation(len(files)):
        if len(images) == wanted:
            break
        try:
            image = lr_image(files[index], settings.scale, settings.downscale)
        except ImageReadError as error:
            raise QuantizationError(f"calibration: {error}") from None
        if min(image.shape[:2]) >= settings.size:
            images.append(image)
    if not images:
        made = f"after the x{settings.scale} downscale " if settings.downscale else ""
        raise QuantizationError(
            f"calibration={settings.folder}: no image is at least {settings.size} px on each side "
            f"{made}(lower calibration_size)"
        )
    return images


def cut_patches(
    images: Sequence[np.ndarray], count: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """``count`` (N, 3, size, size) float32 patches in [0, 1], from the images in turn, each at
    a place drawn from ``rng``."""
    patches = np.empty((count, 3, size, size), dtype=np.float32)
    for index in range(count):
        image = images[index % len(images)]
        top = int(rng.integers(image.shape[0] - size + 1))
        left = int(rng.integers(image.shape[1] - size + 1))
        patch = image[top : top + size, left : left + size]
        patches[index] = patch.transpose(2, 0, 1).astype(np.float32) / 255.0
    return patches


def calibration_patches(
    settings: CalibrationSettings, count: int | None = None, seed_offset: int = 0
) -> np.ndarray:
    """``count`` (default ``settings.patches``) LR patches as :class:`CalibrationSettings`
    says; ``seed_offset``: another draw of images and places, for the export's check."""
    rng = np.random.default_rng((settings.seed, seed_offset))
    count = settings.patches if count is None else count
    return cut_patches(lr_images(settings, rng, count), count, settings.size, rng)


def _quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError:
        raise QuantizationError(
            "int8 quantisation needs onnxruntime: pip install -e '.[onnx]'"
        ) from None
    return quantization


def patch_reader(input_name: str, patches: np.ndarray) -> Any:
    """A ``CalibrationDataReader`` handing ``patches`` to the graph's input one at a time; its
    length and ``set_range`` let the quantiser calibrate on :func:`calibration_stride` patches
    at a time."""
    base = _quantization().CalibrationDataReader

    class PatchReader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.start, self.end = 0, len(patches)

        def __len__(self) -> int:
            return len(patches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end = start_index, end_index

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= self.end:
                return None
            self.start += 1
            return {input_name: patches[self.start - 1 : self.start]}

    return PatchReader()


def calibration_stride(count: int) -> int:
    """Patches per calibration pass: the calibrator holds every activation of a pass (about
    100 MB per 64 px patch for RLFN), and the passes' ranges (or histograms) are merged. The
    quantiser needs a divisor of the patch count. (Its ``CalibMaxIntermediateOutputs`` is no
    help: in onnxruntime 1.32 it drops the activations it holds instead of folding them in.)"""
    return math.gcd(count, MAX_STRIDE)


def qualified_name(node: Any) -> str:
    """The node's place in the network, in the state dict's names: ``block_1.esa.sigmoid``,
    ``upsampler.0.conv2d_56``; ``net.add_650`` for an op of the network itself (outside its
    modules: RLFN's global skip), ``div`` for the value-range division around the network. Read
    from the scopes torch's exporter records; a node without them (a shape computation) is known
    by its ONNX name."""
    scopes = [p.value for p in node.metadata_props if p.key == NAME_SCOPES]
    path = [part for part in ast.literal_eval(scopes[0]) if part] if scopes else []
    if not path:
        return str(node.name)
    module = path[-2] if len(path) > 1 else ""
    if module and module != NETWORK and not module.startswith(f"{NETWORK}."):
        return str(node.name)  # the exporter's own helpers (symbolic sizes)
    module = module.removeprefix(f"{NETWORK}.")
    return f"{module}.{path[-1]}" if module else str(path[-1])


def names_entry(node: Any, entry: str) -> bool:
    """Whether a ``keep_float`` entry names ``node``: its op type (``DepthToSpace``), a module it
    is in (``upsampler``, ``block_1.esa``; ``*`` matches any part of a name: ``block_*.esa``),
    or ``net``: the network's own ops outside its modules."""
    name = qualified_name(node)
    return node.op_type == entry or fnmatchcase(name, entry) or fnmatchcase(name, f"{entry}.*")


def kept_float_nodes(model: Any, keep_float: Sequence[str]) -> list[str]:
    """The names of the nodes of ``model`` that ``keep_float`` names (see :func:`names_entry`);
    an entry that names none is refused, listing what there is."""
    nodes = list(model.graph.node)
    unknown = [entry for entry in keep_float if not any(names_entry(n, entry) for n in nodes)]
    if unknown:
        modules = sorted({qualified_name(n).split(".")[0] for n in nodes} - {n.name for n in nodes})
        op_types = sorted({str(n.op_type) for n in nodes})
        raise QuantizationError(
            f"quantize_keep_float: {', '.join(unknown)} names no node of the graph; give op "
            f"types ({', '.join(op_types)}) or the network's modules and ops "
            f"({', '.join(modules)}; deeper ones as block_1.esa)"
        )
    return [str(n.name) for n in nodes if any(names_entry(n, entry) for entry in keep_float)]


def read_fp32_inputs(model: Any, kept: Sequence[str], original: Any) -> None:
    """Give each fp32 (``kept``) node the unquantised tensors: onnxruntime's quantiser puts one
    QuantizeLinear/DequantizeLinear pair on a tensor for all its readers, so an fp32 node that
    shares an input with an int8 one (a skip connection beside a convolution) would still read
    it rounded to 8 bits; and a constant it shares (the value range, 255) is stored quantised.
    Those inputs go back to the tensor before the pair, or to the constant of the ``original``
    fp32 model; pairs and constants nothing reads any more are removed."""
    producers = {output: node for node in model.graph.node for output in node.output}
    constants = {tensor.name: tensor for tensor in original.graph.initializer}
    present = {tensor.name for tensor in model.graph.initializer}
    wanted = set(kept)
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        for index, name in enumerate(node.input):
            dequantize = producers.get(name)
            if dequantize is None or dequantize.op_type != "DequantizeLinear":
                continue
            quantize = producers.get(dequantize.input[0])
            constant = constants.get(name.removesuffix(DEQUANTIZED_SUFFIX))
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[index] = quantize.input[0]
            elif quantize is None and constant is not None:
                if constant.name not in present:
                    model.graph.initializer.append(constant)
                    present.add(constant.name)
                node.input[index] = constant.name
    remove_unread_qdq(model)


def remove_unread_qdq(model: Any) -> None:
    """Drop QuantizeLinear/DequantizeLinear nodes whose outputs nothing reads, then the
    constants (scales, zero points) nothing reads."""
    while True:
        read = {name for node in model.graph.node for name in node.input}
        read |= {output.name for output in model.graph.output}
        unread = [
            node
            for node in model.graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not any(output in read for output in node.output)
        ]
        if not unread:
            break
        for node in unread:
            model.graph.node.remove(node)
    for constant in [c for c in model.graph.initializer if c.name not in read]:
        model.graph.initializer.remove(constant)


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Keep the quantiser's prints (histogram progress) and its pre-processing advice off the
    terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
            yield
    finally:
        root.setLevel(level)


def quantize_int8(
    fp32_path: Path, int8_path: Path, patches: np.ndarray, settings: QuantizeSettings
) -> None:
    """Write the int8 QDQ graph of ``fp32_path`` to ``int8_path``, its activation ranges
    calibrated on ``patches``; the ``srlab.*`` metadata carried over, with a line saying how it
    was quantised."""
    import onnx

    quantization = _quantization()
    model = onnx.load(str(fp32_path))
    kept = kept_float_nodes(model, settings.keep_float)
    methods = {
        "minmax": quantization.CalibrationMethod.MinMax,
        "percentile": quantization.CalibrationMethod.Percentile,
    }
    options: dict[str, Any] = {"CalibStridedMinMax": calibration_stride(len(patches))}
    if settings.method == "percentile":
        # onnxruntime's percentile ranges are symmetric unless told: half of uint8's levels
        # would go unused on the many tensors that are mostly positive (after LeakyReLU).
        options.update(CalibTensorRangeSymmetric=False, CalibPercentile=PERCENTILE)
    with quiet_quantizer():
        quantization.quantize_static(
            str(fp32_path),
            str(int8_path),
            patch_reader(str(model.graph.input[0].name), patches),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_exclude=kept,
            calibrate_method=methods[settings.method],
            extra_options=options,
        )
    quantized = onnx.load(str(int8_path))
    read_fp32_inputs(quantized, kept, model)
    describe_quantization(quantized, patches, settings, len(kept))
    onnx.save(quantized, str(int8_path))


def describe_quantization(
    model: Any, patches: np.ndarray, settings: QuantizeSettings, kept: int
) -> None:
    """Set the ``srlab.quantization`` metadata line of ``model``."""
    size = patches.shape[-1]
    kept_text = f"; fp32: {', '.join(settings.keep_float)} ({kept} nodes)" if kept else ""
    line = (
        f"int8 QDQ (uint8 activations per tensor, int8 weights per channel), {settings.method} "
        f"calibration on {len(patches)} LR patches of {size}x{size}{kept_text}"
    )
    entries = {entry.key: entry for entry in model.metadata_props}
    if META_QUANTIZATION in entries:
        entries[META_QUANTIZATION].value = line
    else:
        model.metadata_props.add(key=META_QUANTIZATION, value=line)


def psnr_of(mean_squared: float) -> float:
    """PSNR in dB of a mean squared error of [0, 1] images (inf when they are equal)."""
    return math.inf if mean_squared == 0 else -10.0 * math.log10(mean_squared)


@torch.no_grad()
def agreement(int8: Network, reference: Network, patches: np.ndarray) -> Agreement:
    """Largest difference and PSNR of ``int8``'s outputs against ``reference``'s on
    ``patches``, both clamped to [0, 1] as scoring does."""
    worst, squared, count = 0.0, 0.0, 0
    for patch in patches:
        lr = torch.from_numpy(patch[None])
        difference = int8(lr).clamp(0.0, 1.0).double() - reference(lr).clamp(0.0, 1.0).double()
        worst = max(worst, float(difference.abs().max()))
        squared += float(difference.square().sum())
        count += difference.numel()
    return Agreement(worst, psnr_of(squared / max(count, 1)), len(patches))


def check_dynamic_shapes(network: Network, reference: Network) -> None:
    """The int8 graph gives the fp32 graph's output shape at every checked input size (its
    height and width axes stayed dynamic)."""
    for shape in VERIFY_SHAPES:
        lr = torch.rand(shape)
        got, expected = network(lr).shape, reference(lr).shape
        if got != expected:
            raise QuantizationError(
                f"the int8 graph gives {tuple(got)} for input {shape}, fp32 gives {tuple(expected)}"
            )


@dataclass(frozen=True)
class Int8Export:
    """What :func:`export_int8_onnx` measured: the fp32 graph's largest difference from
    PyTorch (None without ``verify``), and the int8 graph's agreement with PyTorch."""

    fp32_difference: float | None
    int8: Agreement | None


def export_int8_onnx(
    module: SRModule,
    path: Path,
    calibration: CalibrationSettings,
    settings: QuantizeSettings,
    opset: int = DEFAULT_OPSET,
    sample_size: int = 64,
    verify: bool = True,
) -> Int8Export:
    """Export ``module``'s inference graph in fp32 to a temporary file, quantise it to int8
    into ``path`` (atomically). With ``verify``, the fp32 graph must match PyTorch (as any
    export), the int8 one must keep dynamic sizes, and its difference and PSNR against PyTorch
    fp32 are measured on :data:`CHECK_PATCHES` other LR patches (another draw of images and
    places than calibration's)."""
    patches = calibration_patches(calibration)  # first: bad calibration images fail early
    fp32_difference, measured = None, None
    with tempfile.TemporaryDirectory(prefix="srlab-int8-") as scratch:
        fp32_path = Path(scratch) / "fp32.onnx"
        graph = export_onnx(module, fp32_path, None, opset, sample_size)
        if verify:
            fp32_difference = check_onnx_parity(fp32_path, graph, type(module.net).__name__)
        with atomic_path(path) as temporary:
            quantize_int8(fp32_path, temporary, patches, settings)
            if verify:
                int8 = OnnxNetwork(temporary)
                torch_fp32 = fp32_reference(graph)
                check_dynamic_shapes(int8, torch_fp32)
                others = calibration_patches(calibration, CHECK_PATCHES, seed_offset=1)
                measured = agreement(int8, torch_fp32, others)
    return Int8Export(fp32_difference, measured)


def fp32_reference(graph: torch.nn.Module) -> Network:
    """``graph`` run as the export's check runs PyTorch: fp32, autocast off, no gradients."""

    def run(lr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), fp32_scoring(torch.device("cpu")):
            return graph(lr)

    return run
