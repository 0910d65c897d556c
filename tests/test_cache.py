"""Decode once: the memory cap on decoded training images and the memory-mapped sub-image cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.cache import CacheSettings, MemoryCapError, decoded_bytes
from src.data.datamodule import SRDataModule
from src.data.degradations import AlbumentationsDegradation, BicubicDegradation
from src.data.paired import PairedFolderImages
from src.data.sources import FolderImages, SkimageImages
from src.data.subimages import SubImageCache, cut_positions
from src.io.images import ImageReadError, read_rgb
from src.ops.imresize import imresize_uint8, modcrop
from src.utils.errors import UserError
from tests.helpers import run_module
from tests.test_data import write_folder

VAL = SkimageImages(names=["chelsea"], name="val")


def settings(tmp_path: Path, **values: object) -> CacheSettings:
    return CacheSettings(**{"crop": 48, "step": 24, "dir": str(tmp_path / "cache"), **values})  # type: ignore[arg-type]


def module(folder: Path, cache: CacheSettings, **kwargs: object) -> SRDataModule:
    train = FolderImages(root=str(folder), name="mine")
    return SRDataModule(
        2,
        [VAL],
        train,
        lr_patch_size=8,
        batch_size=4,
        num_patches=32,
        cache=cache,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("length", "crop", "step", "expected"),
    [
        (100, 48, 24, [0, 24, 48, 52]),
        (96, 48, 24, [0, 24, 48]),
        (48, 48, 24, [0]),
        (30, 48, 24, [0]),
        (100, 40, 40, [0, 40, 60]),
    ],
)
def test_cut_positions_cover_the_side_with_the_last_flush(length, crop, step, expected):
    assert cut_positions(length, crop, step) == expected


def test_sub_images_are_exact_pieces_of_the_whole_hr_and_its_bicubic_lr(tmp_path: Path):
    files = write_folder(tmp_path / "hr", 2, height=70, width=101)
    cache = SubImageCache(settings(tmp_path), "mine", files, 2, BicubicDegradation())
    cache.ensure_built("error")
    images = cache.load()
    whole = {p.stem: modcrop(read_rgb(p), 2) for p in files}
    lows = {stem: imresize_uint8(hr, 0.5) for stem, hr in whole.items()}
    # 70x101 mod-cropped to 70x100: rows at 0, 22 and columns at 0, 24, 48, 52 for each image.
    assert len(images) == 2 * 2 * 4
    for image in images:
        assert isinstance(image.pixels.base, np.memmap) or isinstance(image.pixels, np.memmap)
        stem, position = image.name.split("@")
        left, top = (int(v) for v in position.split(","))
        np.testing.assert_array_equal(image.pixels, whole[stem][top : top + 48, left : left + 48])
        assert image.lr is not None
        expected_lr = lows[stem][top // 2 : top // 2 + 24, left // 2 : left // 2 + 24]
        np.testing.assert_array_equal(image.lr, expected_lr)


def test_random_degradations_store_only_hr(tmp_path: Path):
    files = write_folder(tmp_path / "hr", 1, height=64, width=64)
    cache = SubImageCache(settings(tmp_path), "mine", files, 2, AlbumentationsDegradation())
    cache.ensure_built("error")
    assert not (cache.folder / "lr.u8").exists()
    assert all(image.lr is None for image in cache.load())


def test_cache_is_reused_and_rebuilt_when_a_source_changes(tmp_path: Path):
    files = write_folder(tmp_path / "hr", 2, height=64, width=64)
    cache = SubImageCache(settings(tmp_path), "mine", files, 2, BicubicDegradation())
    cache.ensure_built("error")
    index = cache.folder / "index.json"
    built = index.stat().st_mtime_ns
    cache.ensure_built("error")
    assert index.stat().st_mtime_ns == built  # current: not rebuilt
    write_folder(tmp_path / "other", 1, height=64, width=64)
    (tmp_path / "other" / "img_001.png").replace(files[0])  # new content under the same name
    os.utime(files[0], ns=(built + 10**9, built + 10**9))
    assert not cache.is_current()
    cache.ensure_built("error")
    np.testing.assert_array_equal(cache.load()[0].pixels, read_rgb(files[0])[:48, :48])


def test_a_failed_build_leaves_no_cache_behind(tmp_path: Path):
    files = write_folder(tmp_path / "hr", 2, height=64, width=64)
    (tmp_path / "hr" / "broken.png").write_bytes(b"not a png")
    files.append(tmp_path / "hr" / "broken.png")
    cache = SubImageCache(settings(tmp_path), "mine", files, 2, BicubicDegradation())
    with pytest.raises(ImageReadError, match=r"broken\.png"):
        cache.ensure_built("error")
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.warns(UserWarning, match=r"broken\.png"):
        cache.ensure_built("skip")
        images = cache.load()
    assert {image.name.split("@")[0] for image in images} == {"img_001", "img_002"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["scale=3", "cache=subimages", "data.cache.crop=50", "data.cache.step=25"],
            r"data.cache.crop=50 must be a "
            r"multiple of the scale \(3\)",
        ),
        (["cache=subimages", "data.cache.crop=48", "data.cache.step=96"], r"data\.cache\.step"),
        (["data.cache.memory_gb=0"], r"data\.cache\.memory_gb must be a number > 0 or null"),
    ],
)
def test_cache_settings_are_checked_before_any_work(tmp_path: Path, overrides, message):
    from src.utils.schema import check_config
    from tests.helpers import compose_config

    with pytest.raises(UserError, match=message):
        check_config(compose_config("train", overrides, tmp_path), "train")


def test_data_module_trains_from_mapped_sub_images(tmp_path: Path):
    write_folder(tmp_path / "hr", 3, height=64, width=96)
    datamodule = module(tmp_path / "hr", settings(tmp_path, on_disk=True))
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.train_data is not None
    assert len(datamodule.train_data.pairs) == 3 * 2 * 3
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["lr"].shape == (4, 3, 8, 8) and batch["hr"].shape == (4, 3, 16, 16)


def test_whole_images_mapped_give_the_same_batches_as_in_memory(tmp_path: Path):
    write_folder(tmp_path / "hr", 3, height=64, width=96)
    batches = []
    for cache in (CacheSettings(), settings(tmp_path, on_disk=True, crop=None)):
        datamodule = module(tmp_path / "hr", cache)
        datamodule.prepare_data()
        datamodule.setup("fit")
        batches.append(list(datamodule.train_dataloader()))
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the mapped one, named ..._whole_...
    for in_memory, mapped in zip(*batches, strict=True):
        assert in_memory["name"] == mapped["name"]
        assert torch.equal(in_memory["lr"], mapped["lr"])
        assert torch.equal(in_memory["hr"], mapped["hr"])


def test_sub_images_need_a_folder_of_hr_files(tmp_path: Path):
    write_folder(tmp_path / "hr", 1, height=32, width=32)
    write_folder(tmp_path / "lr", 1, height=16, width=16)
    paired = PairedFolderImages(hr_root=str(tmp_path / "hr"), lr_root=str(tmp_path / "lr"), scale=2)
    datamodule = SRDataModule(2, [VAL], paired, cache=settings(tmp_path, on_disk=True))
    with pytest.raises(UserError, match="needs a training set of HR image files"):
        datamodule.prepare_data()


def test_memory_cap_stops_before_decoding_and_names_the_size(tmp_path: Path):
    files = write_folder(tmp_path / "hr", 4, height=512, width=512)
    assert decoded_bytes(files, 2) == 4 * 512 * 512 * 3 * 5 // 4
    datamodule = module(tmp_path / "hr", CacheSettings(memory_gb=0.001))
    with pytest.raises(MemoryCapError, match=r"mine: 4 images decode to 3.8 MiB.*memory_gb=0.001"):
        datamodule.setup("fit")
    module(tmp_path / "hr", CacheSettings(memory_gb=0.01)).setup("fit")  # 3.75 MiB fits


def test_train_command_with_sub_image_cache(tmp_path: Path):
    write_folder(tmp_path / "hr", 4, height=64, width=64)  # 2 to train, 2 to validate
    args = [
        "model=srcnn",
        "data=folder",
        f"data.root={tmp_path / 'hr'}",
        "cache=subimages",
        "data.cache.crop=32",
        "data.cache.step=32",
        f"data.cache.dir={tmp_path / 'cache'}",
        "data.lr_patch_size=8",
        "data.batch_size=2",
        "trainer.max_steps=2",
        "logger=none",
        "callbacks=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = run_module("src.train", args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_split_too_large_for_the_folder_is_a_clear_error(tmp_path: Path):
    write_folder(tmp_path / "hr", 2)
    result = run_module(
        "src.train", ["data=folder", f"data.root={tmp_path / 'hr'}", "trainer.max_steps=1"]
    )
    assert result.returncode == 2
    assert "needs val_count between 1 and 1 for its 2 images" in result.stderr
    assert "Traceback" not in result.stderr


def test_same_set_name_in_two_folders_gets_two_caches(tmp_path: Path):
    caches = []
    for folder in ("a", "b"):
        files = write_folder(tmp_path / folder / "HR", 1, height=64, width=64)
        cache = SubImageCache(settings(tmp_path), "HR", files, 2, BicubicDegradation())
        cache.ensure_built("error")
        caches.append(cache)
    assert caches[0].folder != caches[1].folder
    assert caches[0].is_current() and caches[1].is_current()


def test_an_unwritable_cache_folder_is_a_clear_error(tmp_path: Path):
    files = write_folder(tmp_path / "hr", 1, height=64, width=64)
    (tmp_path / "a-file").write_text("not a folder")
    where = settings(tmp_path, dir=str(tmp_path / "a-file" / "cache"))
    cache = SubImageCache(where, "mine", files, 2, BicubicDegradation())
    with pytest.raises(
        UserError, match=r"could not write the mine data cache under .*data\.cache\.dir"
    ):
        cache.ensure_built("error")


def test_header_sizes_of_huge_and_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from PIL import Image

    from src.data.cache import header_size

    huge = tmp_path / "huge.png"
    Image.new("L", (200, 100)).save(huge)
    # PIL refuses to open images over twice this many pixels (its decompression-bomb guard);
    # the real limit is 179 MP, lowered here to keep the file small.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    (tmp_path / "junk.png").write_bytes(b"junk")
    assert header_size(huge) == (200, 100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    assert header_size(tmp_path / "junk.png") == (0, 0)


@pytest.mark.parametrize("crop", [48, None])
def test_each_blur_gets_its_own_cache_and_the_same_one_is_reused(tmp_path: Path, crop):
    from src.data.synthetic import BlurBicubicDegradation

    files = write_folder(tmp_path / "hr", 2, height=64, width=64)
    where = settings(tmp_path, crop=crop)

    def built_lr(sigma: float) -> tuple[SubImageCache, np.ndarray]:
        blur = BlurBicubicDegradation(kernel_size=7, sigma=(sigma, sigma))
        cache = SubImageCache(where, "mine", files, 2, blur)
        cache.ensure_built("error")
        lr = np.stack([np.asarray(image.lr) for image in cache.load()])
        expected = blur(modcrop(read_rgb(files[0]), 2), 2, np.random.default_rng(0))
        first = cache.load()[0]
        if crop is None:  # whole images: the first one's stored LR is the blurred LR itself
            assert np.array_equal(first.lr, expected)
        return cache, lr

    sharp, sharp_lr = built_lr(1.0)
    blurry, blurry_lr = built_lr(2.0)
    assert sharp.folder != blurry.folder
    assert not np.array_equal(sharp_lr, blurry_lr)
    modified = (blurry.folder / "index.json").stat().st_mtime_ns
    again, again_lr = built_lr(2.0)
    assert again.folder == blurry.folder
    assert (again.folder / "index.json").stat().st_mtime_ns == modified  # reused, not rebuilt
    assert np.array_equal(again_lr, blurry_lr)
