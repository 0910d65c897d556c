"""SR Lab's networks reproduce their authors' code (issue 24, point 5).

Each fixture in ``tests/fixtures/parity`` was made once with the authors' code in a scratch folder
(see :mod:`tests.parity_fixtures`): seeded weights in the authors' layout and the authors' output
for a fixed input. Here SR Lab's network gets the same weights and must give the same output, to
the tolerance recorded in the fixture (ten times the difference measured when it was made, at
least 2e-5). Networks with no authors' code to run have ``snapshot`` fixtures of SR Lab's own
output instead, so a refactor still cannot change them silently.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.parity_fixtures import (
    FIXTURE_DIR,
    ParityFixture,
    build_own_network,
    flat_output,
    read_fixture,
    seed_network,
    trainable_parameters,
)
from tests.test_arch_provenance import NETWORK_FILES

FIXTURES = sorted(FIXTURE_DIR.glob("*.npz"))
# Network files with no parity fixture, and the test that pins them instead.
PINNED_ELSEWHERE = {
    "bicubic": "no weights: tests/test_imresize.py checks it bit-exact against MATLAB's imresize",
    "deform_conv": "a layer whose authors' code (torchvision's and mmcv's C++/CUDA operators) "
    "cannot run here: tests/test_deform_conv.py checks it against a per-tap reference",
}


def _load(path: Path) -> ParityFixture:
    return read_fixture(path)


def test_every_network_file_has_a_parity_fixture() -> None:
    covered = {str(read_fixture(p).meta["target"]).split(".")[2] for p in FIXTURES}
    lacking = [p.stem for p in NETWORK_FILES if p.stem not in covered | set(PINNED_ELSEWHERE)]
    assert not lacking, f"network files without a parity fixture: {lacking}"


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_network_reproduces_the_authors_output(path: Path) -> None:
    fixture = _load(path)
    meta = fixture.meta
    net = build_own_network(meta)
    own = trainable_parameters(net)
    assert sorted(own) == sorted(fixture.own_names), "SR Lab's trainable parameters changed"
    for own_name, shape in zip(fixture.own_names, fixture.shapes, strict=True):
        assert tuple(own[own_name].shape) == shape, f"{own_name}: shape changed"
    weights_sum = seed_network(net, fixture.name_map, int(meta["seed"]), meta.get("near_one", ()))
    assert weights_sum == pytest.approx(meta["weights_sum"], rel=1e-12), (
        "the seeded weights differ from the fixture's: numpy's random stream changed"
    )
    with torch.no_grad():
        out = flat_output(net(fixture.input.clone()))
    assert out.shape == fixture.output.shape
    difference = float((out - fixture.output).abs().max())
    assert difference <= meta["tolerance"], (
        f"{meta['name']} ({meta['kind']}, {meta['upstream']}): max |SR Lab - reference| = "
        f"{difference:.3g} > tolerance {meta['tolerance']:.1g}"
    )


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_is_not_vacuous(path: Path) -> None:
    """A fixture whose output is constant, or whose tolerance is near the output's own spread,
    could not catch a wrong network."""
    fixture = _load(path)
    assert float(fixture.output.std()) > 100 * fixture.meta["tolerance"]
    assert fixture.meta["kind"] in {"authors", "port", "snapshot"}
    assert fixture.meta["upstream"]
