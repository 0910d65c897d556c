"""Clip data: sources, training samples, whole validation clips, synthetic camera paths, downloads
and the one-line errors of bad clips (src/data/clips.py, clip_datamodule.py, synthetic_clips.py)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
import zipfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import cv2
import hydra
import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException

from src.data.clip_datamodule import ClipDataModule
from src.data.clips import (
    Clip,
    ClipFolders,
    ClipRef,
    DiskClip,
    MemoryClip,
    TrainingClips,
    lr_of_window,
    make_lr,
)
from src.data.errors import DatasetNotFoundError
from src.data.sources import skimage_photo
from src.data.synthetic_clips import SyntheticClips, draw_path, render_frames
from src.io.images import read_rgb, write_image
from src.ops.bd import bd_downsample
from src.ops.imresize import imresize_array, modcrop
from src.utils.errors import UserError
from src.utils.schema import check_config
from tests.helpers import compose_config

CLIP_CONFIGS = ["vid4", "reds", "reds4", "vimeo90k", "synthetic_clips", "clip_folder"]
NEEDS = {"clip_folder": ["data.root=/some/clips"]}


# --- helpers ---------------------------------------------------------------------------------
def photo_frames(count: int, height: int, width: int, step: int = 3) -> np.ndarray:
    """``count`` frames cut from a bundled photo, each moved ``step`` px from the last."""
    photo = skimage_photo("astronaut").pixels
    return np.stack([photo[10 : 10 + height, step * t : step * t + width] for t in range(count)])


def write_clip(folder: Path, frames: np.ndarray, names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png" for name in (names or [f"{t:08d}" for t in range(len(frames))])]
    for path, frame in zip(paths, frames, strict=True):
        write_image(path, frame)
    return paths


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


def coded_clip(frames: int, lr_h: int, lr_w: int, scale: int) -> Clip:
    """A clip whose pixels say where they come from: channel 0 the frame, 1 and 2 the LR row
    and column of their block (HR blocks of scale x scale px are constant)."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(lr_h), np.arange(lr_w), indexing="ij")
    lr = np.stack([t, y, x], axis=-1).astype(np.uint8)
    hr = lr.repeat(scale, axis=1).repeat(scale, axis=2)
    return Clip("coded", "c", tuple(f"{i:08d}" for i in range(frames)), hr, lr)


# --- configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data", CLIP_CONFIGS)
def test_every_clip_config_composes_checks_and_builds(data: str, tmp_path: Path):
    for task in ("train", "eval"):
        cfg = compose_config(task, [f"data={data}", "scale=4", *NEEDS.get(data, [])], tmp_path)
        check_config(cfg, task)
        datamodule = hydra.utils.instantiate(cfg.data)
        assert isinstance(datamodule, ClipDataModule)
        assert datamodule.val_set_names and datamodule.pixel_format.channels == 3


def test_reds_holds_out_reds4_and_reads_its_own_bicubic_frames(tmp_path: Path):
    cfg = compose_config("train", ["data=reds", "scale=4"], tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.train_set.exclude == ["000", "011", "015", "020"]
    assert datamodule.val_sets[0].clips == ["000", "011", "015", "020"]
    assert datamodule.train_set.lr_source == "files"
    assert datamodule.train_set.lr_root.endswith("REDS/train_sharp_bicubic/X4")


def test_vimeo_uses_the_septuplet_lists(tmp_path: Path):
    cfg = compose_config("train", ["data=vimeo90k", "scale=4"], tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert datamodule.train_set.list_file.endswith("vimeo_septuplet/sep_trainlist.txt")
    assert datamodule.val_sets[0].list_file.endswith("vimeo_septuplet/sep_testlist.txt")
    assert datamodule.val_set_names == ["Vimeo90K-T"] and datamodule.num_frames == 7


def test_bd_at_an_odd_scale_is_refused_by_key(tmp_path: Path):
    cfg = compose_config("eval", ["data=vid4", "scale=3", "data.lr_source=bd"], tmp_path)
    with pytest.raises(InstantiationException) as error:
        hydra.utils.instantiate(cfg.data)
    cause = error.value.__cause__
    assert isinstance(cause, UserError) and "\n" not in str(cause)
    assert str(cause).startswith("Vid4.lr_source=bd needs an even scale")


# --- Vid4 on the shared frames ---------------------------------------------------------------
def test_vid4_walk_is_one_sequence_with_matlab_bicubic_lr(shared_data: Path, tmp_path: Path):
    walk = shared_data / "video/Vid4/walk"
    if not walk.is_dir():
        pytest.skip(f"Vid4 walk frames not found at {walk}")
    overrides = ["data=vid4", "scale=4", f"paths.data_dir={shared_data}"]
    cfg = compose_config("eval", [*overrides, "data.val_sets.0.clips=[walk]"], tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.ensure_available()
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["lr"].shape == (1, 47, 3, 120, 180) and batch["hr"].shape == (1, 47, 3, 480, 720)
    assert (batch["set"], batch["name"], batch["index"].tolist()) == (["Vid4"], ["walk"], [0])
    assert [names[0] for names in batch["frames"]] == [f"{t:08d}" for t in range(47)]
    for t in (0, 46):
        hr = modcrop(read_rgb(walk / f"{t:08d}.png"), 4)
        lr = (batch["lr"][0, t].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert np.array_equal(lr, imresize_array(hr, 0.25))
    bd = ClipRef("Vid4", "walk", (walk / "00000000.png", walk / "00000001.png"), "bd").read(4)
    assert np.array_equal(bd.lr[1], bd_downsample(read_rgb(walk / "00000001.png"), 4))


def test_vid4_names_the_missing_clip_folder(shared_data: Path, tmp_path: Path):
    vid4 = shared_data / "video/Vid4"
    if not (vid4 / "walk").is_dir() or (vid4 / "calendar").is_dir():
        pytest.skip("needs ../shared's Vid4 with walk only")
    cfg = compose_config(
        "eval", ["data=vid4", "scale=4", f"paths.data_dir={shared_data}"], tmp_path
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    with pytest.raises(UserError, match=re.escape(str(vid4 / "calendar"))) as error:
        datamodule.ensure_available()
    one_line(error)
    cfg = compose_config(
        "eval",
        ["data=vid4", "scale=4", f"paths.data_dir={shared_data}", "data.on_bad_image=skip"],
        tmp_path,
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    with pytest.warns(UserWarning, match="skipped 3 unusable clip"):
        datamodule.ensure_available()
    assert [ref.name for ref in datamodule.val_sets[0].clips_found()] == ["walk"]


# --- bad input -------------------------------------------------------------------------------
def test_a_missing_root_is_one_line_naming_it(tmp_path: Path):
    source = ClipFolders(root=str(tmp_path / "nowhere"), name="mine")
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(tmp_path / "nowhere"))) as error:
        source.clips_found()
    one_line(error)


def test_gaps_and_mixed_sizes_are_refused_naming_the_file(tmp_path: Path):
    frames = photo_frames(3, 32, 48)
    write_clip(tmp_path / "clips/gappy", frames, ["f0001", "f0002", "f0004"])
    write_clip(tmp_path / "clips/mixed", frames)
    write_image(tmp_path / "clips/mixed/00000002.png", frames[2][:24])
    with pytest.raises(UserError, match="f0004") as error:
        ClipFolders(root=str(tmp_path / "clips"), clips=["gappy"]).clips_found()
    one_line(error)
    with pytest.raises(UserError, match=re.escape("00000002.png")) as error:
        ClipFolders(root=str(tmp_path / "clips"), clips=["mixed"]).clips_found()
    one_line(error)


def test_num_frames_longer_than_a_clip_names_the_key_and_clip(tmp_path: Path):
    write_clip(tmp_path / "clips/short", photo_frames(3, 32, 32))
    source = ClipFolders(root=str(tmp_path / "clips"), name="mine")
    datamodule = ClipDataModule(
        2, val_sets=[source], train_set=source, num_frames=5, lr_patch_size=8
    )
    with pytest.raises(
        UserError, match=re.escape("mine/short: 3 frames, fewer than data.num_frames=5")
    ) as error:
        datamodule.setup("fit")
    one_line(error)


def test_lr_files_of_another_scale_are_refused(tmp_path: Path):
    frames = photo_frames(2, 32, 32)
    write_clip(tmp_path / "hr/a", frames)
    write_clip(tmp_path / "lr/a", frames[:, ::2, ::2])
    source = ClipFolders(root=str(tmp_path / "hr"), lr_source="files", lr_root=str(tmp_path / "lr"))
    with pytest.raises(UserError, match="need 8x8") as error:
        source.clips_found()[0].read(4)
    one_line(error)


# --- training samples ------------------------------------------------------------------------
def test_a_sample_is_consecutive_frames_one_crop_one_transform(tmp_path: Path):
    scale, clip = 2, coded_clip(frames=12, lr_h=20, lr_w=24, scale=2)
    data = TrainingClips([MemoryClip(clip)], num_frames=5, lr_patch_size=6, length=64, seed=3)
    seen_reversed, seen_layouts = set(), set()
    for index in range(len(data)):
        sample = data[index]
        lr = (sample["lr"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        hr = (sample["hr"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        assert lr.shape == (5, 6, 6, 3) and hr.shape == (5, 12, 12, 3)
        assert np.array_equal(hr[:, ::scale, ::scale], lr)  # LR and HR crops line up
        assert (lr[:, :, :, 1:] == lr[:1, :, :, 1:]).all()  # the same crop and turn in every frame
        steps = np.diff(lr[:, 0, 0, 0].astype(int))
        assert set(steps.tolist()) in ({1}, {-1})  # consecutive frames, forwards or backwards
        assert bool(sample["reversed"]) == (steps[0] == -1)
        assert int(lr[:, 0, 0, 0].min()) == int(sample["start"])
        seen_reversed.add(bool(sample["reversed"]))
        seen_layouts.add(lr[0, :, :, 1:].tobytes())
    assert seen_reversed == {True, False} and len(seen_layouts) > 32


def test_samples_are_a_pure_function_of_index_and_seed():
    clip = coded_clip(frames=9, lr_h=16, lr_w=16, scale=2)
    make = functools.partial(TrainingClips, [MemoryClip(clip)], 4, 8, 20)
    first, again, other = make(seed=1), make(seed=1), make(seed=2)
    for index in (0, 7, 19):
        assert torch.equal(first[index]["hr"], again[index]["hr"])
    assert any(not torch.equal(first[i]["hr"], other[i]["hr"]) for i in range(5))


@pytest.mark.parametrize("lr_source", ["bi", "bd", "files"])
def test_disk_samples_equal_memory_samples(lr_source: str, tmp_path: Path):
    scale, frames = 4, photo_frames(4, 96, 128)
    hr_paths = write_clip(tmp_path / "hr/a", frames)
    lr_paths = None
    if lr_source == "files":
        lr_paths = tuple(write_clip(tmp_path / "lr/a", make_lr(frames, scale, "bi")))
    ref = ClipRef("s", "a", tuple(hr_paths), lr_source, lr_paths)  # type: ignore[arg-type]
    memory, disk = MemoryClip(ref.read(scale)), DiskClip(ref, scale, (24, 32))
    for start, top, left in [(0, 0, 0), (1, 10, 7), (2, 16, 24), (0, 3, 30)]:
        size = min(8, 24 - top, 32 - left)
        lr_m, hr_m = memory.window(start, 2, top, left, size)
        lr_d, hr_d = disk.window(start, 2, top, left, size)
        assert np.array_equal(hr_m, hr_d) and np.array_equal(lr_m, lr_d), (start, top, left)


def test_lr_of_a_window_equals_the_lr_of_the_whole_frame():
    frames = photo_frames(2, 120, 96)
    for scale, source in [(2, "bi"), (3, "bi"), (4, "bi"), (4, "bd"), (2, "bd")]:
        hr = frames[:, : 120 - 120 % scale, : 96 - 96 % scale]
        whole = make_lr(hr, scale, source)
        for top, left, size in [(0, 0, 7), (5, 3, 9), (hr.shape[1] // scale - 6, 2, 6)]:
            crop = lr_of_window(hr, scale, top, left, size, source)
            assert np.array_equal(crop, whole[:, top : top + size, left : left + size])


def test_training_batches_have_the_contract_shapes(tmp_path: Path):
    cfg = compose_config(
        "train",
        ["data=synthetic_clips", "scale=4", "data.num_patches=6", "data.batch_size=3"],
        tmp_path,
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert len(batches) == 2
    assert batches[0]["lr"].shape == (3, 7, 3, 32, 32) and batches[0]["hr"].shape == (
        3,
        7,
        3,
        128,
        128,
    )
    assert (
        batches[0]["lr"].dtype == torch.float32
        and 0 <= batches[0]["lr"].min() <= batches[0]["lr"].max() <= 1
    )
    item = next(iter(datamodule.val_dataloader()))
    assert item["lr"].shape == (1, 15, 3, 36, 48) and item["hr"].shape == (1, 15, 3, 144, 192)
    assert item["set"] == ["synthetic_clips_val"] and item["name"] == ["chelsea_00"]
    assert item["frames"][:2] == [("00000000",), ("00000001",)] and item["index"].tolist() == [0]


def test_a_resumed_run_continues_with_the_same_clips(tmp_path: Path):
    overrides = ["data=synthetic_clips", "scale=2", "data.num_patches=8", "data.batch_size=2"]
    cfg = compose_config("train", overrides, tmp_path)

    def batches(global_step: int) -> list[torch.Tensor]:
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.trainer = SimpleNamespace(
            global_step=global_step, accumulate_grad_batches=1, world_size=1, max_steps=4
        )
        datamodule.setup("fit")
        return [batch["hr"] for batch in datamodule.train_dataloader()]

    whole, resumed = batches(0), batches(3)
    assert len(whole) == 4 and len(resumed) == 1 and torch.equal(whole[3], resumed[0])


def test_an_unreadable_validation_clip_is_refused_or_skipped(tmp_path: Path):
    paths = write_clip(tmp_path / "clips/a", photo_frames(3, 16, 16))
    source = ClipFolders(root=str(tmp_path / "clips"))
    datamodule = ClipDataModule(2, val_sets=[source], val_workers=0)
    datamodule.setup("validate")
    paths[1].write_bytes(b"not a png")
    batch = next(iter(datamodule.val_dataloader()))
    with pytest.raises(UserError, match=re.escape(str(paths[1]))) as error:
        datamodule.on_before_batch_transfer(batch, 0)
    one_line(error)
    datamodule.on_bad_image = "skip"
    with pytest.warns(UserWarning, match="skipped unreadable clip"):
        left = datamodule.on_before_batch_transfer(batch, 0)
    assert "lr" not in left and left["index"].tolist() == [0]


# --- synthetic camera paths ------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def test_synthetic_frames_differ_by_sub_pixel_motion():
    photo = skimage_photo("astronaut").pixels
    path = draw_path(np.random.default_rng(0), 6, (128, 128), photo.shape[:2], 2.0, 0.0, 0.0)
    frames = render_frames(photo, path, (128, 128))
    inner = slice(8, -8)
    fractional = 0
    for t in range(5):
        step = path.centres[t + 1] - path.centres[t]
        assert 0 < np.linalg.norm(step) <= 2.0 + 1e-9
        fractional += int(np.any(np.abs(step - np.round(step)) > 0.05))
        shift = np.float32([[1, 0, step[0]], [0, 1, step[1]]])
        moved = cv2.warpAffine(
            frames[t].astype(np.float32),
            shift,
            (128, 128),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        )
        still = psnr(frames[t + 1][inner, inner], frames[t][inner, inner])
        compensated = psnr(frames[t + 1][inner, inner], np.clip(moved, 0, 255)[inner, inner])
        assert still < 35 and compensated > 40 and compensated > still + 10, (t, still, compensated)
    assert fractional >= 3


def test_synthetic_clips_are_reproducible_by_seed():
    def clips(seed: int) -> list[Clip]:
        from src.data.sources import SkimageImages

        source = SyntheticClips(
            images=SkimageImages(["chelsea"]),
            clips_per_image=2,
            frames=4,
            frame_size=(64, 96),
            max_zoom=0.05,
            max_rotation=1.0,
            seed=seed,
        )
        return [entry.read(2) for entry in source.clips_found()]

    first, again, other = clips(5), clips(5), clips(6)
    assert [c.name for c in first] == ["chelsea_00", "chelsea_01"]
    assert all(
        np.array_equal(a.hr, b.hr) and np.array_equal(a.lr, b.lr)
        for a, b in zip(first, again, strict=True)
    )
    assert not np.array_equal(first[0].hr, other[0].hr)
    assert first[0].lr.shape == (4, 32, 48, 3)
    assert np.array_equal(first[0].lr[2], imresize_array(first[0].hr[2], 0.5))
    assert not np.array_equal(first[0].hr[0], first[0].hr[1])


def test_a_photo_too_small_for_the_view_is_named():
    from src.data.sources import SkimageImages

    source = SyntheticClips(images=SkimageImages(["chelsea"]), frame_size=(400, 400))
    with pytest.raises(UserError, match="sample/chelsea: a 451x300 photo is too small") as error:
        source.clips_found()
    one_line(error)


# --- folders of clips, video files -----------------------------------------------------------
def test_clip_folder_splits_clips_and_reads_video_files(tmp_path: Path):
    from src.io.video import VideoWriter

    root = tmp_path / "clips"
    for name in ("a", "b"):
        write_clip(root / name, photo_frames(4, 48, 64))
    with VideoWriter(root / "c.mp4", 64, 48, fps=Fraction(10)) as writer:
        for frame in photo_frames(5, 48, 64):
            writer.write(np.ascontiguousarray(frame))
    cfg = compose_config(
        "train",
        [
            "data=clip_folder",
            f"data.root={root}",
            "scale=2",
            "data.num_frames=3",
            "data.lr_patch_size=8",
            "data.num_patches=4",
        ],
        tmp_path,
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    train = sorted(entry.name for entry in datamodule.train_set.clips_found())
    val = [entry.name for entry in datamodule.val_sets[0].clips_found()]
    assert len(train) == 2 and len(val) == 1 and sorted([*train, *val]) == ["a", "b", "c"]
    video = next(
        e
        for e in [*datamodule.train_set.clips_found(), *datamodule.val_sets[0].clips_found()]
        if e.name == "c"
    )
    clip = video.read(2)
    assert clip.hr.shape == (5, 48, 64, 3) and clip.frames[-1] == "00000004"
    assert psnr(clip.hr[0], photo_frames(1, 48, 64)[0]) > 30  # decoded, lossy
    assert next(iter(datamodule.train_dataloader()))["lr"].shape == (4, 3, 3, 8, 8)


# --- downloads -------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def clip_archive(path: Path, inner: str) -> str:
    """A zip holding two clip folders under ``inner``; returns its sha256."""
    frames = photo_frames(3, 16, 16)
    with zipfile.ZipFile(path, "w") as archive:
        for clip in ("000", "001"):
            for t, frame in enumerate(frames):
                ok, png = cv2.imencode(".png", frame[:, :, ::-1])
                assert ok
                archive.writestr(f"{inner}/{clip}/{t:08d}.png", png.tobytes())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_clip_archive_is_downloaded_checked_and_unpacked(
    served: tuple[Path, str], tmp_path: Path
):
    folder, base = served
    digest = clip_archive(folder / "train_sharp.zip", "train/train_sharp")
    root = tmp_path / "REDS/train_sharp"
    download = {"url": f"{base}/train_sharp.zip", "sha256": digest, "subdir": "train/train_sharp"}
    source = ClipFolders(root=str(root), name="REDS", exclude=["000"], download=download)
    refs = source.clips_found()
    assert [ref.name for ref in refs] == ["001"] and len(refs[0].hr_paths) == 3
    assert (tmp_path / "REDS/.downloads/train_sharp.zip").is_file()


def test_an_archive_without_a_checksum_is_not_downloaded(served: tuple[Path, str], tmp_path: Path):
    folder, base = served
    clip_archive(folder / "train_sharp.zip", "train/train_sharp")
    download = {"url": f"{base}/train_sharp.zip", "sha256": None, "subdir": "train/train_sharp"}
    source = ClipFolders(root=str(tmp_path / "REDS/train_sharp"), name="REDS", download=download)
    with pytest.raises(
        UserError, match=re.escape("set data.train_set.download.sha256=<hex>")
    ) as error:
        source.clips_found()
    one_line(error)
    assert not (tmp_path / "REDS").exists()


def test_a_wrong_checksum_keeps_nothing(served: tuple[Path, str], tmp_path: Path):
    folder, base = served
    clip_archive(folder / "c.zip", "clips")
    download = {"url": f"{base}/c.zip", "sha256": "0" * 64, "subdir": "clips"}
    source = ClipFolders(root=str(tmp_path / "clips"), download=download)
    with pytest.raises(UserError, match="sha256"):
        source.clips_found()
    assert not (tmp_path / "clips").exists()


def test_a_mirrored_sample_is_its_frames_then_the_same_backwards(tmp_path: Path) -> None:
    overrides = [
        "data=synthetic_clips",
        "data.train_set.clips_per_image=1",
        "data.train_set.frames=4",
        "data.train_set.frame_size=[48,48]",
        "data.num_frames=3",
        "data.lr_patch_size=8",
        "data.reverse_prob=0",
        "scale=4",
    ]
    samples = {}
    for mirror in (False, True):
        cfg = compose_config("train", [*overrides, f"data.mirror={mirror}"], tmp_path / str(mirror))
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.setup("fit")
        samples[mirror] = datamodule.train_data[0]
    plain, mirrored = samples[False], samples[True]
    assert mirrored["lr"].shape[0] == 6 and mirrored["hr"].shape[0] == 6
    torch.testing.assert_close(mirrored["lr"][:3], plain["lr"])
    torch.testing.assert_close(mirrored["lr"][3:], plain["lr"].flip(0))
    torch.testing.assert_close(mirrored["hr"][3:], plain["hr"].flip(0))
