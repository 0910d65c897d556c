"""Distillation (src/models/distillation.py, teachers loaded by src/models/teachers.py): a frozen
teacher outside the student's checkpoint, its terms computed as written, its hooks on the named
layers, and ``model.teacher.*`` through ``python -m src.train`` (bf16, EMA, DDP, resume) with its
bad inputs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, cast

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from src.archs.edsr import EDSR
from src.archs.rlfn import RLFN
from src.models.checkpoint import module_from_checkpoint
from src.models.distillation import Distillation, capture_features
from src.models.sr_module import SRModule
from src.models.teachers import attach_teacher
from src.utils.errors import UserError
from tests.helpers import TINY, one_error_line, run_in_process, run_module
from tests.predict_helpers import write_checkpoint
from tests.test_data import write_folder
from tests.test_ddp import last_logged

STUDENT_FEATURES = 16  # TINY's EDSR
TEACHER_FEATURES = 24
# body.0: the student's first residual block; body.1: the teacher's second.
PAIR = {"student": "body.0", "teacher": "body.1", "weight": 0.5}
PAIR_OVERRIDE = "model.teacher.features=[{student:body.0,teacher:body.1,weight:0.5}]"


def edsr_module(scale: int = 2, features: int = STUDENT_FEATURES, **options: Any) -> SRModule:
    torch.manual_seed(features)
    return SRModule(EDSR(scale, num_blocks=2, num_features=features), scale, **options)


def distilling_module(teacher: dict[str, Any], **options: Any) -> SRModule:
    """The TINY EDSR student with ``teacher`` loaded and attached, as src.train does."""
    module = edsr_module(teacher=teacher, **options)
    attach_teacher(module)
    return module


def distillation_of(module: SRModule) -> Distillation:
    assert module.distillation is not None
    return module.distillation


def first_adapter(distillation: Distillation) -> nn.Conv2d:
    return cast(nn.Conv2d, distillation.adapters[0])


def edsr_features(net: Any, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """The output of ``net.body[blocks - 1]``, computed without hooks."""
    features = net.head(net.sub_mean(x))
    for index in range(blocks):
        features = net.body[index](features)
    return features


@pytest.fixture
def teacher_ckpt(tmp_path: Path) -> Path:
    return write_checkpoint(tmp_path / "teacher.ckpt", edsr_module(features=TEACHER_FEATURES))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "hr"
    write_folder(path, 6, height=64, width=64)
    return path


# --- the teacher ------------------------------------------------------------------------------
def test_the_teacher_is_frozen_in_eval_mode_and_in_no_state_dict(teacher_ckpt: Path):
    module = distilling_module({"ckpt_path": str(teacher_ckpt), "features": [PAIR]})
    module.train()
    teacher = distillation_of(module).teacher
    assert not teacher.module.training and not teacher.net.training
    assert not any(p.requires_grad for p in teacher.module.parameters())
    assert not {id(p) for p in teacher.module.parameters()} & {id(p) for p in module.parameters()}
    assert all(m is not teacher.net for m in module.modules())
    adapters = {"distillation.adapters.0.weight", "distillation.adapters.0.bias"}
    keys = set(module.state_dict())
    assert keys - adapters == {k for k in keys if k.startswith("net.")}
    assert adapters <= keys
    # Student 16 channels -> teacher 24, 1x1.
    assert first_adapter(distillation_of(module)).weight.shape == (TEACHER_FEATURES, 16, 1, 1)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_output_distillation_from_a_0_255_teacher_equals_an_independent_computation(
    tmp_path: Path, criterion: str
):
    torch.manual_seed(1)
    official = RLFN(2).eval()  # works on 0..255, as its released weights do
    weights = tmp_path / "rlfn_x2.pth"
    torch.save(official.state_dict(), weights)
    teacher = {"model": "rlfn", "pretrained": str(weights), "weight": 0.5, "criterion": criterion}
    module = distilling_module(teacher)
    lr = torch.rand(2, 3, 12, 12)
    sr = module.run_net(lr)
    loss = distillation_of(module)(lr, sr, {})
    with torch.no_grad():
        teacher_sr = official(lr * 255.0) / 255.0
    distance = F.l1_loss if criterion == "l1" else F.mse_loss
    expected = distance(sr, teacher_sr)
    torch.testing.assert_close(distillation_of(module).last["distill_output"], expected.detach())
    torch.testing.assert_close(loss, 0.5 * expected)
    assert "distill_feature" not in distillation_of(module).last


def test_capture_features_records_the_named_layer_and_leaves_no_hook():
    net = EDSR(2, num_blocks=2, num_features=8).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        with capture_features(net, ["body.1"]) as captured:
            net(x)
        expected = edsr_features(net, x, blocks=2)
    assert len(captured["body.1"]) == 1
    torch.testing.assert_close(captured["body.1"][0], expected)
    assert not net.body[1]._forward_hooks


def test_feature_distillation_equals_an_independent_computation(teacher_ckpt: Path):
    module = distilling_module({"ckpt_path": str(teacher_ckpt), "weight": 0, "features": [PAIR]})
    distillation = distillation_of(module)
    lr = torch.rand(2, 3, 12, 12)
    with capture_features(module.net, distillation.student_layers) as features:
        sr = module.run_net(lr)
    loss = distillation(lr, sr, features)

    teacher = module_from_checkpoint(teacher_ckpt)  # loaded on its own
    with torch.no_grad():
        teacher_feature = edsr_features(teacher.net, lr, blocks=2)
    student_feature = edsr_features(module.net, lr, blocks=1)
    adapted = first_adapter(distillation)(student_feature)
    expected = 0.5 * F.l1_loss(adapted, teacher_feature)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(distillation.last["distill_feature"], expected.detach())
    loss.backward()
    assert first_adapter(distillation).weight.grad is not None
    student: Any = module.net
    assert student.body[0].body[0].weight.grad is not None  # reaches the student's layer
    assert all(p.grad is None for p in distillation.teacher.module.parameters())


def fit_briefly(module: SRModule, steps: int) -> pl.Trainer:
    """Fit ``module`` for ``steps`` steps of random 8x8 -> 16x16 pairs, quietly, on the CPU."""
    torch.manual_seed(0)
    batches = [{"lr": torch.rand(2, 3, 8, 8), "hr": torch.rand(2, 3, 16, 16)} for _ in range(steps)]
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(cast(Any, batches), batch_size=None))
    return trainer


def test_a_student_whose_teacher_was_not_attached_refuses_to_fit(teacher_ckpt: Path):
    """The module checks ``model.teacher`` but loads no teacher: src.models.teachers does."""
    module = edsr_module(teacher={"ckpt_path": str(teacher_ckpt), "features": [PAIR]})
    assert module.teacher_spec is not None and module.distillation is None
    with pytest.raises(UserError, match="is set but no teacher was loaded"):
        fit_briefly(module, steps=1)
    assert attach_teacher(edsr_module()) is None  # no teacher named: nothing to attach


def test_fit_runs_the_teacher_once_a_step_and_trains_the_adapters(teacher_ckpt: Path):
    module = distilling_module(
        {"ckpt_path": str(teacher_ckpt), "features": [PAIR]},
        optimizer=functools.partial(torch.optim.Adam, lr=1e-2),
    )
    distillation = distillation_of(module)
    calls: list[int] = []
    distillation.teacher.net.register_forward_pre_hook(lambda *_: calls.append(1))
    before = first_adapter(distillation).weight.detach().clone()
    teacher_before = {k: v.clone() for k, v in distillation.teacher.module.state_dict().items()}
    trainer = fit_briefly(module, steps=3)
    assert len(calls) == 3  # one teacher pass a step, for the output and the feature term
    assert not torch.equal(first_adapter(distillation).weight, before)
    assert not distillation.teacher.module.training  # after Lightning's .train()
    for key, value in distillation.teacher.module.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert {id(p) for p in distillation.adapters.parameters()} <= optimised


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_teacher_follows_the_student_to_the_gpu(teacher_ckpt: Path):
    module = distilling_module({"ckpt_path": str(teacher_ckpt), "features": [PAIR]}).cuda()
    distillation = distillation_of(module)
    module.on_fit_start()
    assert distillation.teacher.module.device == module.device
    lr = torch.rand(2, 3, 8, 8, device=module.device)
    with capture_features(module.net, distillation.student_layers) as features:
        sr = module.run_net(lr)
    assert torch.isfinite(distillation(lr, sr, features))


# --- python -m src.train ----------------------------------------------------------------------
def train_args(folder: Path, *extra: str) -> list[str]:
    return [
        *TINY,
        "scale=2",
        "data=folder",
        f"data.root={folder}",
        "trainer.log_every_n_steps=1",
        *extra,
    ]


def network_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_train_distils_in_bf16_with_ema_and_eval_needs_no_teacher(
    folder: Path, teacher_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    args = train_args(
        folder,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.precision=bf16-mixed",
        "model.ema_decay=0.5",
        f"model.teacher.ckpt_path={teacher_ckpt}",
        PAIR_OVERRIDE,
    )
    trained = run_in_process("train", args, tmp_path, capsys)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_dir = tmp_path / "run"
    for term in ("train/loss_distill_output", "train/loss_distill_feature"):
        assert last_logged(run_dir, term) > 0
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    prefixes = ("net.", "ema.", "distillation.adapters.0.")
    assert all(key.startswith(prefixes) for key in saved["state_dict"]), list(saved["state_dict"])
    assert not any(k.startswith("ema.module.distillation") for k in saved["state_dict"])
    teacher_count = sum(v.numel() for v in network_weights(teacher_ckpt).values())
    student_count = sum(v.numel() for k, v in saved["state_dict"].items() if k.startswith("net."))
    assert teacher_count > student_count  # a teacher's weights would be noticed
    assert saved["srlab"]["model_config"]["teacher"]["ckpt_path"] == str(teacher_ckpt)

    teacher_ckpt.unlink()  # eval rebuilds the student alone
    evaluated = run_in_process(
        "eval",
        [f"ckpt_path={checkpoint}", "data=folder", f"data.root={folder}", "comparisons=0"],
        tmp_path / "eval",
        capsys,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]


@pytest.mark.slow
def test_a_resumed_distillation_run_equals_an_uninterrupted_one(
    folder: Path, teacher_ckpt: Path, tmp_path: Path
):
    common = [
        "trainer.val_check_interval=2",
        "trainer.deterministic=true",
        "trainer.precision=32",
        "model.ema_decay=0.5",
        "scheduler=constant",
        f"model.teacher.ckpt_path={teacher_ckpt}",
        PAIR_OVERRIDE,
    ]

    def train(run: str, *extra: str) -> dict[str, torch.Tensor]:
        args = train_args(folder, *common, f"hydra.run.dir={tmp_path / run}", *extra)
        result = run_module("src.train", args, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return network_weights(tmp_path / run / "checkpoints" / "last.ckpt")

    whole = train("whole", "trainer.max_steps=4")
    train("first", "trainer.max_steps=2")
    first_half = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train("resumed", "trainer.max_steps=4", f"ckpt_path={first_half}")
    assert whole.keys() == resumed.keys()
    assert any(key.startswith("distillation.") for key in whole)
    for key, value in whole.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_distillation_trains_under_ddp_on_cpu(folder: Path, teacher_ckpt: Path, tmp_path: Path):
    log_dir = tmp_path / "outputs"
    args = train_args(
        folder,
        "trainer=ddp_cpu",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"paths.log_dir={log_dir}",
        f"model.teacher.ckpt_path={teacher_ckpt}",
        PAIR_OVERRIDE,
    )
    result = run_module("src.train", args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    assert last_logged(run_dir, "train/loss_distill_feature") > 0
    state = network_weights(run_dir / "checkpoints" / "last.ckpt")
    assert all(key.startswith(("net.", "distillation.")) for key in state), list(state)


# --- bad input ----------------------------------------------------------------------------------
BAD_INPUTS = {
    "missing-checkpoint": (["model.teacher.ckpt_path=/no/such/teacher.ckpt"], "not found"),
    "both-sources": (
        ["model.teacher.ckpt_path=<teacher>", "model.teacher.model=rlfn"],
        "not both",
    ),
    "model-without-weights": (["model.teacher.model=rlfn"], "model.teacher.pretrained="),
    "unknown-model": (
        ["model.teacher.model=rlfm", "model.teacher.pretrained=x.pth"],
        "model.teacher.model=rlfm: no such model config in conf/model (close: rlfn",
    ),
    "missing-weights": (
        ["model.teacher.model=rlfn", "model.teacher.pretrained=/no/such/rlfn.pth"],
        "model.teacher.pretrained=/no/such/rlfn.pth: no such file",
    ),
    "unknown-student-layer": (
        [
            "model.teacher.ckpt_path=<teacher>",
            "model.teacher.features=[{student:body.7,teacher:body.1}]",
        ],
        "model.teacher.features[0].student='body.7': the student's network (EDSR) has no module "
        "so named; close names: body.2, body.1, body.0",
    ),
    "unknown-teacher-layer": (
        [
            "model.teacher.ckpt_path=<teacher>",
            "model.teacher.features=[{student:body.0,teacher:bdy}]",
        ],
        "model.teacher.features[0].teacher='bdy': the teacher's network (EDSR)",
    ),
    "wrong-scale": (
        ["model.teacher.ckpt_path=<teacher_x4>"],
        "model.teacher.ckpt_path: the teacher is x4, the student x2",
    ),
    "negative-weight": (
        ["model.teacher.ckpt_path=<teacher>", "model.teacher.weight=-1"],
        "model.teacher.weight must be a number >= 0",
    ),
    "negative-pair-weight": (
        [
            "model.teacher.ckpt_path=<teacher>",
            "model.teacher.features=[{student:body.0,teacher:body.1,weight:-2}]",
        ],
        "model.teacher.features[0].weight must be a number >= 0, got -2",
    ),
    "unknown-pair-key": (
        [
            "model.teacher.ckpt_path=<teacher>",
            "model.teacher.features=[{student:body.0,teacher:body.1,wieght:1}]",
        ],
        "unknown key model.teacher.features.wieght",
    ),
    "bad-criterion": (["model.teacher.criterion=l3"], "model.teacher.criterion must be one of"),
    "features-without-teacher": ([PAIR_OVERRIDE], "model.teacher.features needs a teacher"),
    "nothing-to-distil": (
        ["model.teacher.ckpt_path=<teacher>", "model.teacher.weight=0"],
        "nothing to distil",
    ),
    "compiled-student": (
        ["model.teacher.ckpt_path=<teacher>", PAIR_OVERRIDE, "model.compile=true"],
        "torch.compile",
    ),
    "gan-module": (
        ["model._target_=src.models.gan_module.GANModule", "model.teacher.ckpt_path=<teacher>"],
        "model.teacher: distillation is for PSNR training",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_teacher_settings_give_one_error_line(
    case: str,
    folder: Path,
    teacher_ckpt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    overrides, expected = BAD_INPUTS[case]
    teacher_x4 = write_checkpoint(tmp_path / "teacher_x4.ckpt", edsr_module(scale=4))
    paths = {"<teacher>": teacher_ckpt, "<teacher_x4>": teacher_x4}
    for token, path in paths.items():
        overrides = [override.replace(token, str(path)) for override in overrides]
    args = train_args(folder, "trainer.max_steps=1", *overrides)
    outcome = run_in_process("train", args, tmp_path, capsys)
    line = one_error_line(outcome)  # type: ignore[arg-type]
    assert expected in line, line
