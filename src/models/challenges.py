"""The NTIRE efficient SR challenges' scores, for ``python -m src.models efficiency ...
challenge=ntire2026`` (:mod:`src.models.efficiency`).

    python -m src.models efficiency model=rlfn scale=4 challenge=ntire2026
    python -m src.models efficiency model=efdn scale=4 challenge=ntire2025 \\
        val_set=/data/DIV2K_LSDIR_valid_HR pretrained=EFDN_gv.pth

The rules, the same three years running (each record below cites its source): the organisers run
every entry five times on one GPU and average; an entry whose PSNR is under the floor on the
validation or the hidden test set is not ranked; the others get, for each metric,
``Score_metric = exp(2 x metric / metric_baseline)`` and are ranked by
``Score_final = w_runtime x Score_runtime + w_flops x Score_flops + w_params x Score_params``.
Lower is better; the baseline itself scores exp(2) = 7.3891 on every term and in total.

What is measured here, and how it stands in for the organisers' figures:

* runtime: the network's and the baseline's, measured one after the other in this run on this
  device by the efficiency protocol (fp32, one ``size`` x ``size`` input, the mean of ``runs``
  passes after warm-up), so the ratio is between two measurements taken alike; the baseline's
  published runtime (on the organisers' GPU, over the validation images) is printed beside it.
  Scored against itself, the baseline is measured once and that one figure serves both.
* FLOPs (fvcore's count at 256 x 256, :func:`src.models.efficiency.count_macs`) and parameters
  of the network's inference form (fused where it re-parameterises), divided by the baseline's
  published figures. Both enter at the precision the organisers publish them (0.01 G, 0.001 M),
  which reproduces the rules' own example: the baseline's figures counted here round to the
  published ones for all three years, so the baseline scores exactly exp(2).
* the PSNR floor: with weights (``pretrained=`` or ``ckpt_path=``) and ``val_set=`` (a standard
  set's name or a folder of HR images), ``src.eval`` scores the network on that set, and its
  RGB PSNR (8-bit, a ``scale``-pixel border cropped: the challenge's scorer) is compared with the
  floor. The rules' set is DIV2K_LSDIR_valid; on another set the comparison is only indicative.
  Without weights the floor is unchecked, and the score holds only once it is met.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from torch import nn

from src.archs.reparam import is_fusable
from src.models.efficiency import (
    Efficiency,
    check_model,
    count_macs,
    inference_form,
    measure,
    parse,
    run,
)
from src.models.zoo import CONF_DIR, build_net
from src.utils.errors import UserError

REPO_ROOT = CONF_DIR.parent
# Score_metric = exp(GAIN x metric / metric_baseline), every year so far.
GAIN = 2.0
RUNTIME, FLOPS, PARAMS = "runtime", "FLOPs", "params"
# The precision the organisers publish FLOPs (G) and parameters (M) at, which their scores use.
FLOPS_DECIMALS, PARAMS_DECIMALS = 2, 3


@dataclass(frozen=True)
class PsnrFloor:
    """The least PSNR (dB, RGB) an entry must reach on one set to be ranked."""

    set_name: str
    floor_db: float
    baseline_db: float | None  # the baseline's own PSNR there, as published


@dataclass(frozen=True)
class Challenge:
    """One year's rules: the baseline, its published figures, the weights and the floors."""

    name: str
    title: str
    source: str
    baseline_model: str  # the conf/model config that builds the baseline network
    baseline_network: str
    runtime_ms: float | None
    runtime_protocol: str
    gflops: float | None  # at flops_size x flops_size, fvcore's count
    params_m: float | None
    weights: dict[str, float]
    floors: tuple[PsnrFloor, ...]
    scale: int = 4
    flops_size: int = 256


NTIRE_FLOORS = (
    PsnrFloor("DIV2K_LSDIR_valid", 26.90, None),
    PsnrFloor("DIV2K_LSDIR_test", 26.99, None),
)


def _floors(valid_db: float, test_db: float) -> tuple[PsnrFloor, ...]:
    valid, test = NTIRE_FLOORS
    return (
        PsnrFloor(valid.set_name, valid.floor_db, valid_db),
        PsnrFloor(test.set_name, test.floor_db, test_db),
    )


CHALLENGES: dict[str, Challenge] = {
    challenge.name: challenge
    for challenge in (
        # https://github.com/Amazingren/NTIRE2024_ESR (README, "How the Ranking Strategy Works?"
        # and the baseline's reference results; commit 6404fa4); Ren et al., "The Ninth NTIRE
        # 2024 Efficient Super-Resolution Challenge Report", CVPRW 2024, arXiv:2404.10343.
        Challenge(
            name="ntire2024",
            title="NTIRE 2024 efficient SR challenge",
            source="https://github.com/Amazingren/NTIRE2024_ESR",
            baseline_model="rlfn_prune",
            baseline_network="RLFN_Prune (Kong et al., NTIRE 2022 winner; 4 blocks, 46 features)",
            runtime_ms=13.54,
            runtime_protocol="RTX 3090, fp32; 16.18 ms on DIV2K_LSDIR_valid, 10.89 ms on _test",
            gflops=19.67,
            params_m=0.317,
            weights={RUNTIME: 0.7, FLOPS: 0.15, PARAMS: 0.15},
            floors=_floors(26.96, 27.07),
        ),
        # https://github.com/Amazingren/NTIRE2025_ESR (README, same sections; commit b69fb66);
        # Ren et al., "The Tenth NTIRE 2025 Efficient Super-Resolution Challenge Report", CVPRW
        # 2025, arXiv:2504.10686.
        Challenge(
            name="ntire2025",
            title="NTIRE 2025 efficient SR challenge",
            source="https://github.com/Amazingren/NTIRE2025_ESR",
            baseline_model="efdn",
            baseline_network="EFDN (Yan Wang; NTIRE 2023 overall winner; 48 features, fused)",
            runtime_ms=16.69,
            runtime_protocol="RTX A6000, fp32; 18.77 ms on DIV2K_LSDIR_valid, 14.61 ms on _test",
            gflops=16.70,
            params_m=0.276,
            weights={RUNTIME: 0.7, FLOPS: 0.15, PARAMS: 0.15},
            floors=_floors(26.93, 27.01),
        ),
        # https://github.com/Amazingren/NTIRE2026_ESR (README, "Ranking Strategy" and "SPAN
        # Baseline Reference Results"; commit 4592ce6); Ren et al., "The Eleventh NTIRE 2026
        # Efficient Super-Resolution Challenge Report", CVPRW 2026, arXiv:2604.03198.
        Challenge(
            name="ntire2026",
            title="NTIRE 2026 efficient SR challenge",
            source="https://github.com/Amazingren/NTIRE2026_ESR",
            baseline_model="span_ch28",
            baseline_network="SPAN (Wan et al., NTIRE 2024 winner; 28 features, folded)",
            runtime_ms=7.74,
            runtime_protocol="RTX A6000, fp32; 8.00 ms on DIV2K_LSDIR_valid, 7.47 ms on _test",
            gflops=9.83,
            params_m=0.151,
            weights={RUNTIME: 0.8, FLOPS: 0.1, PARAMS: 0.1},
            floors=_floors(26.94, 27.01),
        ),
    )
}


def challenge_named(name: str) -> Challenge:
    """The record of ``challenge=<name>``."""
    if name not in CHALLENGES:
        raise UserError(f"challenge={name}: no such challenge; known: {', '.join(CHALLENGES)}")
    return CHALLENGES[name]


# --- The score ------------------------------------------------------------------------------


def metric_score(value: float, baseline: float, gain: float = GAIN) -> float:
    """``exp(gain x value / baseline)``: one metric's score (lower is better)."""
    return math.exp(gain * value / baseline)


@dataclass(frozen=True)
class Term:
    """One weighted term of the final score."""

    name: str
    weight: float
    value: float
    baseline: float
    unit: str
    baseline_note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline

    @property
    def score(self) -> float:
        return metric_score(self.value, self.baseline)

    @property
    def weighted(self) -> float:
        return self.weight * self.score


def final_score(terms: list[Term]) -> float:
    """``Score_final``: the weighted sum of the terms' scores."""
    return sum(term.weighted for term in terms)


def published(value: float | None, what: str, challenge: Challenge) -> float:
    if value is None:
        raise UserError(f"challenge={challenge.name}: the baseline's published {what} is unknown")
    return value


def challenge_terms(
    challenge: Challenge,
    runtime_ms: float,
    baseline_runtime_ms: float,
    gflops: float,
    params: int,
) -> list[Term]:
    """The three terms: runtime against the baseline measured alike, FLOPs (G, at the
    challenge's input size) and parameters against the baseline's published figures, at the
    precision those are published."""
    flops_published = published(challenge.gflops, "FLOPs", challenge)
    params_published = published(challenge.params_m, "parameter count", challenge)
    weights = challenge.weights
    return [
        Term(RUNTIME, weights[RUNTIME], runtime_ms, baseline_runtime_ms, "ms", "measured here"),
        Term(
            FLOPS,
            weights[FLOPS],
            round(gflops, FLOPS_DECIMALS),
            flops_published,
            "G",
            "published",
        ),
        Term(
            PARAMS,
            weights[PARAMS],
            round(params / 1e6, PARAMS_DECIMALS),
            params_published,
            "M",
            "published",
        ),
    ]


# --- The PSNR floor ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FloorCheck:
    """The network's PSNR on the user's set, or why it was not measured."""

    floor: PsnrFloor
    set_name: str | None = None
    psnr_db: float | None = None
    images: int = 0
    unchecked_because: str = ""

    @property
    def passes(self) -> bool | None:
        return None if self.psnr_db is None else self.psnr_db >= self.floor.floor_db


def quoted(value: str) -> str:
    """``value`` as one quoted string of Hydra's override grammar (paths with any characters)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def folder_set_name(folder: Path) -> str:
    """A folder's set name: its own, or its parent's for a ``<Set>/HR`` layout."""
    resolved = folder.resolve()
    return resolved.parent.name if resolved.name == "HR" else resolved.name


def val_set_overrides(val_set: str) -> tuple[str, list[str]]:
    """The set's name and the ``src.eval`` overrides that score it: a folder of HR images (all
    of them), or a standard test set by name."""
    folder = Path(val_set)
    if folder.is_dir():
        name = folder_set_name(folder)
        return name, [
            "data=folder",
            f"data.root={quoted(str(folder.resolve()))}",
            "data.train_set.split=all",  # (not read by src.eval, but checked)
            "data.val_sets.0.split=all",
            f"+data.val_sets.0.name={quoted(name)}",
        ]
    from src.data.benchmark_download import pinned_files  # imports Lightning: only if needed

    if pinned_files(val_set):
        return val_set, ["data=benchmark", f"data.sets=[{val_set}]"]
    raise UserError(
        f"val_set={val_set}: neither a folder of HR images nor a standard test set's name "
        f"(Set5, Set14, B100, Urban100 or Manga109)"
    )


def parameter_shapes(net: nn.Module) -> dict[str, tuple[int, ...]]:
    """The shapes of what the inference form of ``net`` holds, by name."""
    return {key: tuple(value.shape) for key, value in inference_form(net).state_dict().items()}


def checkpoint_differences(ckpt_path: str, model: str, scale: int) -> list[str]:
    """How the network saved in ``ckpt_path`` differs from ``model=`` at ``scale`` (the one
    measured), compared in their inference forms: the class, the parameters' shapes, pruning."""
    from src.models.checkpoint import CheckpointError, read_checkpoint, stored_model_config
    from src.models.gan_module import generator_config

    stored = stored_model_config(read_checkpoint(ckpt_path), ckpt_path)
    if stored is None:
        raise CheckpointError(
            f"ckpt_path={ckpt_path} was not written by SR Lab's trainer; give its weights as "
            f"pretrained= instead"
        )
    config = generator_config(copy.deepcopy(stored))
    with torch.device("meta"):
        saved: nn.Module = hydra.utils.instantiate(config["net"])
    wanted = build_net(model, scale, device="meta")
    if type(saved) is not type(wanted):
        return [f"{type(saved).__name__} there, {type(wanted).__name__} in model={model}"]
    there, here = parameter_shapes(saved), parameter_shapes(wanted)
    differences = [
        f"{key}: {there.get(key)} there, {here.get(key)} here"
        for key in [*here, *(key for key in there if key not in here)]
        if there.get(key) != here.get(key)
    ]
    if config.get("pruning"):
        differences.insert(0, "its network was pruned")
    return differences[:4]


def pretrained_overrides(model: str, scale: int, pretrained: str) -> list[str]:
    """``src.eval``'s overrides for a weights file of ``model``'s network."""
    if not Path(pretrained).is_file():
        raise UserError(f"pretrained={pretrained}: no such file")
    overrides = [f"model={model}", f"scale={scale}", f"model.pretrained={quoted(pretrained)}"]
    # The fused network takes a file of either form (the released ones are often fused).
    fusable = is_fusable(build_net(model, scale, device="meta"))
    return [*overrides, "model.fused=true"] if fusable else overrides


def checkpoint_overrides(model: str, scale: int, ckpt_path: str) -> list[str]:
    """``src.eval``'s overrides for a checkpoint, after checking it holds the network measured."""
    if not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path={ckpt_path}: no such file")
    differences = checkpoint_differences(ckpt_path, model, scale)
    if differences:
        raise UserError(
            f"ckpt_path={ckpt_path} holds another network than the one measured (model={model}"
            f", scale={scale}): {'; '.join(differences)}"
        )
    return [f"ckpt_path={quoted(ckpt_path)}"]


def weight_overrides(
    model: str, scale: int, pretrained: str | None, ckpt_path: str | None
) -> list[str]:
    """The ``src.eval`` overrides that load the weights given (one of the two)."""
    if pretrained and ckpt_path:
        raise UserError("give the weights as pretrained=PATH or as ckpt_path=PATH, not both")
    if pretrained:
        return pretrained_overrides(model, scale, pretrained)
    return checkpoint_overrides(model, scale, str(ckpt_path))


def eval_failure(returncode: int, stderr: str) -> Exception:
    """``src.eval``'s error (its ``error:`` line and the lines after it) as this command's."""
    lines = stderr.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("error: ")]
    if not starts:
        return RuntimeError(f"src.eval failed ({returncode}):\n{stderr[-3000:]}")
    message = "\n".join(lines[starts[-1] :]).removeprefix("error: ")
    return UserError(f"src.eval: {message}")


def eval_psnr(overrides: list[str]) -> dict[str, Any]:
    """Run ``python -m src.eval`` with ``overrides`` in a scratch run folder; the one set's
    summary from its results.json. Its error line becomes this command's."""
    with tempfile.TemporaryDirectory(prefix="challenge-eval-") as run_dir:
        command = [
            sys.executable,
            "-m",
            "src.eval",
            *overrides,
            "comparisons=0",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={quoted(run_dir)}",
        ]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise eval_failure(done.returncode, done.stderr)
        results = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
    (summary,) = results["sets"]
    return dict(summary)


def check_floor(
    challenge: Challenge,
    model: str,
    scale: int,
    val_set: str | None,
    pretrained: str | None,
    ckpt_path: str | None,
) -> FloorCheck:
    """The network's PSNR on ``val_set`` against the floor; unchecked without weights."""
    floor = challenge.floors[0]
    has_weights = bool(pretrained or ckpt_path)
    if not has_weights and not val_set:
        return FloorCheck(floor, unchecked_because="no weights (pretrained= or ckpt_path=)")
    if not has_weights:
        raise UserError(
            f"val_set={val_set} needs the network's weights: pretrained=PATH or ckpt_path=PATH"
        )
    if not val_set:
        raise UserError(
            "the PSNR floor needs val_set=: a folder of HR images (the rules' set is "
            f"{floor.set_name}) or a standard test set's name"
        )
    set_name, set_overrides = val_set_overrides(val_set)
    overrides = weight_overrides(model, scale, pretrained, ckpt_path) + set_overrides
    summary = eval_psnr(overrides)
    return FloorCheck(floor, set_name, float(summary["psnr_rgb"]), int(summary["images"]))


@dataclass(frozen=True)
class ScoreRequest:
    """A challenge's score asked for, with its PSNR floor already checked."""

    challenge: Challenge
    floor: FloorCheck


def request_score(settings: dict[str, Any]) -> ScoreRequest | None:
    """The efficiency command's challenge settings checked, and the PSNR floor with them (before
    anything is timed); None without ``challenge=``."""
    challenge = check_request(settings)
    if challenge is None:
        return None
    if settings.get("pretrained") or settings.get("ckpt_path"):
        print("scoring the PSNR floor with src.eval ...", file=sys.stderr, flush=True)
    floor = check_floor(
        challenge,
        str(settings["model"]),
        int(settings["scale"]),
        settings.get("val_set"),
        settings.get("pretrained"),
        settings.get("ckpt_path"),
    )
    return ScoreRequest(challenge, floor)


def check_request(settings: dict[str, Any]) -> Challenge | None:
    """The challenge asked for, its settings checked; None without ``challenge=``."""
    asked = [key for key in ("val_set", "pretrained", "ckpt_path") if settings.get(key)]
    if settings.get("challenge") is None:
        if asked:
            raise UserError(f"{asked[0]}= is read only with challenge=<{'|'.join(CHALLENGES)}>")
        return None
    challenge = challenge_named(str(settings["challenge"]))
    if int(settings["scale"]) != challenge.scale:
        raise UserError(
            f"challenge={challenge.name} ranks x{challenge.scale} networks, not "
            f"scale={settings['scale']}"
        )
    return challenge


# --- The report -------------------------------------------------------------------------------


def flops_at_challenge_size(user: Efficiency, challenge: Challenge, scale: int, size: int) -> float:
    """The network's GFLOPs at the challenge's input size (the report's own when it used it)."""
    if size == challenge.flops_size:
        return user.gmacs
    net = inference_form(build_net(user.model, scale, device="meta"))
    return count_macs(net, challenge.flops_size, "meta")


def inference_parameters(result: Efficiency) -> int:
    """Parameters of what inference runs (the fused form where the network has one)."""
    return result.folded_params if result.folded_params is not None else result.params


def floor_lines(challenge: Challenge, check: FloorCheck) -> list[str]:
    floors = ", ".join(f"{f.floor_db:.2f} dB on {f.set_name}" for f in challenge.floors)
    lines = [
        f"  PSNR floor   {floors} (RGB, 8-bit, {challenge.scale}-pixel border cropped, as the "
        "challenge scores)"
    ]
    if check.psnr_db is None:
        lines.append(
            f"               unchecked: {check.unchecked_because}; the score holds once the "
            "floor is met"
        )
        return lines
    verdict = "passes" if check.passes else "FAILS"
    lines.append(
        f"               {check.set_name}: {check.psnr_db:.2f} dB over {check.images} images, "
        f"{verdict} the {check.floor.floor_db:.2f} dB floor"
    )
    if check.set_name != check.floor.set_name:
        lines.append(
            f"               ({check.set_name} is not {check.floor.set_name}, the rules' set: "
            "indicative only)"
        )
    return lines


def number(value: float, unit: str) -> str:
    decimals = {"ms": 2, "G": FLOPS_DECIMALS, "M": PARAMS_DECIMALS}[unit]
    return f"{value:.{decimals}f} {unit}"


def terms_table(terms: list[Term]) -> str:
    from src.utils.tables import markdown_table

    header = ["term", "weight", "this network", "baseline", "ratio", "exp(2 x ratio)", "weighted"]
    rows = [
        [
            term.name,
            f"{term.weight:.2f}",
            number(term.value, term.unit),
            f"{number(term.baseline, term.unit)} ({term.baseline_note})",
            f"{term.ratio:.4f}",
            f"{term.score:.4f}",
            f"{term.weighted:.4f}",
        ]
        for term in terms
    ]
    return markdown_table(header, rows, [False, True, True, False, True, True, True])


def measure_baseline(
    challenge: Challenge, user: Efficiency, scale: int, size: int, runs: int, device: str
) -> Efficiency:
    """The baseline measured as ``user`` was, right after it; ``user`` itself when it is the
    baseline (one network, one measurement)."""
    if user.model == challenge.baseline_model:
        return user
    print(f"measuring the baseline {challenge.baseline_model} ...", file=sys.stderr, flush=True)
    return measure(challenge.baseline_model, scale, size, runs, device, "false")


def score_section(
    request: ScoreRequest, user: Efficiency, scale: int, size: int, runs: int, device: str
) -> str:
    """The score section: the baseline, the floor, each term with its weight, the score."""
    challenge, check = request.challenge, request.floor
    baseline = measure_baseline(challenge, user, scale, size, runs, device)
    terms = challenge_terms(
        challenge,
        user.fp32_ms,
        baseline.fp32_ms,
        flops_at_challenge_size(user, challenge, scale, size),
        inference_parameters(user),
    )
    return "\n".join(
        [
            f"{challenge.title}, x{challenge.scale} (rules: {challenge.source})",
            f"  score        sum of weight x exp({GAIN:g} x metric / baseline's); lower is better, "
            f"the baseline's is exp({GAIN:g}) = {math.exp(GAIN):.4f}",
            *baseline_lines(challenge, baseline, user, scale, size, runs, device),
            *floor_lines(challenge, check),
            "",
            terms_table(terms),
            "",
            f"score {final_score(terms):.4f}",
        ]
    )


def published_text(challenge: Challenge) -> str:
    """The baseline's published figures, unknown ones said so."""
    runtime = (
        "runtime unknown"
        if challenge.runtime_ms is None
        else f"{challenge.runtime_ms:.2f} ms ({challenge.runtime_protocol})"
    )
    flops = "FLOPs unknown" if challenge.gflops is None else f"{challenge.gflops:.2f} G"
    params = "parameters unknown" if challenge.params_m is None else f"{challenge.params_m:.3f} M"
    return f"{runtime}, {flops}, {params}"


def baseline_lines(
    challenge: Challenge,
    baseline: Efficiency,
    user: Efficiency,
    scale: int,
    size: int,
    runs: int,
    device: str,
) -> list[str]:
    """Which network the baseline is, its published figures and this run's."""
    same = "; the network scored: one measurement serves both" if baseline is user else ""
    flops = flops_at_challenge_size(baseline, challenge, scale, size)
    params = inference_parameters(baseline) / 1e6
    return [
        f"  baseline     {challenge.baseline_model}: {challenge.baseline_network}",
        f"               published: {published_text(challenge)}",
        f"               here: fp32 {baseline.fp32_ms:.2f} ms (mean of {runs} runs on "
        f"{size}x{size}, {device}{same}); {flops:.2f} G at {challenge.flops_size}x"
        f"{challenge.flops_size}, {params:.3f} M",
    ]


def main(argv: list[str]) -> None:
    """``python -m src.models efficiency key=value ...``: the efficiency report
    (:func:`src.models.efficiency.run`) and, with ``challenge=``, the score after it; the
    challenge's settings and PSNR floor are checked before anything is timed."""
    settings = parse(argv)
    check_model(settings)
    scoring = request_score(settings)
    result = run(settings)
    if scoring is not None:
        scale, size, runs = (int(settings[key]) for key in ("scale", "size", "runs"))
        print("\n" + score_section(scoring, result, scale, size, runs, str(settings["device"])))
