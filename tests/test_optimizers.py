"""The optimisers and schedules of conf/optimizer and conf/scheduler (src/models/optimizers.py).

Each one trains a tiny network, resumes exactly from its saved state, and refuses bad settings
with one ``error:`` line. Schedule-free training is followed through Lightning: validated,
saved and averaged (EMA) at x, trained at y, resumed exactly; Prodigy's step size is logged.
"""

from __future__ import annotations

import csv
import itertools
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytest
import pytorch_lightning as pl
import schedulefree
import torch
from omegaconf import DictConfig, ListConfig
from torch import nn

from src.models.checkpoint import module_from_checkpoint
from src.models.optimizers import (
    TRAIN_POINT,
    check_combinations,
    is_schedule_free,
    warmup_cosine,
    warmup_stable_decay,
)
from src.models.sr_module import SRModule
from src.models.targets import allowed_targets, targets_in
from src.train import build, train
from src.utils.errors import UserError
from tests.helpers import TINY, compose_config, one_error_line, run_in_process, tiny_folder_run
from tests.test_data import write_folder

OPTIMIZERS = ["adamw_schedulefree", "adan", "soap", "adopt", "lion", "prodigy"]
SCHEDULERS = ["warmup_cosine", "wsd"]
RECIPES = [*(f"optimizer={o}" for o in OPTIMIZERS), *(f"scheduler={s}" for s in SCHEDULERS)]
STEPS = 60
# Phases of 4-step runs resumed at step 2: a warm-up that ends after it, a decay that spans it.
RESUME_PHASES = {
    "optimizer=adamw_schedulefree": ["model.optimizer.warmup_steps=3"],
    "scheduler=warmup_cosine": ["model.scheduler.warmup_fraction=0.25"],
    "scheduler=wsd": ["model.scheduler.warmup_fraction=0.25", "model.scheduler.decay_fraction=0.5"],
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("optimizers") / "hr"
    write_folder(path, 4, height=48, width=48)
    return path


def composed(*overrides: str) -> Any:
    return compose_config("train", [*TINY, *overrides], Path(tempfile.mkdtemp()))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


def regression_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and the outputs of a random convolution: a target the tiny network can reach."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        inputs = torch.rand(4, 3, 16, 16)
        teacher = nn.Conv2d(3, 3, 3, padding=1)
        with torch.no_grad():
            return inputs, teacher(inputs)


def build_recipe(recipe: str, net: nn.Module, steps: int) -> tuple[Any, Any]:
    """The optimiser (Adam unless the recipe names one) and scheduler (none unless it names one)
    a recipe's config builds for ``net``, over ``steps`` steps."""
    cfg = composed(recipe, f"trainer.max_steps={steps}")
    optimizer = hydra.utils.instantiate(cfg.model.optimizer)(params=net.parameters())
    scheduler = None
    if recipe.startswith("scheduler="):
        scheduler = hydra.utils.instantiate(cfg.model.scheduler)(optimizer=optimizer)
    if is_schedule_free(optimizer):
        optimizer.train()
    return optimizer, scheduler


def train_steps(net: nn.Module, optimizer: Any, scheduler: Any, steps: int) -> list[float]:
    inputs, target = regression_batch()
    losses = []
    for _ in range(steps):
        loss = (net(inputs) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


# --- each one trains, resumes exactly, is stored in checkpoints ------------------------------
@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_trains_a_tiny_network(recipe: str):
    net = tiny_net()
    optimizer, scheduler = build_recipe(recipe, net, STEPS)
    losses = train_steps(net, optimizer, scheduler, STEPS)
    if is_schedule_free(optimizer):
        optimizer.eval()  # the averaged weights x are the model
    inputs, target = regression_batch()
    with torch.no_grad():
        final = (net(inputs) - target).abs().mean().item()
    # One fixed batch, no noise: any fall is the optimiser's. Lion and SOAP at their SR rates
    # are the slowest (about 5% and 7% in 60 steps).
    assert final < 0.97 * losses[0], (recipe, losses[0], final)


def assert_same_state(one: Any, other: Any, where: str = "") -> None:
    """Equal nested state (tensors bit for bit)."""
    if isinstance(one, torch.Tensor):
        assert torch.equal(one, other), where
    elif isinstance(one, dict):
        assert one.keys() == other.keys(), where
        for key in one:
            assert_same_state(one[key], other[key], f"{where}.{key}")
    elif isinstance(one, list | tuple):
        assert len(one) == len(other), where
        for i, (a, b) in enumerate(zip(one, other, strict=True)):
            assert_same_state(a, b, f"{where}[{i}]")
    else:
        assert one == other or (one != one and other != other), (where, one, other)  # NaN


def group_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's settings, without its parameters."""
    return [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_is_stored_in_the_model_config_and_rebuilt(recipe: str):
    module = hydra.utils.instantiate(composed(recipe).model)
    config = module.stored_config()
    assert config is not None
    assert set(targets_in(config)) <= allowed_targets()
    rebuilt = hydra.utils.instantiate(config)  # what src.eval does with a checkpoint's config
    assert rebuilt.model_config == module.model_config
    optimizer = rebuilt.optimizer_factory(params=rebuilt.net.parameters())
    original = module.optimizer_factory(params=module.net.parameters())
    assert type(optimizer) is type(original)
    # The same settings, as plain Python values (some optimisers test for a tuple or list, and
    # an OmegaConf container passed on would be stored in their state).
    settings = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    assert settings == [
        {k: v for k, v in g.items() if k != "params"} for g in original.param_groups
    ]
    for group in settings:
        for key, value in group.items():
            assert not isinstance(value, DictConfig | ListConfig), (recipe, key, type(value))
    assert rebuilt.scheduler_factory(optimizer=optimizer) is not None


# --- the schedules ---------------------------------------------------------------------------
def rates(scheduler: Any, steps: int) -> list[list[float]]:
    """The learning rate of each group at each of ``steps`` steps (1-based order)."""
    seen = []
    for _ in range(steps):
        seen.append(scheduler.get_last_lr())
        scheduler.optimizer.step()
        scheduler.step()
    return seen


def two_groups() -> torch.optim.Optimizer:
    first, second = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [first]}, {"params": [second], "lr": 0.1}], lr=1.0)


def test_warmup_cosine_warms_up_linearly_then_follows_the_cosine_to_its_floor():
    seen = rates(warmup_cosine(two_groups(), 100, warmup_fraction=0.1, min_lr_ratio=0.2), 100)
    assert seen[0] == pytest.approx([0.1, 0.01])  # step 1 of a 10-step warm-up
    assert seen[4] == pytest.approx([0.5, 0.05])
    assert seen[9] == pytest.approx([1.0, 0.1])  # the peak at the warm-up's last step
    # Cosine over the 90 steps after it: half way (step 55) at the mean of peak and floor.
    assert seen[54][0] == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert seen[54][0] == pytest.approx(0.6)
    assert seen[99] == pytest.approx([0.2, 0.02])  # the floor at the last step
    assert all(a[0] >= b[0] for a, b in itertools.pairwise(seen[9:]))


@pytest.mark.parametrize("shape", ["sqrt", "linear"])
def test_wsd_warms_up_holds_then_decays_over_the_last_fraction(shape: str):
    scheduler = warmup_stable_decay(
        two_groups(), 100, warmup_fraction=0.1, decay_fraction=0.2, decay_shape=shape
    )
    seen = [group[0] for group in rates(scheduler, 100)]
    assert seen[0] == pytest.approx(0.1) and seen[9] == pytest.approx(1.0)
    assert seen[10:80] == pytest.approx([1.0] * 70)  # stable until the last 20 steps
    progress = 10 / 20  # step 90 of the decay over steps 81..100
    expected = 1 - (math.sqrt(progress) if shape == "sqrt" else progress)
    assert seen[89] == pytest.approx(expected)
    assert seen[99] == pytest.approx(0.0)


def test_schedules_refuse_bad_settings_naming_the_argument():
    optimizer = two_groups()
    with pytest.raises(ValueError, match="warmup_fraction must be a number >= 0 and < 1"):
        warmup_cosine(optimizer, 10, warmup_fraction=1.0)
    with pytest.raises(ValueError, match="must be at most 1: the warm-up and the decay"):
        warmup_stable_decay(optimizer, 10, warmup_fraction=0.5, decay_fraction=0.6)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        warmup_cosine(optimizer, 0)


# --- schedule-free through Lightning ---------------------------------------------------------
class Probe(pl.Callback):
    """Records the network's weights while validating and at the next training batch."""

    def __init__(self) -> None:
        self.validated: list[dict[str, torch.Tensor]] = []
        self.kept: list[dict[int, torch.Tensor]] = []
        self.trained_after: list[tuple[bool, list[torch.Tensor]]] = []
        self.pending = False  # a validation ran; the next training batch is recorded

    def on_validation_batch_start(
        self, trainer: Any, module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx:
            return
        self.validated.append({k: v.clone() for k, v in module.net.state_dict().items()})
        optimizer = trainer.optimizers[0]
        self.kept.append({i: optimizer.state[p][TRAIN_POINT].clone() for i, p in params(module)})
        self.pending = True

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if self.pending:
            self.pending = False
            optimizer = trainer.optimizers[0]
            weights = [p.detach().clone() for _, p in params(module)]
            self.trained_after.append((optimizer.param_groups[0]["train_mode"], weights))


def params(module: Any) -> list[tuple[int, torch.Tensor]]:
    return list(enumerate(module.net.parameters()))


def schedule_free_args(folder: Path, *extra: str) -> list[str]:
    return [
        *tiny_folder_run(folder),
        "optimizer=adamw_schedulefree",
        "model.optimizer.warmup_steps=2",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.deterministic=true",
        *extra,
    ]


def test_schedule_free_validates_saves_and_averages_x_and_trains_at_y(folder: Path, tmp_path):
    cfg = compose_config(
        "train", schedule_free_args(folder, "model.ema_decay=1e-6"), tmp_path / "run"
    )
    pl.seed_everything(cfg.seed)
    datamodule, module, trainer = build(cfg)
    probe = Probe()
    trainer.callbacks.append(probe)
    trainer.fit(module, datamodule=datamodule)

    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    saved = {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    assert len(probe.validated) == 2  # steps 2 and 4
    # What validation scored is what the checkpoint written after it holds: x.
    assert_same_state(probe.validated[-1], saved, "validated")
    state = checkpoint["optimizer_states"][0]
    assert state["param_groups"][0]["train_mode"] is False  # saved in eval mode
    beta1 = state["param_groups"][0]["betas"][0]
    names = [name for name, _ in module.net.named_parameters()]
    for index, name in enumerate(names):
        x, z, y = saved[name], state["state"][index]["z"], state["state"][index][TRAIN_POINT]
        # The paper's interpolation, y = (1 - beta1) z + beta1 x: the saved x is the average.
        torch.testing.assert_close(y, (1 - beta1) * z + beta1 * x, rtol=0, atol=1e-6)
    assert any(
        not torch.equal(saved[n], state["state"][i][TRAIN_POINT]) for i, n in enumerate(names)
    )
    # The EMA (decay 1e-6: the latest weights it was given) averages x, not y.
    ema = {
        k[len("ema.module.") :]: v for k, v in checkpoint["state_dict"].items() if "ema.module" in k
    }
    for name in names:
        torch.testing.assert_close(ema[name], saved[name], rtol=0, atol=1e-5)
    # After validation at step 2 training went on in train mode at exactly the y it had left.
    in_train_mode, weights = probe.trained_after[0]
    assert in_train_mode
    for index, weight in enumerate(weights):
        assert torch.equal(weight, probe.kept[0][index])
    # The module keeps x after fit.
    for name, parameter in module.net.named_parameters():
        assert torch.equal(parameter.detach(), saved[name]), name


def network_and_optimizer(checkpoint: Path) -> dict[str, Any]:
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {key: loaded[key] for key in ("state_dict", "optimizer_states", "lr_schedulers")}


def whole_and_resumed(folder: Path, tmp_path: Path, *extra: str) -> tuple[dict, dict, Path]:
    """A 4-step run that keeps every checkpoint, and a run resumed from its step-2 checkpoint;
    the state each ends with, and the resumed run's checkpoint."""
    args = [
        *tiny_folder_run(folder),
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.deterministic=true",
        "model.ema_decay=0.5",
        "callbacks.last_checkpoint.save_top_k=-1",
        *extra,
    ]
    train(compose_config("train", args, tmp_path / "whole"))
    (halfway,) = (tmp_path / "whole" / "checkpoints").glob("*step=2.ckpt")
    train(compose_config("train", [*args, f"ckpt_path='{halfway}'"], tmp_path / "resumed"))
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    whole = network_and_optimizer(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    return whole, network_and_optimizer(last), last


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_resumed_run_equals_an_uninterrupted_one(folder: Path, tmp_path: Path, recipe: str):
    extra = RESUME_PHASES.get(recipe, [])
    whole, resumed, checkpoint = whole_and_resumed(folder, tmp_path, recipe, *extra)
    assert_same_state(resumed, whole, "checkpoint")  # weights, EMA, optimiser and schedule
    module = module_from_checkpoint(checkpoint)  # src.eval's loader
    group = recipe.split("=")[0]
    expected = composed(recipe).model[group]._target_
    assert module.model_config is not None and module.model_config[group]["_target_"] == expected


def test_prodigy_logs_its_step_size(folder: Path, tmp_path: Path):
    args = [
        *tiny_folder_run(folder),
        "optimizer=prodigy",
        "scheduler=constant",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=1",
    ]
    train(compose_config("train", args, tmp_path / "run"))
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    sizes = [float(r["train/prodigy_step_size"]) for r in rows if r["train/prodigy_step_size"]]
    assert len(sizes) == 3
    assert sizes[0] > 1e-6 * 0.999 and sizes == sorted(sizes) and sizes[-1] > sizes[0]
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    group = checkpoint["optimizer_states"][0]["param_groups"][0]
    assert sizes[-1] == pytest.approx(group["d"] * group["lr"], rel=1e-6)


# --- combinations and bad settings -----------------------------------------------------------
def test_schedule_free_chooses_a_constant_schedule_and_warns_about_a_decaying_one():
    assert composed("optimizer=adamw_schedulefree").model.scheduler._target_.endswith("ConstantLR")
    chosen = composed("optimizer=adamw_schedulefree", "scheduler=cosine")
    assert chosen.model.scheduler._target_.endswith("CosineAnnealingLR")
    net = tiny_net()
    optimizer = schedulefree.AdamWScheduleFree(net.parameters())
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    with pytest.warns(UserWarning, match="AdamWScheduleFree is schedule-free.*CosineAnnealingLR"):
        check_combinations([optimizer], [cosine], net)
    constant = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    with pytest.warns(UserWarning, match="BatchNorm"):
        check_combinations([optimizer], [constant], nn.Sequential(nn.BatchNorm2d(3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_combinations([optimizer], [constant], net)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer=prodigy", "model.optimizer.d_coef=-1"],
            "model.optimizer.d_coef must be a number > 0, got -1",
        ),
        (
            ["optimizer=prodigy", "+model.optimizer.d_coeff=2"],
            "unknown key model.optimizer.d_coeff: Prodigy takes no such argument "
            "(did you mean d_coef?)",
        ),
        (
            ["optimizer=soap", "model.optimizer.precondition_frequency=0"],
            "model.optimizer.precondition_frequency must be an integer >= 1, got 0",
        ),
        (
            ["optimizer=adan", "model.optimizer.betas=[0.98,0.92,1.5]"],
            "model.optimizer.betas must be a list of a number >= 0 and < 1",
        ),
        (
            ["optimizer=adamw_schedulefree", "model.optimizer.warmup_steps=50"],
            "model.optimizer.warmup_steps (50) is longer than the run (trainer.max_steps=10)",
        ),
        (
            ["scheduler=warmup_cosine", "model.scheduler.warmup_fraction=1.5"],
            "model.scheduler.warmup_fraction must be a number >= 0 and < 1, got 1.5",
        ),
        (
            ["scheduler=wsd", "model.scheduler.decay_fraction=-0.1"],
            "model.scheduler.decay_fraction must be a number >= 0 and <= 1, got -0.1",
        ),
        (
            ["scheduler=wsd", "model.scheduler.warmup_fraction=0.9"],
            "model.scheduler.warmup_fraction (0.9) + model.scheduler.decay_fraction (0.2) must "
            "be at most 1",
        ),
        (
            ["scheduler=wsd", "model.scheduler.decay_shape=cubic"],
            "model.scheduler.decay_shape must be one of linear, sqrt, got 'cubic'",
        ),
        (
            ["scheduler=warmup_cosine", "model.scheduler.min_lr_ratio=2"],
            "model.scheduler.min_lr_ratio must be a number >= 0 and <= 1, got 2",
        ),
    ],
)
def test_bad_settings_give_one_error_line(
    overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    result = run_in_process("train", [*TINY, "trainer.max_steps=10", *overrides], tmp_path, capsys)
    assert message in one_error_line(result)


def test_a_schedule_built_in_python_refuses_bad_settings_naming_the_key():
    from src.models.sr_module import build_scheduler

    factory = hydra.utils.instantiate(composed("scheduler=wsd").model.scheduler)
    with pytest.raises(UserError, match=r"^model.scheduler: decay_fraction must be"):
        build_scheduler(
            lambda optimizer: factory(optimizer=optimizer, decay_fraction=3.0),
            two_groups(),
            "model.scheduler",
        )


def test_sr_module_without_a_trainer_has_no_fit_optimizers():
    module = SRModule(tiny_net(), scale=1)
    assert module.fit_optimizers() == []


def test_a_gan_generator_trains_schedule_free_and_is_saved_at_x(tmp_path: Path):
    from tests.test_gan import recipe_args

    run_dir = tmp_path / "run"
    args = recipe_args("realesrgan_compact_x4", run_dir, steps=2)
    train(compose_config("train", [*args, "optimizer=adamw_schedulefree"], run_dir))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    generator, critic = checkpoint["optimizer_states"]
    assert generator["param_groups"][0]["train_mode"] is False
    assert TRAIN_POINT in generator["state"][0]
    assert "train_mode" not in critic["param_groups"][0]  # the critic keeps its Adam
    module = module_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the generator
    beta1 = generator["param_groups"][0]["betas"][0]
    for index, (name, _) in enumerate(module.net.named_parameters()):
        x, state = checkpoint["state_dict"][f"net.{name}"], generator["state"][index]
        expected_y = (1 - beta1) * state["z"] + beta1 * x
        torch.testing.assert_close(state[TRAIN_POINT], expected_y, rtol=0, atol=1e-6)
