"""Re-parameterisation (issue 26, point 2): every block that declares ``fuse()`` folds into a module
computing the same function, whole networks too; ``fuse_network`` copies; ``model.fused`` trains,
saves and loads the fused form; eval, predict and export run it.

Blocks are found by scanning every module of ``src/archs`` for classes that define ``fuse``, so a
new one without a case here fails :func:`test_every_fusable_block_has_a_case`. Comparisons run in
float64 on unit-scale inputs with random weights (and random BatchNorm statistics, where a block
has any), against the block in eval mode and, where its training mode is deterministic, against
the training-time branches themselves.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

import hydra
import onnx
import pytest
import torch
from torch import nn

import src.archs
from src.archs.ecbsr import ECB, ECBSR, PlainConv3X3
from src.archs.efdn import EDBB
from src.archs.reparam import (
    Fusable,
    fusable_blocks,
    fuse_network,
    fused_parameter_count,
    is_fusable,
    is_fusable_block,
)
from src.archs.span import SPAN, Conv3XC
from src.models.checkpoint import module_from_checkpoint
from src.models.efficiency import folded_parameters, inference_form
from src.models.loading import load_module
from src.models.sr_module import SRModule
from src.utils.cli import root_cause
from src.utils.errors import UserError
from tests.helpers import compose_config, run_in_process
from tests.predict_helpers import write_checkpoint
from tests.test_data import write_folder

TOLERANCE = 1e-5
ModuleT = TypeVar("ModuleT", bound=nn.Module)


def defined_fusable_classes() -> dict[str, type[nn.Module]]:
    """Every nn.Module class defined in a module of src/archs that defines ``fuse`` itself."""
    found: dict[str, type[nn.Module]] = {}
    for info in pkgutil.iter_modules(src.archs.__path__):
        module = importlib.import_module(f"src.archs.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            defined_here = cls.__module__ == module.__name__
            if defined_here and issubclass(cls, nn.Module) and "fuse" in vars(cls):
                found[f"{info.name}.{name}"] = cls
    return found


def deployed_conv3xc() -> nn.Module:
    """A Conv3XC that runs its stored kernel (an official deploy file's form)."""
    block = Conv3XC(4, 5, relu=True)
    randomise(block)
    block.fold()
    block.deploy = True
    return block


# Each fusable block class, built in the settings that take different paths through fuse().
CASES: dict[str, list[Callable[[], nn.Module]]] = {
    "span.Conv3XC": [
        lambda: Conv3XC(3, 6),
        lambda: Conv3XC(5, 5, relu=True),
        deployed_conv3xc,
    ],
    "ecbsr.ECB": [
        lambda: ECB(3, 6),
        lambda: ECB(4, 4, act_type="relu", with_idt=True),
        lambda: ECB(5, 7, act_type="linear", with_idt=True),  # widths differ: no identity
        lambda: ECB(4, 4, act_type="softplus", depth_multiplier=1.5),
    ],
    "efdn.EDBB": [
        lambda: EDBB(3, 5),
        lambda: EDBB(4, 4, with_idt=True, with_13=True),
    ],
}


@torch.no_grad()
def randomise(module: ModuleT, seed: int = 0) -> ModuleT:
    """Unit-scale random parameters (so that every branch matters; ECB's filter scales start
    at 1e-3) and random BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in module.parameters():
        fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
        parameter.copy_(torch.randn(parameter.shape, generator=generator) / fan_in**0.5)
    for norm in module.modules():
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
            continue
        mean, var = norm.running_mean, norm.running_var
        if mean is not None and var is not None:
            mean.copy_(torch.randn(mean.shape, generator=generator))
            var.copy_(torch.rand(var.shape, generator=generator) + 0.5)
    return module


def deterministic_in_training(module: nn.Module) -> bool:
    """Training mode runs the branches on their weights alone (no batch statistics, no noise)."""
    random_kinds = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.RReLU)
    return not any(isinstance(m, random_kinds) for m in module.modules())


def unit_input(channels: int, seed: int = 1, height: int = 9, width: int = 7) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, height, width, generator=generator, dtype=torch.float64)


def in_channels(block: nn.Module) -> int:
    return next(m for m in block.modules() if isinstance(m, nn.Conv2d)).in_channels


def test_every_fusable_block_has_a_case():
    found = defined_fusable_classes()
    assert {"span.Conv3XC", "ecbsr.ECB"} <= set(found)
    assert set(found) == set(CASES), f"add a case to CASES for: {sorted(set(found) - set(CASES))}"


@pytest.mark.parametrize(
    "build",
    [build for builds in CASES.values() for build in builds],
    ids=[f"{name}-{i}" for name, builds in CASES.items() for i in range(len(builds))],
)
def test_a_fused_block_computes_what_the_block_computes(build: Callable[[], nn.Module]):
    block = build()
    if not getattr(block, "deploy", False):
        randomise(block)
    block = block.double()
    x = unit_input(in_channels(block))
    fused = cast(Fusable, block).fuse()
    assert not is_fusable(fused), "fuse() must return plain modules"
    assert not any(p.requires_grad is False for p in fused.parameters())
    with torch.no_grad():
        got = fused.eval()(x)
        references = {"eval": block.eval()(x)}
        if deterministic_in_training(block) and not getattr(block, "deploy", False):
            references["branches"] = block.train()(x)
    for form, expected in references.items():
        assert expected.abs().max() > 0.1, "a degenerate case tests nothing"
        torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=0, msg=form)


def test_the_fused_block_is_detached_from_the_block():
    block = randomise(ECB(3, 4))
    fused = block.fuse()
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    with torch.no_grad():
        block.conv3x3.weight.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in fused.state_dict().items())


# --- whole networks ------------------------------------------------------------------------------
NETWORKS: dict[str, Callable[[], nn.Module]] = {
    "span_x2": lambda: SPAN(2, num_features=8),
    "span_x3_deploy": lambda: deployed_span(),
    "ecbsr_luma_x4": lambda: ECBSR(4, module_nums=2, channel_nums=8),
    "ecbsr_rgb_idt_x2": lambda: ECBSR(2, module_nums=2, channel_nums=12, with_idt=True, colors=3),
}


def deployed_span() -> nn.Module:
    net = randomise(SPAN(3, num_features=8))
    net.fold()
    for module in net.modules():
        if isinstance(module, Conv3XC):
            module.deploy = True
    return net


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_a_fused_network_computes_what_the_network_computes(name: str):
    net = NETWORKS[name]()
    if "deploy" not in name:
        randomise(net)
    net = net.double()
    x = unit_input(3, height=10, width=8)
    fused = fuse_network(net).eval()
    assert not is_fusable(fused) and type(fused) is type(net)
    with torch.no_grad():
        got = fused(x)
        expected = net.eval()(x)
        torch.testing.assert_close(got, expected, atol=TOLERANCE * expected.abs().max(), rtol=0)
        if "deploy" not in name:  # a deploy file's branches are not loaded
            branches = net.train()(x)
            torch.testing.assert_close(got, branches, atol=TOLERANCE * got.abs().max(), rtol=0)


def test_fuse_network_copies_and_leaves_the_network_untouched():
    net = randomise(SPAN(2, num_features=8)).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    blocks = [name for name, _ in fusable_blocks(net)]
    fused = fuse_network(net)
    assert [name for name, _ in fusable_blocks(net)] == blocks and len(blocks) == 20
    assert net.state_dict().keys() == state.keys()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(isinstance(net.get_submodule(name), Conv3XC) for name in blocks)
    assert all(isinstance(fused.get_submodule(name), nn.Conv2d) for name in blocks)
    assert fused.training and fused.init_arguments == net.init_arguments
    assert not set(fused.state_dict()) & {"conv_1.sk.weight", "conv_1.eval_conv.weight"}


def test_a_fusable_network_that_is_itself_a_block_is_fused_whole():
    block = randomise(ECB(3, 3))
    fused = fuse_network(block)
    assert isinstance(fused, PlainConv3X3) and is_fusable_block(block)


def test_networks_without_blocks_are_not_fusable_and_count_their_state():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert not is_fusable(plain)
    # 3*4*9 + 4 weights and biases, 4 + 4 affine, 4 + 4 + 1 running statistics and count.
    assert fused_parameter_count(plain) == 112 + 8 + 9


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        # 20 Conv3XC of 8 features as 3x3 convolutions, the 32->8 1x1 and the 8->12 upsampler.
        (lambda: SPAN(2, num_features=8), 3 * 8 * 9 + 8 + 19 * (8 * 8 * 9 + 8) + 264 + 876),
        # ECBSR-M4C16 x4 on luma: 1->16, four 16->16 and 16->16 convolutions, five PReLUs.
        (lambda: ECBSR(4), (9 * 16 + 16) + 4 * (9 * 256 + 16) + (9 * 256 + 16) + 5 * 16),
    ],
    ids=["span", "ecbsr"],
)
def test_the_fused_parameter_count_is_the_plain_networks(network, expected: int):
    with torch.device("meta"):
        net = network()
    assert fused_parameter_count(net) == folded_parameters(net) == expected
    assert sum(p.numel() for p in net.parameters()) > 2 * expected


def test_the_efficiency_report_measures_the_fused_form():
    from src.models.zoo import build_net

    net = build_net("ecbsr", 4, device="meta")
    assert folded_parameters(net) == 11_840
    measured = inference_form(net)
    assert not is_fusable(measured) and not measured.training
    plain = nn.Conv2d(1, 1, 1)
    assert inference_form(plain) is plain and folded_parameters(plain) is None


# --- model.fused, checkpoints, eval and export -----------------------------------------------
SPAN_TINY = ["model=span", "scale=2", "model.net.num_features=8"]


def fused_module(tmp_path: Path, extra: list[str] | None = None) -> SRModule:
    cfg = compose_config("export", [*SPAN_TINY, "model.fused=true", *(extra or [])], tmp_path)
    torch.manual_seed(0)
    return hydra.utils.instantiate(cfg.model).eval()


def test_a_fused_module_saves_and_loads_its_fused_form(tmp_path: Path):
    module = fused_module(tmp_path / "cfg", ["model.ema_decay=0.9"])
    assert module.model_config is not None and module.model_config["fused"] is True
    assert not is_fusable(module.net) and not is_fusable(module.inference_net)
    assert "net.conv_1.weight" in module.state_dict()
    assert "ema.module.conv_1.weight" in module.state_dict()
    checkpoint = write_checkpoint(tmp_path / "fused.ckpt", module)
    loaded = module_from_checkpoint(checkpoint).eval()
    assert not is_fusable(loaded.net) and type(loaded.net) is SPAN
    lr = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(loaded(lr), module(lr))


def test_eval_runs_a_trained_checkpoint_fused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cfg = compose_config("export", SPAN_TINY, tmp_path / "cfg")
    torch.manual_seed(0)
    module: SRModule = hydra.utils.instantiate(cfg.model).eval()
    randomise(module.net)
    checkpoint = write_checkpoint(tmp_path / "train.ckpt", module)
    loaded = load_module(compose_config("eval", [f"ckpt_path={checkpoint}"], tmp_path / "l"))
    assert not is_fusable(loaded.net) and not any(isinstance(m, Conv3XC) for m in loaded.modules())
    assert loaded.model_config is not None and loaded.model_config["fused"] is True
    lr = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), module(lr), atol=TOLERANCE, rtol=0)

    write_folder(tmp_path / "data" / "benchmarks" / "Mine" / "HR", 2, height=32, width=40)
    overrides = [
        f"ckpt_path={checkpoint}",
        "data=benchmark",
        "data.sets=[Mine]",
        f"paths.data_dir={tmp_path / 'data'}",
        "comparisons=0",
        "trainer.enable_progress_bar=false",
    ]
    outcome = run_in_process("eval", overrides, tmp_path, capsys)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert "SPAN: re-parameterisable blocks fused for inference" in outcome.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["meta"]["model"] == "SPAN"


def initializer_elements(path: Path) -> tuple[int, list[str]]:
    graph = onnx.load(str(path)).graph
    sizes = [int(torch.tensor(list(t.dims)).prod()) if t.dims else 1 for t in graph.initializer]
    return sum(sizes), [t.name for t in graph.initializer]


@pytest.mark.slow
def test_export_writes_the_fused_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    output = tmp_path / "span.onnx"
    overrides = [*SPAN_TINY, "format=onnx", "sample_size=16", f"output={output}"]
    outcome = run_in_process("export", overrides, tmp_path, capsys)
    assert outcome.returncode == 0, outcome.stderr[-3000:]
    elements, names = initializer_elements(output)
    net = SPAN(2, num_features=8)
    assert elements <= fused_parameter_count(net) + 8  # a few constants beside the weights
    assert elements < sum(p.numel() for p in net.parameters()) / 2
    assert not [name for name in names if ".sk." in name or ".conv.0." in name or "eval_" in name]
    metadata = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
    assert json.loads(metadata["srlab.model_config"])["fused"] is True


def test_a_fused_safetensors_export_loads_with_model_fused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """The exported keys are the fused form's: ``model.fused=true`` imports them after fusing."""
    output = tmp_path / "span.safetensors"
    overrides = [*SPAN_TINY, "format=safetensors", f"output={output}"]
    assert run_in_process("export", overrides, tmp_path, capsys).returncode == 0
    module = fused_module(tmp_path / "cfg", [f"model.pretrained={output}"])
    from safetensors.torch import load_file

    stored = load_file(str(output))
    assert all(torch.equal(stored[k], v) for k, v in module.net.state_dict().items())
    with pytest.raises(UserError, match="safetensors"):
        compose_and_build(tmp_path / "plain", [*SPAN_TINY, f"model.pretrained={output}"])


def compose_and_build(where: Path, overrides: list[str]) -> SRModule:
    cfg = compose_config("export", overrides, where)
    try:
        return hydra.utils.instantiate(cfg.model)
    except Exception as error:  # Hydra wraps the constructor's error
        raise root_cause(error) from None


# --- bad input -------------------------------------------------------------------------------
def test_model_fused_on_a_network_with_nothing_to_fuse_is_refused_in_python():
    from src.archs.edsr import EDSR

    with pytest.raises(UserError, match=r"model\.fused=true: EDSR has no re-parameterisable"):
        SRModule(EDSR(2, num_blocks=1, num_features=8), scale=2, fused=True)


def test_model_fused_on_a_network_with_nothing_to_fuse_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    output = tmp_path / "x.safetensors"
    overrides = ["model=espcn", "scale=2", "model.fused=true", "format=safetensors"]
    outcome = run_in_process("export", [*overrides, f"output={output}"], tmp_path, capsys)
    assert outcome.returncode == 2
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, outcome.stderr
    assert "model.fused=true" in errors[0] and "ESPCN" in errors[0]
    assert "model.fused=false" in errors[0] and not output.exists()


def test_model_fused_must_be_a_boolean(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    overrides = [*SPAN_TINY, "model.fused=sometimes", "format=safetensors"]
    outcome = run_in_process("export", overrides, tmp_path, capsys)
    assert outcome.returncode == 2
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.fused" in errors[0], outcome.stderr
