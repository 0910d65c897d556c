"""src.export: ONNX parity under onnxruntime at two sizes, safetensors, predict through ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch
from omegaconf import open_dict

from src.export import export
from src.io.images import write_image
from src.models.exporting import (
    ExportError,
    export_onnx,
    export_safetensors,
    onnx_max_difference,
)
from src.models.onnx_runtime import OnnxNetwork
from src.models.pretrained import import_weights
from src.models.sr_module import SRModule
from src.ops.inference import upscale
from src.predict import predict
from src.utils.errors import UserError
from tests.helpers import compose_config, one_error_line, run_module
from tests.predict_helpers import micro_module, quantize, smooth_image, write_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def diverged_ema_module(tmp_path: Path, scale: int = 3) -> SRModule:
    """A micro EDSR on 0..255 values whose EMA weights differ from the raw ones."""
    module, _ = micro_module(
        tmp_path,
        scale,
        ["model.ema_decay=0.9", "model.value_range=255"],
    )
    assert module.ema is not None
    with torch.no_grad():
        for parameter in module.ema.module.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SRModule, Path]:
    tmp_path = tmp_path_factory.mktemp("onnx")
    module = diverged_ema_module(tmp_path)
    path = tmp_path / "micro.onnx"
    export_onnx(module, path, sample_size=24)
    return module, path


@pytest.mark.parametrize("shape", [(1, 3, 20, 28), (2, 3, 33, 17)])
def test_onnx_matches_the_shared_path_at_any_size(exported: tuple[SRModule, Path], shape):
    module, path = exported
    network = OnnxNetwork(path)
    lr = torch.rand(shape)
    with torch.no_grad():
        expected = module(lr)  # the shared path: EMA weights, value_range 255
        raw = module.run_net(lr, module.net)
    got = network(lr)
    assert got.shape == (shape[0], 3, shape[2] * 3, shape[3] * 3)
    assert float((got - expected).abs().max()) < 1e-4
    assert float((got - raw).abs().max()) > 1e-3  # it is the EMA copy, not the raw weights


def test_onnx_metadata_carries_scale_config_and_memory(exported: tuple[SRModule, Path]):
    network = OnnxNetwork(exported[1])
    assert network.scale == 3
    assert network.bytes_per_lr_pixel and network.bytes_per_lr_pixel > 0
    config = json.loads(network.metadata["srlab.model_config"])
    assert config["net"]["_target_"] == "src.archs.edsr.EDSR" and config["value_range"] == 255
    assert network.metadata["srlab.weights"] == "ema"


def test_tiled_onnx_through_upscale_matches_whole(exported: tuple[SRModule, Path]):
    network = OnnxNetwork(exported[1])
    lr = torch.rand(1, 3, 40, 30)
    whole = network(lr)
    tiled = upscale(network, lr, 3, tile=16, tile_overlap=8)
    auto = upscale(network, lr, 3, tile="auto", tile_overlap=8, tile_memory_mb=1)
    assert float((tiled - whole).abs().max()) < 1e-4
    assert float((auto - whole).abs().max()) < 1e-4


def test_a_graph_tied_to_the_input_size_is_refused_in_one_line(tmp_path: Path):
    cfg = compose_config("export", ["model=bicubic", "scale=2"], tmp_path / "run")
    module = hydra.utils.instantiate(cfg.model)
    with pytest.raises(ExportError, match=r"ONNX export of Bicubic failed: .*safetensors"):
        export_onnx(module, tmp_path / "bicubic.onnx", sample_size=16)
    assert not list(tmp_path.glob("*bicubic*"))


def test_safetensors_holds_the_inference_weights_and_the_config(tmp_path: Path):
    from safetensors import safe_open

    module = diverged_ema_module(tmp_path)
    path = tmp_path / "micro.safetensors"
    export_safetensors(module, path)
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["srlab.model_config"])
    assert config["net"]["num_features"] == 8 and metadata["srlab.scale"] == "3"
    fresh, _ = micro_module(tmp_path, 3, seed=1)
    import_weights(fresh.net, path)
    for key, value in module.ema.module.state_dict().items():
        assert torch.equal(fresh.net.state_dict()[key], value), key


def test_export_command_writes_a_checked_onnx_file(tmp_path: Path):
    module, _ = micro_module(tmp_path)
    checkpoint = write_checkpoint(tmp_path / "micro.ckpt", module)
    out = tmp_path / "micro.onnx"
    result = run_module(
        "src.export",
        [
            f"ckpt_path={checkpoint}",
            f"output={out}",
            "sample_size=24",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    assert result.returncode == 0, result.stderr
    assert "onnxruntime vs PyTorch: max |difference|" in result.stdout
    assert out.is_file() and OnnxNetwork(out).scale == 2
    again = run_module(
        "src.export", [f"ckpt_path={checkpoint}", f"output={out}", f"hydra.run.dir={tmp_path}"]
    )
    assert again.returncode == 2 and "overwrite=true" in again.stderr


def test_predict_runs_an_onnx_file_like_the_checkpoint(tmp_path: Path):
    module, _ = micro_module(tmp_path)
    checkpoint = write_checkpoint(tmp_path / "micro.ckpt", module)
    cfg = compose_config(
        "export",
        [f"ckpt_path={checkpoint}", "format=onnx", "sample_size=24", "verify=false"],
        tmp_path / "export",
    )
    onnx_path = export(cfg)
    write_image(tmp_path / "in.png", quantize(smooth_image(30, 44, 3)))
    outputs = {}
    for source in (f"ckpt_path={checkpoint}", f"ckpt_path={onnx_path}"):
        out = tmp_path / source.split(".")[-1]
        cfg = compose_config(
            "predict",
            [source, f"input={tmp_path / 'in.png'}", "tile=16", "tile_overlap=8", "progress=false"],
            tmp_path / "run",
        )
        with open_dict(cfg):
            cfg.output = str(out)
        predict(cfg)
        outputs[source] = cv2.imread(str(out / "in.png")).astype(int)
    torch_out, onnx_out = outputs.values()
    assert torch_out.shape == (60, 88, 3)
    assert np.abs(torch_out - onnx_out).max() <= 1


NARROW = {
    "rlfn": "model.net.num_features=8",
    "rfdn": "model.net.num_features=8",
    "span": "model.net.num_features=8",
}


@pytest.mark.parametrize("model", sorted(NARROW))
def test_efficient_networks_export_to_onnx_with_parity(tmp_path: Path, model: str):
    """The convolutional efficient-track networks trace to ONNX with dynamic sizes; the ESA
    padding of inputs under 15 px goes through the graph too."""
    cfg = compose_config("export", [f"model={model}", "scale=2", NARROW[model]], tmp_path / "run")
    module = hydra.utils.instantiate(cfg.model).eval()
    path = tmp_path / f"{model}.onnx"
    export_onnx(module, path, sample_size=24)
    network = OnnxNetwork(path)
    for shape in [(1, 3, 20, 28), (1, 3, 33, 17), (1, 3, 9, 12)]:
        lr = torch.rand(shape)
        with torch.no_grad():
            expected = module(lr)
        assert float((network(lr) - expected).abs().max()) < 1e-4, shape


@pytest.mark.parametrize(("model", "network"), [("smfanet", "SMFANet"), ("safmn", "SAFMN")])
def test_a_network_the_exporter_fixes_at_the_traced_size_is_refused_naming_it(
    tmp_path: Path, model: str, network: str
):
    """SMFANet and SAFMN pool adaptively to a fraction of the input size; ONNX has no such
    pooling of a dynamic size, so the graph only holds at the traced size: refused, and no file
    is left."""
    output = tmp_path / f"{model}.onnx"
    cfg = compose_config(
        "export",
        [f"model={model}", "scale=2", "model.net.dim=8", f"output={output}"],
        tmp_path / "run",
    )
    with pytest.raises(ExportError, match=rf"ONNX export of {network} does not hold .*safetensors"):
        export(cfg)
    assert not output.exists()


# --- outputs that must not be written -------------------------------------------------------
def test_export_refuses_to_replace_the_checkpoint_it_reads(tmp_path: Path):
    module, _ = micro_module(tmp_path)
    checkpoint = write_checkpoint(tmp_path / "micro.ckpt", module)
    before = checkpoint.read_bytes()
    result = run_module(
        "src.export",
        [
            f"ckpt_path={checkpoint}",
            "format=safetensors",
            f"output={checkpoint}",
            "overwrite=true",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    line = one_error_line(result)
    assert str(checkpoint) in line and "output" in line
    assert checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["micro.ckpt"]


@pytest.mark.parametrize("link", ["symlink", "hardlink", "pretrained"])
def test_an_output_that_is_an_input_under_another_name_is_refused(tmp_path: Path, link: str):
    module, _ = micro_module(tmp_path)
    if link == "pretrained":
        weights = tmp_path / "micro.safetensors"
        export_safetensors(module, weights)
        source = [
            "model.net.num_blocks=1",
            "model.net.num_features=8",
            f"model.pretrained={weights}",
        ]
        output = weights
    else:
        weights = write_checkpoint(tmp_path / "micro.ckpt", module)
        source = [f"ckpt_path={weights}"]
        output = tmp_path / "alias.safetensors"
        (output.symlink_to if link == "symlink" else output.hardlink_to)(weights)
    before = weights.read_bytes()
    cfg = compose_config(
        "export",
        [*source, "format=safetensors", f"output={output}", "overwrite=true"],
        tmp_path / "run",
    )
    with pytest.raises(UserError, match="is one of the inputs"):
        export(cfg)
    assert weights.read_bytes() == before and output.read_bytes() == before


@pytest.mark.parametrize(
    ("file_format", "name"),
    [("onnx", "model.safetensors"), ("safetensors", "model.onnx"), ("onnx", "model")],
)
def test_an_output_named_for_another_format_is_refused(tmp_path: Path, file_format, name):
    module, _ = micro_module(tmp_path)
    checkpoint = write_checkpoint(tmp_path / "micro.ckpt", module)
    output = tmp_path / name
    cfg = compose_config(
        "export",
        [f"ckpt_path={checkpoint}", f"format={file_format}", f"output={output}", "verify=false"],
        tmp_path / "run",
    )
    with pytest.raises(UserError, match=rf"output={output}: format={file_format} writes"):
        export(cfg)
    assert not output.exists()


def test_a_failed_export_keeps_the_file_it_was_to_replace(tmp_path: Path):
    """The parity check runs before the file takes the output's name: a graph that fails it
    leaves the earlier export in place, and no temporary file."""
    output = tmp_path / "smfanet.onnx"
    output.write_bytes(b"an earlier export")
    cfg = compose_config(
        "export",
        ["model=smfanet", "scale=2", "model.net.dim=8", f"output={output}", "overwrite=true"],
        tmp_path / "run",
    )
    with pytest.raises(ExportError, match="does not hold"):
        export(cfg)
    assert output.read_bytes() == b"an earlier export"
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["smfanet.onnx"]


# --- opset ----------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", [18, 21])
def test_the_file_has_the_requested_opset(tmp_path: Path, opset: int):
    import onnx

    module, _ = micro_module(tmp_path)
    path = tmp_path / "micro.onnx"
    export_onnx(module, path, opset=opset, sample_size=16)
    versions = {entry.domain: entry.version for entry in onnx.load(str(path)).opset_import}
    assert versions[""] == opset
    assert OnnxNetwork(path).metadata["srlab.opset"] == str(opset)


@pytest.mark.parametrize(("opset", "why"), [(11, "must be an integer >= 18"), (99, "18 to ")])
def test_an_opset_the_exporter_cannot_write_is_refused(tmp_path: Path, opset: int, why: str):
    module, _ = micro_module(tmp_path)
    checkpoint = write_checkpoint(tmp_path / "micro.ckpt", module)
    output = tmp_path / "micro.onnx"
    result = run_module(
        "src.export",
        [
            f"ckpt_path={checkpoint}",
            f"opset={opset}",
            f"output={output}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    line = one_error_line(result)
    assert "opset" in line and why in line and str(opset) in line
    assert not output.exists()


def test_export_and_its_parity_check_run_in_fp32_inside_bf16_autocast(tmp_path: Path):
    """Neither the traced graph nor the check depends on an enclosing autocast (a notebook, a
    Lightning hook): both run in fp32, so the check compares fp32 with fp32."""
    import onnx

    module, _ = micro_module(tmp_path)
    path = tmp_path / "micro.onnx"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        graph = export_onnx(module, path, sample_size=16)
        worst = onnx_max_difference(path, graph)
    assert worst < 1e-5
    model = onnx.load(str(path))
    stored = {tensor.data_type for tensor in model.graph.initializer}
    cast_to = {
        attribute.i
        for node in model.graph.node
        if node.op_type == "Cast"
        for attribute in node.attribute
        if attribute.name == "to"
    }
    assert stored == {onnx.TensorProto.FLOAT} and onnx.TensorProto.BFLOAT16 not in cast_to


def test_a_network_that_declares_a_size_multiple_exports_padding_for_any_size(tmp_path: Path):
    """RRDBNet at x2 pixel-unshuffles its input, so it declares a size multiple of 2; the padding
    the shared path adds for it is part of the exported graph, for odd sizes too."""
    overrides = ["model=rrdbnet", "scale=2", "model.net.num_features=8", "model.net.num_blocks=1"]
    cfg = compose_config("export", [*overrides, "model.net.growth_rate=4"], tmp_path / "run")
    module = hydra.utils.instantiate(cfg.model).eval()
    path = tmp_path / "rrdbnet.onnx"
    export_onnx(module, path, sample_size=24)
    network = OnnxNetwork(path)
    for shape in [(1, 3, 20, 28), (1, 3, 13, 11)]:
        lr = torch.rand(shape)
        with torch.no_grad():
            expected = module(lr)
        assert expected.shape[-2:] == (shape[2] * 2, shape[3] * 2)
        assert float((network(lr) - expected).abs().max()) < 1e-4, shape
