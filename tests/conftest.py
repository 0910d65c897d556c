"""Shared fixtures: where the reference data lives and how tests skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SRLAB_SHARED_DIR", REPO_ROOT.parent / "shared"))
SHARED_DATA = SHARED_DIR / "data"
SHARED_WEIGHTS = SHARED_DIR / "weights"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (the ../shared folder is absent)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, or skip the test with a clear reason."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """`../shared/weights`, or skip the test with a clear reason."""
    return _require(SHARED_WEIGHTS)


@pytest.fixture(autouse=True)
def _few_threads():
    """Keep torch at the machine's two threads: tests run single-process."""
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-bf16",
        choices=("native", "none"),
        default=None,
        help="force what trainer.precision=auto believes of this CPU (sets "
        "SRLAB_CPU_NATIVE_BF16 for the tests and every command they start)",
    )


def pytest_configure(config: pytest.Config) -> None:
    forced = config.getoption("--cpu-bf16")
    if forced is not None:
        os.environ["SRLAB_CPU_NATIVE_BF16"] = "1" if forced == "native" else "0"


def pytest_report_header(config: pytest.Config) -> str:
    from src.utils.precision import NATIVE_BF16_ENV, choose_precision

    forced = os.environ.get(NATIVE_BF16_ENV)
    how = f"forced by {NATIVE_BF16_ENV}={forced}" if forced else "this CPU's own"
    return f"trainer.precision=auto on the CPU: {choose_precision('cpu').precision} ({how})"
