"""The standard test sets downloading themselves from a pinned manifest, against a server on
127.0.0.1 that holds small fake "benchmark" PNGs under other names than their target ones."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from src.data import benchmark_download, pixels
from src.data.benchmark_download import DOWNLOADS, ensure_benchmark, pinned_files
from src.data.benchmarks import BenchmarkSet
from src.data.pixels import MANIFEST, pixel_digest
from src.data.sources import DatasetNotFoundError
from src.eval import evaluate
from src.io.download import DownloadError
from src.io.images import decode
from src.train import train
from src.utils.runtime import close_loggers
from tests.conftest import SHARED_DATA, SHARED_DIR
from tests.helpers import REPO_ROOT, TINY, compose_config
from tests.test_data import photo
from tests.test_download import Server, _no_proxy, server  # noqa: F401  (fixtures)

HEADER = "# set\tfile\turl\tsha256\tbytes\n"
PIXEL_HEADER = "set\tfile\twidth\theight\tchannels\tsha256_of_pixels\n"


@dataclass
class Published:
    """Fake sets on the server, with their download and pixel manifests."""

    server: Server
    manifest: Path
    pixels: Path
    served: dict[str, Path]  # target file name -> its file on the server

    def url(self, name: str) -> str:
        return self.server.url(self.served[name].relative_to(self.server.state.root).as_posix())


def publish(host: Server, folder: Path, sets: dict[str, int]) -> Published:
    """``count`` PNGs per set on ``host`` (served as ``img_XXX_SRF_4_HR.png``, pinned as
    ``img_XXX.png``) and manifests for them in ``folder``."""
    rows, pixel_rows, served = [HEADER], [PIXEL_HEADER], {}
    reference = folder / "reference"
    for set_name, count in sets.items():
        (host.state.root / set_name).mkdir()
        (reference / set_name).mkdir(parents=True)
        for index in range(count):
            name = f"img_{index + 1:03d}.png"
            data = cv2.imencode(".png", photo(index, 64, 72 + 8 * index))[1].tobytes()
            source = host.state.root / set_name / f"img_{index + 1:03d}_SRF_4_HR.png"
            source.write_bytes(data)
            served[name] = source
            url = host.url(source.relative_to(host.state.root).as_posix())
            digest = hashlib.sha256(data).hexdigest()
            rows.append(f"{set_name}\t{name}\t{url}\t{digest}\t{len(data)}\n")
            (reference / set_name / name).write_bytes(data)
            pixels = decode(reference / set_name / name)
            height, width = pixels.shape[:2]
            pixel_rows.append(f"{set_name}\t{name}\t{width}\t{height}\t3\t{pixel_digest(pixels)}\n")
    manifest, pixel_manifest = folder / "downloads.tsv", folder / "pixels.tsv"
    manifest.write_text("".join(rows))
    pixel_manifest.write_text("".join(pixel_rows))
    return Published(host, manifest, pixel_manifest, served)


@pytest.fixture
def urban(server: Server, tmp_path: Path) -> Published:  # noqa: F811
    """Twelve fake Urban100 images on the server."""
    return publish(server, tmp_path / "manifests", {"Urban100": 12})


@pytest.fixture
def pinned(urban: Published, monkeypatch: pytest.MonkeyPatch) -> Published:
    """The fake manifests in place of the shipped ones, for runs built from the configs."""
    monkeypatch.setattr(benchmark_download, "DOWNLOADS", urban.manifest)
    monkeypatch.setattr(pixels, "MANIFEST", urban.pixels)
    return urban


def ensure(published: Published, hr_dir: Path, **options: bool) -> None:
    ensure_benchmark(
        "Urban100", hr_dir, manifest=published.manifest, pixels=published.pixels, **options
    )


def image_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def all_names(count: int) -> list[str]:
    return [f"img_{i + 1:03d}.png" for i in range(count)]


# --- the shipped manifests -------------------------------------------------------------------


def test_shipped_manifest_pins_every_file_of_the_five_sets() -> None:
    counts = Counter({name: len(pinned_files(name)) for name in ("Set5", "Set14", "B100")})
    counts.update({name: len(pinned_files(name)) for name in ("Urban100", "Manga109")})
    assert counts == {"Set5": 5, "Set14": 14, "B100": 100, "Urban100": 100, "Manga109": 109}
    reference_pixels = pixels.pixel_manifest()
    for set_name in counts:
        for pinned_file in pinned_files(set_name):
            assert (set_name, pinned_file.name) in reference_pixels
            assert pinned_file.remote.url.startswith("https://raw.githubusercontent.com/")
    b100 = {f.name: f.remote.url for f in pinned_files("B100")}
    assert b100["101085.png"].endswith("/img_001_SRF_3_HR.png")  # the target name is `file`


@pytest.mark.shared
def test_shipped_manifests_are_the_reference_ones() -> None:
    reference = SHARED_DIR / "reference"
    if not reference.is_dir():
        pytest.skip(f"{reference} not found")
    assert DOWNLOADS.read_bytes() == (reference / "benchmark-downloads.tsv").read_bytes()
    assert MANIFEST.read_bytes() == (reference / "benchmark-pixels.tsv").read_bytes()


@pytest.mark.shared
def test_complete_reference_sets_need_no_download_and_raise_no_warning() -> None:
    if not (SHARED_DATA / "benchmarks" / "Set14" / "HR").is_dir():
        pytest.skip("../shared/data/benchmarks not found")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("Set5", "Set14"):
            hr_dir = SHARED_DATA / "benchmarks" / name / "HR"
            ensure_benchmark(name, hr_dir, allow_download=False, check_copies=True)


def test_a_bad_manifest_row_is_named(tmp_path: Path) -> None:
    manifest = tmp_path / "downloads.tsv"
    manifest.write_text(HEADER + "Set5\tbaby.png\thttp://127.0.0.1/x.png\tnot-a-digest\n")
    with pytest.raises(DownloadError, match=r"downloads\.tsv:2: expected 5 tab-separated"):
        pinned_files("Set5", manifest)


# --- downloads -------------------------------------------------------------------------------


def test_empty_folder_downloads_every_file_under_its_target_name(
    urban: Published, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hr_dir = tmp_path / "data" / "benchmarks" / "Urban100" / "HR"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pixels are the reference ones: no warning
        ensure(urban, hr_dir)
    assert image_names(hr_dir) == all_names(12)
    for name, source in urban.served.items():
        assert (hr_dir / name).read_bytes() == source.read_bytes()
    out = capsys.readouterr().out
    assert "downloading Urban100: 12 files" in out and "downloading Urban100: 12/12 files" in out
    assert "downloading Urban100: 6/12 files" in out
    hits = len(urban.server.state.hits)
    ensure(urban, hr_dir)  # complete: nothing more is fetched
    assert len(urban.server.state.hits) == hits == 12


def test_tampered_file_is_refused_by_name_and_not_kept(urban: Published, tmp_path: Path) -> None:
    source = urban.served["img_003.png"]
    data = bytearray(source.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    source.write_bytes(bytes(data))
    hr_dir = tmp_path / "HR"
    with pytest.raises(DownloadError) as caught:
        ensure(urban, hr_dir)
    message = str(caught.value)
    assert "img_003.png" in message and urban.url("img_003.png") in message
    assert "checksum mismatch" in message and "2 of 12 files fetched" in message
    assert image_names(hr_dir) == ["img_001.png", "img_002.png"]  # no img_003.png(.part)


def test_file_of_another_size_is_refused_and_not_kept(urban: Published, tmp_path: Path) -> None:
    urban.served["img_001.png"].write_bytes(b"\x89PNG\r\n\x1a\n not the pinned file")
    hr_dir = tmp_path / "HR"
    with pytest.raises(DownloadError, match=r"img_001\.png was not downloaded.*server offers"):
        ensure(urban, hr_dir)
    assert image_names(hr_dir) == []


def test_interrupted_download_resumes_with_range(urban: Published, tmp_path: Path) -> None:
    hr_dir = tmp_path / "HR"
    urban.server.state.cut_next_after = 300
    with pytest.raises(DownloadError, match=r"img_001\.png.*partial file .* is kept"):
        ensure(urban, hr_dir)
    assert image_names(hr_dir) == ["img_001.png.part"]
    assert (hr_dir / "img_001.png.part").stat().st_size == 300
    ensure(urban, hr_dir)
    assert image_names(hr_dir) == all_names(12)
    assert urban.server.state.hits[1].range == "bytes=300-"
    assert urban.server.state.hits[1].status == 206
    assert (hr_dir / "img_001.png").read_bytes() == urban.served["img_001.png"].read_bytes()


def test_partly_present_set_fetches_only_the_missing_files(
    urban: Published, tmp_path: Path
) -> None:
    hr_dir = tmp_path / "HR"
    ensure(urban, hr_dir)
    (hr_dir / "img_004.png").unlink()
    (hr_dir / "img_011.png").unlink()
    urban.server.state.hits.clear()
    ensure(urban, hr_dir)
    assert image_names(hr_dir) == all_names(12)
    fetched = sorted(hit.path for hit in urban.server.state.hits)
    assert fetched == ["/Urban100/img_004_SRF_4_HR.png", "/Urban100/img_011_SRF_4_HR.png"]


def test_download_that_decodes_to_other_pixels_is_named(urban: Published, tmp_path: Path) -> None:
    lines = urban.pixels.read_text().splitlines(keepends=True)
    lines[5] = lines[5].rsplit("\t", 1)[0] + "\t" + "0" * 64 + "\n"  # img_005.png
    urban.pixels.write_text("".join(lines))
    with pytest.warns(UserWarning, match=r"img_005\.png downloaded intact.*other pixels"):
        ensure(urban, tmp_path / "HR")


# --- copies already on disk ------------------------------------------------------------------


def copy_set(published: Published, hr_dir: Path) -> None:
    hr_dir.mkdir(parents=True)
    for name, source in published.served.items():
        (hr_dir / name).write_bytes(source.read_bytes())


def test_own_copy_with_other_pixels_is_named_in_a_warning(urban: Published, tmp_path: Path) -> None:
    hr_dir = tmp_path / "HR"
    copy_set(urban, hr_dir)
    image = cv2.imread(str(hr_dir / "img_007.png"))
    image[0, 0] = 255 - image[0, 0]
    cv2.imwrite(str(hr_dir / "img_007.png"), image)
    # Other bytes, same pixels: a PNG compressed differently is still the reference image.
    same = cv2.imread(str(hr_dir / "img_002.png"))
    cv2.imwrite(str(hr_dir / "img_002.png"), same, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    assert (hr_dir / "img_002.png").read_bytes() != urban.served["img_002.png"].read_bytes()
    with pytest.warns(UserWarning, match=r"Urban100: 1 image\(s\) .*different pixels.*img_007"):
        ensure(urban, hr_dir, check_copies=True)
    assert urban.server.state.hits == []


def test_own_copy_under_other_names_is_used_as_it_is(urban: Published, tmp_path: Path) -> None:
    hr_dir = tmp_path / "HR"
    hr_dir.mkdir()
    (hr_dir / "img_001_SRF_4_HR.png").write_bytes(urban.served["img_001.png"].read_bytes())
    with pytest.warns(UserWarning, match=r"other names.*img_001_SRF_4_HR\.png.*nothing is down"):
        ensure(urban, hr_dir)
    assert image_names(hr_dir) == ["img_001_SRF_4_HR.png"] and urban.server.state.hits == []


def test_download_off_names_how_to_get_a_missing_set(urban: Published, tmp_path: Path) -> None:
    hr_dir = tmp_path / "benchmarks" / "Urban100" / "HR"
    with pytest.raises(DatasetNotFoundError) as caught:
        ensure(urban, hr_dir, allow_download=False)
    message = str(caught.value)
    assert message.startswith("Urban100 images not found") and str(hr_dir) in message
    assert "data.download=true" in message and "paths.data_dir" in message
    assert not hr_dir.exists() and urban.server.state.hits == []
    copy_set(urban, hr_dir)
    (hr_dir / "img_009.png").unlink()
    with pytest.warns(UserWarning, match=r"Urban100: 1 of its 12 images are missing"):
        ensure(urban, hr_dir, allow_download=False)
    assert urban.server.state.hits == []


# --- through the data configs and the entry points --------------------------------------------


def test_urban100_on_an_empty_data_folder_downloads_verifies_and_trains(
    pinned: Published, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    overrides = [
        *TINY,
        "model=edsr",
        "model.net.num_blocks=1",
        "model.net.num_features=8",
        "data=urban100",
        "data.train_set.val_count=2",
        f"paths.data_dir={data_dir}",
        "trainer.max_steps=2",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert not [w for w in caught if "Urban100" in str(w.message)]  # the reference pixels
    assert image_names(data_dir / "benchmarks" / "Urban100" / "HR") == all_names(12)
    assert "val/psnr_y" in metrics and metrics["val/psnr_y"] > 10
    assert "downloading Urban100: 12/12 files" in capsys.readouterr().out


def test_eval_downloads_missing_sets_too(
    server: Server,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published = publish(server, tmp_path / "manifests", {"Set5": 3})
    monkeypatch.setattr(benchmark_download, "DOWNLOADS", published.manifest)
    monkeypatch.setattr(pixels, "MANIFEST", published.pixels)
    data_dir = tmp_path / "data"
    overrides = [
        "model=bicubic",
        "data=benchmark",
        "data.sets=[Set5]",
        f"paths.data_dir={data_dir}",
        "comparisons=0",
        "trainer.enable_progress_bar=false",
    ]
    (summary,) = evaluate(compose_config("eval", overrides, tmp_path / "eval"))
    assert summary.images == 3
    assert image_names(data_dir / "benchmarks" / "Set5" / "HR") == all_names(3)
    assert BenchmarkSet("Set5", str(data_dir / "benchmarks"), scale=2).load()[0].note == ""


def test_nothing_is_logged_before_the_data_check_fails(
    pinned: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials either
    run_dir = tmp_path / "run"
    overrides = [*TINY, "data=urban100", f"paths.data_dir={tmp_path / 'data'}", "logger=wandb"]
    cfg = compose_config("train", [*overrides, "data.download=false"], run_dir)
    try:
        with pytest.raises(DatasetNotFoundError, match=r"data\.download=true"):
            train(cfg)
    finally:
        close_loggers()
    created = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
    assert not {"wandb", "csv", "checkpoints", "metrics.csv"} & set(created), created
    assert pinned.server.state.hits == []


def run_train_with(published: Published, args: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m src.train args`` in a child process that reads the fake manifests."""
    code = (
        "import runpy, sys; from pathlib import Path; "
        "import src.data.benchmark_download as d, src.data.benchmarks as b; "
        "d.DOWNLOADS = Path(sys.argv.pop(1)); b.MANIFEST = Path(sys.argv.pop(1)); "
        "runpy.run_module('src.train', run_name='__main__', alter_sys=True)"
    )
    command = [sys.executable, "-c", code, str(published.manifest), str(published.pixels), *args]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_a_tampered_file_stops_the_command_with_one_error_line(
    urban: Published, tmp_path: Path
) -> None:
    data = bytearray(urban.served["img_010.png"].read_bytes())
    data[100] ^= 0xFF
    urban.served["img_010.png"].write_bytes(bytes(data))
    data_dir = tmp_path / "data"
    args = ["data=urban100", f"paths.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_train_with(urban, [*args, *TINY, "logger=wandb"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: Urban100: img_010.png was not downloaded: checksum mismatch")
    assert urban.url("img_010.png") in line
    hr_dir = data_dir / "benchmarks" / "Urban100" / "HR"
    assert image_names(hr_dir) == all_names(9)  # nothing of img_010.png is left
    assert "downloading Urban100: 12 files" in result.stdout
    assert not (tmp_path / "run" / "wandb").exists()
