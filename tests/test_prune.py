"""Structured pruning (src/models/pruning.py, src/prune.py): ratios reached, channels removed and
not masked, the record replayed on a fresh network, pruned checkpoints loading in eval and
export, fine-tuning, and the refusals."""

from __future__ import annotations

import re
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.archs.edsr import EDSR
from src.archs.imdn import IMDN
from src.archs.reparam import fuse_network
from src.archs.rlfn import RLFN
from src.archs.span import SPAN
from src.models.checkpoint import module_from_checkpoint
from src.models.efficiency import count_macs
from src.models.pruning import (
    FLOPS_SIZE,
    TOLERANCE,
    Pruned,
    PruningError,
    PruningRecordError,
    prune_to_target,
    replay,
)
from src.models.sr_module import SRModule
from src.utils.complexity import count_parameters
from tests.helpers import compose_config, one_error_line, run_in_process, run_module
from tests.predict_helpers import write_checkpoint

SMALL_EDSR = ["model.net.num_blocks=2", "model.net.num_features=16"]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
SMALL_DATA = ["data.batch_size=4", "data.lr_patch_size=16"]


def small_edsr(seed: int = 0) -> EDSR:
    torch.manual_seed(seed)
    return EDSR(scale=2, num_blocks=2, num_features=16).eval()


def calibration(channels: int = 3) -> torch.Tensor:
    """Four smooth LR images: what importance=activation ranks channels on."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(4, channels, 6, 6, generator=generator)
    return F.interpolate(coarse, size=(24, 24), mode="bilinear", align_corners=False)


def prune(net: nn.Module, ratio: float, target: str, **options) -> Pruned:
    return prune_to_target(net, ratio, target, calibration=calibration(), **options)  # type: ignore[arg-type]


def macs(net: nn.Module) -> float:
    return count_macs(net, FLOPS_SIZE, "cpu")


def convolutions(net: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}


def small_module(tmp_path: Path, overrides: list[str], seed: int = 0) -> SRModule:
    cfg = compose_config("train", ["scale=2", *overrides], tmp_path / "cfg")
    torch.manual_seed(seed)
    return hydra.utils.instantiate(cfg.model).eval()


@pytest.fixture(scope="module")
def edsr_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("prune")
    return write_checkpoint(tmp_path / "edsr.ckpt", small_module(tmp_path, SMALL_EDSR))


# --- the ratio, measured independently ---------------------------------------------------------
@pytest.mark.parametrize("importance", ["activation", "l1", "l2"])
def test_params_ratio_is_reached_by_removing_channels(importance):
    net = small_edsr()
    pruned = prune(net, 0.4, "params", importance=importance)
    kept = count_parameters(pruned.net) / count_parameters(net)
    assert abs((1 - kept) - 0.4) <= TOLERANCE
    assert pruned.after.params == count_parameters(pruned.net)
    # Removed, not masked: convolutions are narrower, and no weight was zeroed in place.
    before, after = convolutions(net), convolutions(pruned.net)
    assert sum(m.weight.numel() for m in after.values()) < sum(
        m.weight.numel() for m in before.values()
    )
    assert all(bool((m.weight.abs().sum(dim=(1, 2, 3)) > 0).all()) for m in after.values())


def test_flops_ratio_is_reached():
    net = small_edsr()
    pruned = prune(net, 0.5, "flops")
    removed = 1 - macs(pruned.net) / macs(net)
    assert abs(removed - 0.5) <= TOLERANCE
    assert abs(pruned.reached - removed) < 1e-6


def test_the_image_and_pixel_shuffle_channels_are_kept():
    net = small_edsr()
    pruned = prune(net, 0.5, "flops").net
    before, after = convolutions(net), convolutions(pruned)
    assert after["head"].in_channels == 3  # the image's channels in
    for name in ("tail.0.0", "tail.1"):  # the conv feeding the pixel shuffle, the output conv
        assert after[name].out_channels == before[name].out_channels
    assert after["head"].out_channels < before["head"].out_channels  # the residual stream
    x = torch.rand(2, 3, 13, 17)
    with torch.no_grad():
        assert pruned(x).shape == net(x).shape == (2, 3, 26, 34)


# --- the record ----------------------------------------------------------------------------------
def test_replaying_the_record_on_a_fresh_network_loads_strictly():
    pruned = prune(small_edsr(), 0.4, "params")
    fresh = small_edsr(seed=1)
    replay(fresh, pruned.record)
    fresh.load_state_dict(pruned.net.state_dict(), strict=True)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(fresh(x), pruned.net(x))


def test_a_pruned_network_pruned_again_keeps_one_record_of_the_network_as_built():
    first = prune(small_edsr(), 0.3, "flops")
    second = prune(first.net, 0.3, "flops", earlier=first.record)
    fresh = small_edsr(seed=1)
    replay(fresh, second.record)
    fresh.load_state_dict(second.net.state_dict(), strict=True)
    assert count_parameters(fresh) < count_parameters(first.net)


@pytest.mark.parametrize(
    ("removed", "message"),
    [
        ([["nowhere", "out", [0]]], "no prunable layer named 'nowhere'"),
        ([["head", "out", [0, 99]]], "outside 0..15"),
        ([["head", "out", [1, 1]]], "repeat"),
        ([["head", "sideways", [0]]], "not a module name and out|in"),
        ([["head", "out", list(range(16))]], "every out channel of head"),
        ([["head", "out", "0,1"]], "not a list of integers"),
    ],
)
def test_a_record_that_does_not_fit_is_refused_by_key(removed, message):
    with pytest.raises(PruningRecordError, match=re.escape(message)):
        replay(small_edsr(), {"removed": removed})


def test_a_module_built_with_the_record_is_the_pruned_shape(tmp_path: Path):
    pruned = prune(small_edsr(), 0.4, "params")
    module = small_module(tmp_path, [*SMALL_EDSR, "model.ema_decay=0.9"])
    config = module.model_config
    assert config is not None
    rebuilt = hydra.utils.instantiate({**config, "pruning": pruned.record})
    rebuilt.net.load_state_dict(pruned.net.state_dict(), strict=True)
    assert rebuilt.ema is not None  # the EMA copy is made of the pruned network
    rebuilt.ema.module.load_state_dict(pruned.net.state_dict(), strict=True)
    assert rebuilt.model_config["pruning"] == pruned.record


# --- networks with attention, concatenation, splits, folded branches ---------------------------
@pytest.mark.parametrize(
    ("name", "build", "ratio"),
    [
        ("IMDN", lambda: IMDN(scale=2, num_features=32, num_blocks=2), 0.3),
        ("RLFN", lambda: RLFN(scale=2, num_features=16, num_blocks=2), 0.4),
        pytest.param(
            "SPAN",
            lambda: fuse_network(SPAN(scale=2, num_features=16)),
            0.4,
            marks=pytest.mark.slow,  # 8 s
        ),
    ],
)
def test_attention_and_concatenation_networks_prune_soundly(name, build, ratio):
    torch.manual_seed(0)
    net = build().eval()
    pruned = prune(net, ratio, "params")
    assert abs(pruned.reached - ratio) <= TOLERANCE
    torch.manual_seed(1)
    fresh = build().eval()
    replay(fresh, pruned.record)
    fresh.load_state_dict(pruned.net.state_dict(), strict=True)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert fresh(x).shape == net(x).shape


def carrier_edsr(channel: int) -> EDSR:
    """A small EDSR whose residual-stream ``channel`` has tiny weights everywhere but a large
    bias in the first convolution: it carries a large signal that its weights do not show."""
    net = small_edsr()
    with torch.no_grad():
        for conv in convolutions(net).values():
            if conv.out_channels == 16:
                conv.weight[channel] *= 1e-2
            if conv.in_channels == 16:
                conv.weight[:, channel] *= 1e-2
        net.head.bias[channel] = 10.0
    return net


def removed_from(record: dict, name: str) -> list[int]:
    return next(channels for module, dim, channels in record["removed"] if module == name)


def test_activation_ranking_keeps_a_channel_that_weight_norms_would_remove():
    carrier = 5
    by_weights = prune(carrier_edsr(carrier), 0.3, "params", importance="l2")
    by_activation = prune(carrier_edsr(carrier), 0.3, "params", importance="activation")
    assert carrier in removed_from(by_weights.record, "head")
    assert carrier not in removed_from(by_activation.record, "head")


def test_activation_ranking_needs_calibration_images():
    with pytest.raises(PruningError, match="importance=activation needs calibration images"):
        prune_to_target(small_edsr(), 0.3, "params")


def test_unfolded_branches_are_refused_with_the_fix():
    with pytest.raises(PruningError, match=r"SPAN has re-parameterisable blocks.*fuse=true"):
        prune(SPAN(scale=2, num_features=16), 0.3, "params")


class ChannelMean(nn.Module):
    """Multiplies features by their mean over channels: an operation Torch-Pruning's graph takes
    for an element-wise one, so pruning changes what it computes."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.up = nn.Conv2d(16, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        y = self.body(y * y.mean(dim=1, keepdim=True))
        return F.pixel_shuffle(self.up(y), 2)


def test_a_network_the_graph_misreads_is_refused_by_name():
    torch.manual_seed(0)
    with pytest.raises(PruningError, match="ChannelMean cannot be pruned soundly"):
        prune(ChannelMean(), 0.3, "params")


def test_an_unreachable_ratio_names_the_closest():
    with pytest.raises(PruningError, match=r"ratio=0.97: the closest EDSR comes is 0\.\d+"):
        prune(small_edsr(), 0.97, "params")


# --- the pruned checkpoint in eval and export --------------------------------------------------
def pruned_checkpoint(tmp_path: Path) -> tuple[Path, SRModule]:
    """A small EDSR module built with a pruning record and its pruned weights, saved as src.prune
    saves it."""
    pruned = prune(small_edsr(), 0.5, "flops")
    config = small_module(tmp_path, SMALL_EDSR).model_config
    assert config is not None
    module: SRModule = hydra.utils.instantiate({**config, "pruning": pruned.record})
    module.net.load_state_dict(pruned.net.state_dict())
    return write_checkpoint(tmp_path / "pruned.ckpt", module.eval()), module


def test_a_pruned_checkpoint_reloads_as_it_was_saved(tmp_path: Path):
    path, module = pruned_checkpoint(tmp_path)
    loaded = module_from_checkpoint(path)
    assert count_parameters(loaded.net) == count_parameters(module.net)
    lr = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(loaded(lr), module(lr))


@pytest.mark.slow  # 10 s: ONNX export
def test_a_pruned_checkpoint_exports_with_the_parity_check(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from src.models.exporting import export_onnx, onnx_max_difference

    loaded = module_from_checkpoint(pruned_checkpoint(tmp_path)[0])
    graph = export_onnx(loaded, tmp_path / "pruned.onnx", sample_size=24)
    assert onnx_max_difference(tmp_path / "pruned.onnx", graph) < 1e-4


# --- the command ---------------------------------------------------------------------------------
@pytest.mark.slow  # 10 s: three validations
def test_prune_only_writes_a_checkpoint_eval_scores_as_the_run_did(
    tmp_path: Path, edsr_checkpoint: Path, capsys: pytest.CaptureFixture[str]
):
    args = [f"ckpt_path={edsr_checkpoint}", "ratio=0.5", "target=flops", "trainer.max_steps=0"]
    outcome = run_in_process("prune", [*args, *QUIET], tmp_path, capsys)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert re.search(r"parameters  21,763 -> [\d,]+ \(-\d+\.\d%\)", outcome.stdout)
    pruned = re.search(r"pruned (\d+\.\d+) dB", outcome.stdout)
    assert pruned, outcome.stdout
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    scored = run_in_process("eval", [f"ckpt_path={checkpoint}", "comparisons=0"], tmp_path, capsys)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert f"| sample_val | 2 | {pruned.group(1)} |" in scored.stdout


@pytest.mark.slow
def test_prune_fine_tunes_and_the_result_exports_and_predicts(tmp_path: Path):
    """The whole path in fresh processes: prune + fine-tune, eval, export (parity), predict."""
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    args = [
        f"ckpt_path={write_checkpoint(tmp_path / 'e.ckpt', small_module(tmp_path, SMALL_EDSR))}"
    ]
    result = run_module(
        "src.prune",
        [*args, "ratio=0.4", "trainer.max_steps=30", *QUIET, *SMALL_DATA, f"hydra.run.dir={run}"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = re.search(r"pruned (\d+\.\d+) dB, fine-tuned (\d+\.\d+) dB", result.stdout)
    assert scores, result.stdout
    assert float(scores.group(2)) > float(scores.group(1))  # fine-tuning lowered the loss
    checkpoint = run / "checkpoints" / "last.ckpt"
    exported = run_module(
        "src.export", [f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'export'}"]
    )
    assert exported.returncode == 0 and "max |difference|" in exported.stdout, exported.stderr
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), (torch.rand(20, 24, 3) * 255).byte().numpy())
    predicted = run_module(
        "src.predict",
        [
            f"ckpt_path={checkpoint}",
            f"input={image}",
            f"output={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'p'}",
        ],
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert cv2.imread(str(tmp_path / "out" / "in.png")).shape == (40, 48, 3)


# --- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ratio=0"], "ratio must be a number > 0 and < 1, got 0"),
        (["ratio=1.5"], "ratio must be a number > 0 and < 1, got 1.5"),
        (["target=macs"], "target must be one of params, flops, got 'macs'"),
        (["importance=l3"], "importance must be one of activation, l1, l2, got 'l3'"),
        (["fuse=true"], "fuse=true: EDSR has no re-parameterisable block to fuse"),
        (["trainer.max_steps=-1"], "trainer.max_steps must be an integer >= 0, got -1"),
        (["+model.net.num_blocks=3"], "model.net: src.prune prunes the checkpoint's network"),
    ],
)
def test_bad_settings_give_one_error_line(
    overrides, message, tmp_path: Path, edsr_checkpoint: Path, capsys
):
    outcome = run_in_process(
        "prune", [f"ckpt_path={edsr_checkpoint}", *overrides], tmp_path, capsys
    )
    assert outcome.returncode == 2
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), outcome.stderr[-2000:]


def test_bad_checkpoints_give_one_error_line(tmp_path: Path, capsys):
    no_config = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": small_edsr().state_dict()}, no_config)
    cases = [
        ([], "ckpt_path is not set"),
        ([f"ckpt_path={tmp_path / 'missing.ckpt'}"], "checkpoint not found"),
        ([f"ckpt_path={no_config}"], "holds no model config"),
    ]
    for overrides, message in cases:
        outcome = run_in_process("prune", overrides, tmp_path, capsys)
        assert outcome.returncode == 2, outcome.stderr[-2000:]
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], outcome.stderr[-2000:]


def test_eval_refuses_a_record_that_does_not_fit_in_one_line(tmp_path: Path, capsys):
    module = small_module(tmp_path, SMALL_EDSR)
    config = {**(module.model_config or {}), "pruning": {"removed": [["nowhere", "out", [0]]]}}
    checkpoint = write_checkpoint(tmp_path / "tampered.ckpt", module, config)
    outcome = run_in_process("eval", [f"ckpt_path={checkpoint}"], tmp_path, capsys)
    assert outcome.returncode == 2
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.pruning: EDSR has no prunable layer named 'nowhere'"]


@pytest.mark.slow
def test_the_command_line_refuses_in_one_line(tmp_path: Path, edsr_checkpoint: Path):
    result = run_module(
        "src.prune", [f"ckpt_path={edsr_checkpoint}", "ratio=2", f"hydra.run.dir={tmp_path}"]
    )
    assert one_error_line(result) == "error: ratio must be a number > 0 and < 1, got 2"


def test_fine_tuning_uses_the_runs_batch_augmentation_not_the_checkpoints(tmp_path: Path):
    from src.prune import fine_tune_config

    stored = {"scale": 2, "augment": {"seed": 3, "ops": {"cutblur": {"prob": 1.0, "alpha": 0.7}}}}
    plain = fine_tune_config(compose_config("prune", ["ckpt_path=x.ckpt"], tmp_path), stored)
    assert plain["augment"] is None
    chosen = compose_config("prune", ["ckpt_path=x.ckpt", "augment=mixup"], tmp_path)
    assert set(fine_tune_config(chosen, stored)["augment"]["ops"]) == {"mixup"}
