"""Sweeps: grids, Optuna searches, parallel and cluster launchers, failed runs, the leaderboard.

Every sweep runs ``python -m src.train -m ...`` in a subprocess with a timeout, on a 2-block EDSR
and a few small generated images, 2-3 steps per run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from datetime import datetime
from itertools import product
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from src.leaderboard import collect_runs
from src.leaderboard import main as leaderboard_main
from src.utils.sweep import (
    NonFiniteObjectiveError,
    SweepConfigError,
    run_tracked,
    run_trial,
    sweepable,
)
from tests.helpers import compose_config, run_module, tiny_folder_run
from tests.test_data import write_folder

SWEEP_TIMEOUT = 240


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small photos: four to train on, two held out for validation (x2 and x4)."""
    folder = tmp_path_factory.mktemp("images")
    write_folder(folder, 6, height=64, width=72)
    return folder


def sweep(sweep_dir: Path, images: Path, *args: str, steps: int = 2) -> str:
    """Run a multirun of tiny trainings into ``sweep_dir``; return its output."""
    result = run_module(
        "src.train",
        [
            "-m",
            *tiny_folder_run(images),
            f"trainer.max_steps={steps}",
            f"hydra.sweep.dir={sweep_dir}",
            *args,
        ],
        timeout=SWEEP_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def best_logged_psnr(run_dir: Path) -> float:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return max(float(row["val/psnr_y"]) for row in rows if row.get("val/psnr_y"))


def overrides_of(run_dir: Path) -> dict[str, str]:
    overrides = OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
    return dict(str(o).split("=", 1) for o in overrides)


def leaderboard_csv(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "leaderboard.csv").open()))


def json_of(path: Path) -> dict:
    return json.loads(path.read_text())


# --- fast, in-process ----------------------------------------------------------------------------
def test_wandb_name_and_group_follow_the_sweep(tmp_path: Path):
    cfg = compose_config("train", ["logger=wandb"], tmp_path)
    assert cfg.logger.wandb.group == "" and cfg.logger.wandb.name == "train-edsr-x2"

    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.sweep.dir = str(tmp_path / "multiruns" / "2026-01-02_03-04-05")
        cfg.hydra.job.num = 3
        cfg.hydra.job.override_dirname = "model.optimizer.lr=0.0001,scale=2"
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == "2026-01-02_03-04-05"
    assert cfg.logger.wandb.name == "train-edsr-x2 #3 model.optimizer.lr=0.0001,scale=2"


def test_optuna_search_config_composes(tmp_path: Path):
    cfg = compose_config("train", ["hparams_search=edsr_optuna"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert set(sweeper.params) == {
        "model.optimizer.lr",
        "data.batch_size",
        "model.net.num_blocks",
        "model.net.num_features",
        "loss",
    }
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"


LAUNCHERS = {
    "parallel": ("hydra_joblib_launcher", "JoblibLauncher"),
    "joblib": ("hydra_joblib_launcher", "JoblibLauncher"),
    "slurm": ("hydra_submitit_launcher", "SlurmLauncher"),
    "submitit_local": ("hydra_submitit_launcher", "LocalLauncher"),
    "ray_cluster": ("hydra_ray_launcher", "RayLauncher"),
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launcher_configs_compose_without_a_cluster(launcher: str, tmp_path: Path):
    plugin, class_name = LAUNCHERS[launcher]
    if importlib.util.find_spec(f"hydra_plugins.{plugin}") is None:
        pytest.skip(
            f"hydra/launcher={launcher} needs the {plugin.replace('_', '-')} plugin, which is not "
            "installed (pip install 'hydra-ray-launcher>=1.2.2,<1.3'); its config extends the "
            "plugin's own and cannot compose without it"
        )
    cfg = compose_config("train", [f"hydra/launcher={launcher}"], tmp_path)
    node = cfg.hydra.launcher
    assert node._target_.endswith(f".{class_name}")
    resolved = OmegaConf.to_container(node, resolve=True)  # every interpolation resolves
    assert isinstance(resolved, dict)
    if launcher == "parallel":
        assert node.n_jobs == 2
    if launcher == "slurm":
        assert node.tasks_per_node == 1 and str(resolved["submitit_folder"]).endswith("/%j")
    if launcher == "ray_cluster":
        assert "address" in node.ray.init


def test_run_trial_records_failures_and_returns_none(tmp_path: Path):
    def diverged() -> float:
        raise FloatingPointError("loss is nan")

    assert run_trial(diverged, tmp_path / "a") is None
    failed = json_of(tmp_path / "a" / "failed.json")
    assert failed["error"] == "FloatingPointError" and failed["message"] == "loss is nan"
    assert "Traceback" in failed["traceback"]
    assert json_of(tmp_path / "a" / "run.json")["status"] == "failed"

    assert run_trial(lambda: math.nan, tmp_path / "b") is None
    assert json_of(tmp_path / "b" / "failed.json")["error"] == NonFiniteObjectiveError.__name__

    assert run_trial(lambda: 31.5, tmp_path / "c") == 31.5
    record = json_of(tmp_path / "c" / "run.json")
    assert record["status"] == "completed" and record["objective"] == 31.5
    assert not (tmp_path / "c" / "failed.json").exists()


def test_a_single_run_still_raises(tmp_path: Path):
    def broken() -> float:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        run_tracked(broken, tmp_path)
    assert json_of(tmp_path / "failed.json")["message"] == "bad"
    assert json_of(tmp_path / "run.json")["status"] == "failed"


def test_sweeps_refuse_a_strategy_that_relaunches_the_command(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    with pytest.raises(SweepConfigError, match="ddp_spawn"):
        sweepable(compose_config("train", ["trainer=ddp_cpu"], tmp_path))
    spawn = compose_config("train", ["trainer=ddp_cpu", "trainer.strategy=ddp_spawn"], tmp_path)
    assert sweepable(spawn) is spawn
    assert sweepable(compose_config("train", ["trainer=cpu"], tmp_path)) is not None
    monkeypatch.setenv("SLURM_NTASKS", "2")  # ranks started by the cluster: no relaunch
    assert sweepable(compose_config("train", ["trainer=ddp_cpu"], tmp_path)) is not None


def fake_run(
    folder: Path, overrides: list[str], rows: list[dict[str, object]], **record: object
) -> None:
    """A run folder as src.train leaves it, without training: the parameter count is the one
    logged at the start (hparams.yaml), the saved config is not rebuilt."""
    from src.archs.edsr import EDSR
    from src.utils.complexity import count_parameters

    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), folder / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"scale": 2}), folder / ".hydra" / "config.yaml")
    params = count_parameters(EDSR(scale=2, num_blocks=2, num_features=16))
    OmegaConf.save(OmegaConf.create({"model/params": params}), folder / "hparams.yaml")
    if rows:
        columns = sorted({key for row in rows for key in row})
        with (folder / "metrics.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    if record:
        (folder / "run.json").write_text(json.dumps(record))


def test_leaderboard_of_a_folder(tmp_path: Path, capsys):
    from src.archs.edsr import EDSR
    from src.utils.complexity import count_parameters

    def scores(step: int, psnr: float, ssim: float, set5: float) -> dict[str, object]:
        return {
            "step": step,
            "val/psnr_y": psnr,
            "val/ssim_y": ssim,
            "val/Set5/psnr_y": set5,
            "val/Set5/ssim_y": 0.5,
            "val/Set14/psnr_y": 2 * psnr - set5,
            "val/Set14/ssim_y": 0.6,
        }

    fake_run(
        tmp_path / "0",
        ["seed=1", "model.optimizer.lr=1e-4"],
        [{"step": 4, "train/loss": 0.1}, scores(9, 30.0, 0.80, 31.0), scores(19, 29.0, 0.79, 32.0)],
        status="completed",
        seconds=12.5,
    )
    fake_run(
        tmp_path / "1",
        ["seed=1", "model.optimizer.lr=2e-4"],
        [scores(9, 31.0, 0.85, 30.0)],
        status="completed",
        seconds=3.0,
    )
    fake_run(tmp_path / "2", ["seed=1", "model.optimizer.lr=1e9"], [], status="failed")
    (tmp_path / "2" / "failed.json").write_text(
        json.dumps({"error": "NonFiniteLossError", "message": "the training loss is nan"})
    )

    assert leaderboard_main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Shared overrides: `seed=1`" in printed
    runs = collect_runs(tmp_path)
    assert [(r.name, r.status) for r in runs] == [
        ("1", "completed"),
        ("0", "completed"),
        ("2", "failed"),
    ]
    best = runs[1]
    assert best.best is not None and (best.best.psnr_y, best.best.ssim_y) == (30.0, 0.80)
    assert best.sets["Set5"].psnr_y == 32.0 and best.steps == 20 and best.seconds == 12.5
    assert best.params == count_parameters(EDSR(scale=2, num_blocks=2, num_features=16))
    assert "NonFiniteLossError" in runs[2].error

    rows = leaderboard_csv(tmp_path)
    assert [row["run"] for row in rows] == ["1", "0", "2"]
    assert rows[2]["status"] == "failed" and rows[2]["psnr_y"] == ""
    assert {"Set5/psnr_y", "Set14/ssim_y"} <= set(rows[0])
    assert (tmp_path / "leaderboard.md").read_text() in printed
    assert (tmp_path / "leaderboard.png").stat().st_size > 1000


def test_leaderboard_of_an_empty_folder_is_an_error(tmp_path: Path, capsys):
    assert leaderboard_main([str(tmp_path)]) == 2
    assert "no training runs" in capsys.readouterr().err


# --- sweeps in subprocesses --------------------------------------------------------------------
def test_grid_sweep_runs_every_combination(images: Path, tmp_path: Path):
    sweep_dir = tmp_path / "grid"
    sweep(sweep_dir, images, "scale=2,4", "model.optimizer.lr=1e-4,2e-4")

    run_dirs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in run_dirs] == ["0", "1", "2", "3"]
    combinations = set()
    for run_dir in run_dirs:
        overrides = overrides_of(run_dir)
        combinations.add((overrides["scale"], float(overrides["model.optimizer.lr"])))
        assert (run_dir / "checkpoints" / "best.ckpt").is_file()
        assert json_of(run_dir / "run.json")["status"] == "completed"
    assert combinations == set(product(["2", "4"], [1e-4, 2e-4]))

    rows = leaderboard_csv(sweep_dir)  # written by the end-of-sweep callback
    assert sorted(row["run"] for row in rows) == ["0", "1", "2", "3"]
    psnrs = [float(row["psnr_y"]) for row in rows]
    assert psnrs == sorted(psnrs, reverse=True)
    for row in rows:
        run_dir = sweep_dir / row["run"]
        assert float(row["psnr_y"]) == pytest.approx(best_logged_psnr(run_dir))
        assert row["status"] == "completed" and row["steps"] == "2"
        assert f"scale={overrides_of(run_dir)['scale']}" in row["overrides"]
    params = {overrides_of(sweep_dir / r["run"])["scale"]: int(r["params"]) for r in rows}
    assert params["2"] < params["4"]  # the x4 upsampler has one more stage
    assert (sweep_dir / "leaderboard.md").is_file() and (sweep_dir / "leaderboard.png").is_file()


def test_failing_runs_are_recorded_and_the_sweep_goes_on(images: Path, tmp_path: Path):
    sweep_dir = tmp_path / "failing"
    # A diverging learning rate (NaN loss) and an impossible width, beside a sound run.
    output = sweep(
        sweep_dir, images, "model.optimizer.lr=1e-4,1e30", "model.net.num_features=16,-3"
    )
    assert "the sweep goes on" in output
    assert json_of(sweep_dir / "0" / "run.json")["status"] == "completed"
    nan = json_of(sweep_dir / "1" / "failed.json")
    assert nan["error"] == "NonFiniteLossError" and "nan" in nan["message"]
    for job in ("2", "3"):
        bad = json_of(sweep_dir / job / "failed.json")
        assert bad["error"] == "RuntimeError" and "negative dimension" in bad["message"]
        assert bad["overrides"] == OmegaConf.to_container(
            OmegaConf.load(sweep_dir / job / ".hydra" / "overrides.yaml")
        )

    rows = leaderboard_csv(sweep_dir)
    assert [(row["run"], row["status"]) for row in rows] == [
        ("0", "completed"),
        ("1", "failed"),
        ("2", "failed"),
        ("3", "failed"),
    ]
    assert "NonFiniteLossError" in rows[1]["error"] and rows[1]["psnr_y"] == ""


def test_optuna_search(images: Path, tmp_path: Path):
    import optuna

    sweep_dir = tmp_path / "optuna"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    sweep(
        sweep_dir,
        images,
        "hparams_search=edsr_optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=test",
    )
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    # TINY fixes batch size, depth and width: learning rate and loss are searched.
    assert set(results.best_params) == {"model.optimizer.lr", "loss"}

    trials = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert [t["job"] for t in trials] == ["0", "1", "2"]
    assert all(t["state"] == "COMPLETE" for t in trials)
    assert results.best_value == pytest.approx(max(float(t["value"]) for t in trials))
    for trial in trials:
        run_dir = sweep_dir / trial["run"]
        assert float(trial["value"]) == pytest.approx(best_logged_psnr(run_dir))
        assert trial["loss"] == overrides_of(run_dir)["loss"]

    study = optuna.load_study(study_name="test", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.best_params == dict(results.best_params)
    assert len(leaderboard_csv(sweep_dir)) == 3


@pytest.mark.slow
def test_optuna_marks_a_failed_trial_and_goes_on(images: Path, tmp_path: Path):
    sweep_dir = tmp_path / "optuna_fail"
    sweep(
        sweep_dir,
        images,
        "hparams_search=edsr_optuna",
        "hydra.sweeper.n_trials=3",
        "model.optimizer.lr=choice(1e-4,1e30)",
    )
    trials = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert len(trials) == 3
    for trial in trials:
        diverges = float(trial["model.optimizer.lr"]) > 1
        assert trial["state"] == ("FAIL" if diverges else "COMPLETE")
        assert (sweep_dir / trial["run"] / "failed.json").is_file() == diverges
    # With the config's seed the sampler tries both learning rates within 3 trials.
    assert {t["state"] for t in trials} == {"FAIL", "COMPLETE"}
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_params["model.optimizer.lr"] == pytest.approx(1e-4)


@pytest.mark.slow
def test_joblib_runs_two_trials_at_once(images: Path, tmp_path: Path):
    sweep_dir = tmp_path / "parallel"
    # About 3 s of training per run: longer than the spread of the workers' start-up times.
    args = ("hydra/launcher=parallel", "model.optimizer.lr=1e-4,2e-4")
    sweep(sweep_dir, images, *args, steps=300)
    records = [json_of(sweep_dir / str(job) / "run.json") for job in (0, 1)]
    assert all(r["status"] == "completed" for r in records)
    assert records[0]["pid"] != records[1]["pid"]
    (start_a, end_a), (start_b, end_b) = [
        (datetime.fromisoformat(r["started"]), datetime.fromisoformat(r["finished"]))
        for r in records
    ]
    assert start_a < end_b and start_b < end_a, records  # the two runs overlapped in time


@pytest.mark.slow
def test_wandb_runs_of_a_sweep_are_grouped_and_named(images: Path, tmp_path: Path):
    from wandb.proto import wandb_internal_pb2

    from tests.wandb_reader import raw_records

    sweep_dir = tmp_path / "2026-01-02_03-04-05"
    sweep(sweep_dir, images, "logger=wandb", "model.optimizer.lr=1e-4,2e-4")
    for job in (0, 1):
        (run_file,) = (sweep_dir / str(job) / "wandb").glob("offline-run-*/run-*.wandb")
        record = wandb_internal_pb2.Record()
        runs = []
        for raw in raw_records(run_file):
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "run":
                runs.append((record.run.run_group, record.run.display_name))
        group, name = runs[0]
        assert group == sweep_dir.name
        assert name.startswith(f"train-edsr-x2 #{job} ") and "model.optimizer.lr=" in name


@pytest.mark.slow
def test_submitit_runs_a_sweep_as_jobs(images: Path, tmp_path: Path):
    """The submitit path of hydra/launcher=slurm, with the plugin's local executor."""
    sweep_dir = tmp_path / "submitit"
    sweep(sweep_dir, images, "hydra/launcher=submitit_local", "model.optimizer.lr=1e-4,1e30")
    assert (sweep_dir / ".submitit").is_dir()
    rows = leaderboard_csv(sweep_dir)
    assert [(row["run"], row["status"]) for row in rows] == [("0", "completed"), ("1", "failed")]


def test_the_leaderboard_reads_a_runs_steps_through_the_checkpoint_reader(tmp_path: Path):
    import torch

    from src.leaderboard import checkpoint_steps

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 7}, folder / "last.ckpt")
    assert checkpoint_steps(tmp_path) == 7
    (folder / "last.ckpt").write_bytes(b"not a checkpoint")
    assert checkpoint_steps(tmp_path) is None  # the logged steps are used instead


def test_leaderboard_over_seeds_gives_each_configs_mean_and_spread(tmp_path: Path, capsys):
    def validation(set5: float, set14: float) -> list[dict[str, object]]:
        overall = (set5 + set14) / 2
        row = {"step": 9, "val/psnr_y": overall, "val/ssim_y": 0.9}
        return [{**row, "val/Set5/psnr_y": set5, "val/Set14/psnr_y": set14}]

    values = {("adam", 1): (30.0, 28.0), ("adam", 2): (31.0, 28.5), ("adam", 3): (32.0, 29.0)}
    values |= {("prodigy", 1): (33.0, 30.0), ("prodigy", 2): (33.5, 30.5)}
    for job, ((optimizer, seed), (set5, set14)) in enumerate(values.items()):
        overrides = ["data=t91", f"optimizer={optimizer}", f"seed={seed}"]
        fake_run(tmp_path / str(job), overrides, validation(set5, set14), status="completed")
    fake_run(tmp_path / "9", ["data=t91", "optimizer=lion", "seed=1"], [], status="failed")

    assert leaderboard_main([str(tmp_path), "--over", "seed", "--no-plot"]) == 0
    table = (tmp_path / "leaderboard_over_seed.md").read_text()
    assert table in capsys.readouterr().out
    assert "Shared overrides: `data=t91`" in table
    rows = [line for line in table.splitlines() if line.startswith("| optimizer=")]
    # Best mean first; sets in name order (Set14, Set5); sample standard deviation (n - 1).
    assert rows[0].startswith("| optimizer=prodigy | 2 | 1, 2 | 30.2500 (sd 0.3536) | 33.2500")
    assert rows[1].startswith("| optimizer=adam | 3 | 1, 2, 3 | 28.5000 (sd 0.5000) | 31.0000")
    assert rows[1].endswith("| 28.0000, 28.5000, 29.0000 | 30.0000, 31.0000, 32.0000 |")
    assert "lion" not in table


def test_a_sweep_over_seeds_also_writes_their_means(tmp_path: Path):
    from src.leaderboard import SweepSummary

    for job, seed in enumerate((1, 2)):
        rows = [{"step": 9, "val/psnr_y": 30.0 + seed, "val/ssim_y": 0.9}]
        fake_run(tmp_path / str(job), ["scale=2", f"seed={seed}"], rows, status="completed")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SweepSummary().on_multirun_end(config)
    assert (tmp_path / "leaderboard.md").is_file()
    table = (tmp_path / "leaderboard_over_seed.md").read_text()
    assert "| scale=2 | 2 | 1, 2 | 31.5000 (sd 0.7071) | 31.0000, 32.0000 |" in table
