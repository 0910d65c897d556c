"""int8 quantisation (src.models.quantization, src.export quantize=int8): the QDQ file, its
agreement with fp32, seeded calibration, fp32 nodes, src.eval/src.predict on it, bad input."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from src.eval import evaluate
from src.export import export
from src.io.images import write_image
from src.models.exporting import export_onnx
from src.models.onnx_runtime import OnnxNetwork, onnx_file
from src.models.quantization import (
    CalibrationSettings,
    QuantizationError,
    QuantizeSettings,
    agreement,
    calibration_patches,
    quantize_int8,
)
from src.models.sr_module import SRModule
from src.predict import predict
from tests.helpers import compose_config, one_error_line, run_in_process, run_module
from tests.predict_helpers import micro_module, quantize, smooth_image, write_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SCALE = 2
# Small calibration: 8 LR patches of 16 px from three smooth HR images.
CALIBRATION = ["calibration_patches=8", "calibration_size=16", "sample_size=24"]


def write_photos(folder: Path, count: int = 3, size: tuple[int, int] = (48, 56)) -> Path:
    for index in range(count):
        write_image(folder / f"p{index}.png", quantize(smooth_image(*size, 3, seed=index)))
    return folder


@dataclass
class Quantized:
    """A micro EDSR on 0..255 values (the value-range Mul and Div in its graph), its
    checkpoint, a calibration folder, the int8 file ``src.export`` wrote of it and what the
    export printed."""

    module: SRModule
    checkpoint: Path
    photos: Path
    path: Path
    printed: str


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    root = tmp_path_factory.mktemp("int8")
    module, _ = micro_module(root, SCALE, ["model.value_range=255"])
    checkpoint = write_checkpoint(root / "micro.ckpt", module)
    photos = write_photos(root / "photos")
    cfg = compose_config(
        "export",
        [f"ckpt_path={checkpoint}", "quantize=int8", f"calibration={photos}", *CALIBRATION],
        root / "run",
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        path = export(cfg)
    return Quantized(module, checkpoint, photos, path, printed.getvalue())


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_int8_file_has_qdq_nodes_and_runs_at_any_size(quantized: Quantized):
    module, path = quantized.module, quantized.path
    assert path.name == "edsr_x2_int8.onnx" and path.is_file()
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types(path)
    initializers = onnx.load(str(path)).graph.initializer
    weights = [i for i in initializers if i.name.endswith(".weight_quantized")]
    assert len(weights) == 6  # head, the residual block's two, the body's last, the tail's two
    assert all(numpy_helper.to_array(w).dtype == np.int8 for w in weights)
    network = OnnxNetwork(path)
    assert "int8 QDQ" in network.metadata["srlab.quantization"] and network.scale == SCALE
    for height, width in ((20, 28), (13, 31)):
        lr = torch.from_numpy(smooth_image(height, width, 3).transpose(2, 0, 1).copy())[None]
        got = network(lr)
        assert got.shape == (1, 3, height * SCALE, width * SCALE)
        with torch.no_grad():
            expected = module(lr)
        difference = (got.clamp(0, 1) - expected.clamp(0, 1)).abs()
        assert float(difference.max()) > 0  # it is quantised, not the fp32 graph
        psnr = -10 * np.log10(float(difference.square().mean()))
        assert psnr > 30, psnr


def test_export_prints_the_fp32_check_and_the_int8_agreement(quantized: Quantized):
    printed = quantized.printed
    assert "fp32 graph: onnxruntime vs PyTorch: max |difference|" in printed
    agreement_line = next(line for line in printed.splitlines() if line.startswith("int8 vs"))
    assert "on 16 other LR patches of the calibration images" in agreement_line
    assert float(agreement_line.split("PSNR ")[1].split(" dB")[0]) > 30
    assert f"wrote {quantized.path} (onnx int8, EDSR x2" in printed


def test_calibration_patches_are_seeded(quantized: Quantized):
    photos = quantized.photos
    settings = CalibrationSettings(photos, SCALE, patches=6, size=16, seed=3)
    first, again = calibration_patches(settings), calibration_patches(settings)
    assert first.shape == (6, 3, 16, 16) and first.dtype == np.float32
    assert np.array_equal(first, again)
    other_seed = CalibrationSettings(photos, SCALE, patches=6, size=16, seed=4)
    assert not np.array_equal(first, calibration_patches(other_seed))
    assert not np.array_equal(first, calibration_patches(settings, seed_offset=1))


def scales_of(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if "scale" in i.name}


@pytest.fixture(scope="module")
def fp32_graph(quantized: Quantized, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fp32") / "fp32.onnx"
    export_onnx(quantized.module, path, sample_size=24)
    return path


def test_same_calibration_gives_the_same_int8_file(quantized, fp32_graph, tmp_path):
    settings = CalibrationSettings(quantized.photos, SCALE, patches=4, size=16)
    paths = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for path in paths:
        quantize_int8(fp32_graph, path, calibration_patches(settings), QuantizeSettings())
    first, second = (scales_of(path) for path in paths)
    assert first.keys() == second.keys() and first
    assert all(np.array_equal(first[name], second[name]) for name in first)


def test_kept_nodes_stay_fp32_and_read_fp32_tensors(quantized, fp32_graph, tmp_path):
    """``tail`` (EDSR's upsampling convolution, pixel shuffle and last convolution) and the
    value-range Div stay fp32 and read unrounded tensors; the rest is int8; the output is
    closer to fp32's than with everything int8."""
    patches = calibration_patches(CalibrationSettings(quantized.photos, SCALE, patches=4, size=16))
    path = tmp_path / "kept.onnx"
    quantize_int8(fp32_graph, path, patches, QuantizeSettings("minmax", ("tail", "Div")))
    model = onnx.load(str(path))
    producers = {out: node for node in model.graph.node for out in node.output}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    tail = [node for node in convs if node.input[1].startswith("net.tail.")]
    assert len(tail) == 2 and all(node.input[1].endswith(".weight") for node in tail)
    head = next(node for node in convs if node.input[1].startswith("net.head."))
    assert head.input[1].endswith("_DequantizeLinear_Output")  # int8 weights
    fp32 = [*tail, *(n for n in model.graph.node if n.op_type in ("DepthToSpace", "Div"))]
    assert all(
        producers[name].op_type != "DequantizeLinear"
        for node in fp32
        for name in node.input
        if name in producers
    )
    full = tmp_path / "full.onnx"
    quantize_int8(fp32_graph, full, patches, QuantizeSettings("minmax"))
    reference = OnnxNetwork(fp32_graph)
    kept_agreement = agreement(OnnxNetwork(path), reference, patches)
    full_agreement = agreement(OnnxNetwork(full), reference, patches)
    assert kept_agreement.psnr > full_agreement.psnr


def test_an_unknown_keep_float_entry_is_refused_naming_what_exists(quantized, fp32_graph):
    patches = calibration_patches(CalibrationSettings(quantized.photos, SCALE, patches=4, size=16))
    with pytest.raises(QuantizationError, match=r"tial names no node.*body.*tail"):
        quantize_int8(
            fp32_graph,
            fp32_graph.with_name("x.onnx"),
            patches,
            QuantizeSettings("minmax", ("tial",)),
        )


def test_eval_and_predict_run_the_int8_file(quantized, tmp_path):
    path = quantized.path
    hr_dir = tmp_path / "benchmarks" / "Mini" / "HR"
    write_photos(hr_dir, 2, (34, 42))
    cfg = compose_config(
        "eval",
        [
            f"onnx_path={path}",
            "data=benchmark",
            "data.sets=[Mini]",
            f"paths.data_dir={tmp_path}",
            "comparisons=0",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path / "eval",
    )
    (summary,) = evaluate(cfg)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["meta"]["model"] == "edsr_x2_int8.onnx (onnxruntime)"
    assert summary.images == 2 and np.isfinite(summary.psnr_y)
    cfg = compose_config(
        "predict",
        [f"ckpt_path={path}", f"input={hr_dir}", "progress=false"],
        tmp_path / "predict",
    )
    assert onnx_file(cfg) == str(path)
    predict(cfg)
    written = sorted(p.name for p in (tmp_path / "predict").glob("*.png"))
    assert written == ["p0.png", "p1.png"]


@pytest.mark.slow
def test_export_command_writes_the_int8_file_end_to_end(quantized: Quantized, tmp_path: Path):
    out = tmp_path / "cmd.onnx"
    args = [f"ckpt_path={quantized.checkpoint}", f"output={out}", "quantize=int8"]
    args += [f"calibration={quantized.photos}", *CALIBRATION, f"hydra.run.dir={tmp_path}"]
    result = run_module("src.export", args)
    assert result.returncode == 0, result.stderr
    assert "int8 vs PyTorch fp32" in result.stdout and "QuantizeLinear" in op_types(out)
    bad = run_module("src.export", [*args[:2], "quantize=int4", f"hydra.run.dir={tmp_path}"])
    assert "quantize must be" in one_error_line(bad)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["quantize=int4", "calibration=PHOTOS"], "quantize must be one of int8"),
        (["quantize=int8", "format=safetensors", "calibration=PHOTOS"], "needs format=onnx"),
        (["quantize=int8"], "needs calibration="),
        (["quantize=int8", "calibration=MISSING"], "no such folder"),
        (["quantize=int8", "calibration=EMPTY"], "no image files"),
        (
            ["quantize=int8", "calibration=PHOTOS", "calibration_size=64"],
            "no image is at least 64 px",
        ),
        (
            [
                "quantize=int8",
                "calibration=PHOTOS",
                "calibration_size=16",
                "quantize_keep_float=[blok]",
            ],
            "blok names",
        ),
        (
            ["quantize=int8", "calibration=PHOTOS", "calibration_method=entropy"],
            "calibration_method",
        ),
        (["quantize=int8", "calibration=PHOTOS", "calibration_patches=0"], "calibration_patches"),
    ],
)
def test_bad_quantize_settings_give_one_error_line(
    quantized, tmp_path, capsys, overrides, expected
):
    checkpoint, photos = quantized.checkpoint, quantized.photos
    (tmp_path / "empty").mkdir()
    places = {"PHOTOS": photos, "MISSING": tmp_path / "nowhere", "EMPTY": tmp_path / "empty"}
    overrides = [
        "=".join([key, str(places.get(value, value))])
        for key, value in (item.split("=", 1) for item in overrides)
    ]
    outcome = run_in_process(
        "export",
        [f"ckpt_path={checkpoint}", "sample_size=24", *overrides],
        tmp_path,
        capsys,
    )
    assert expected in one_error_line(outcome)  # type: ignore[arg-type]


def test_eval_refuses_a_missing_onnx_file(tmp_path, capsys):
    outcome = run_in_process("eval", [f"onnx_path={tmp_path / 'none.onnx'}"], tmp_path, capsys)
    assert "none.onnx" in one_error_line(outcome)  # type: ignore[arg-type]
