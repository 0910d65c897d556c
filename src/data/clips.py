"""Clips of video frames: where they come from (folders of frame folders), and the torch datasets
that cut training samples from them and serve whole clips for validation.

A clip is a folder of frames (``REDS/train_sharp/000/00000000.png ...``, ``Vid4/walk/...``,
``vimeo_septuplet/sequences/00001/0266/im1.png ...``), listed by
:func:`src.io.video.read_frame_folder` (natural name order; gaps and mixed sizes refused), or a
video file decoded by :func:`src.io.video.read_video_frames`. Its LR is chosen per
set (``lr_source``): ``bi``, MATLAB bicubic of each mod-cropped HR frame (:mod:`src.ops.imresize`,
bit-exact with MATLAB); ``bd``, the blur-downsampling of the BD-trained weights
(:func:`src.ops.bd.bd_downsample`); or ``files``, the set's own LR frames (REDS
``train_sharp_bicubic/X4``, Vid4 ``BIx4``) in a parallel folder, same clip and frame names.
Frames are decoded to 8-bit RGB.

Training samples (:class:`TrainingClips`) are ``num_frames`` consecutive frames at a random start,
one random crop for all frames, one of the 8 flips/rotations for all frames and, with probability
``reverse_prob``, the frames in reverse order; each sample is a pure function of ``(seed,
index)``, as the image patches are. A clip set that fits under the memory cap is decoded once and
cut from memory (:class:`MemoryClip`); a larger one (REDS, Vimeo-90K) is read from disk per sample
(:class:`DiskClip`), its bi/bd LR computed on the crop plus a margin, which gives the same pixels
as the LR of the whole frame. Validation items (:class:`ValidationClips`) are whole clips, one
sequence each (the Vid4 protocol), with their frame names.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.cache import header_size
from src.data.errors import DatasetNotFoundError
from src.data.sources import OnBadImage, Split, archive_to_fetch, split_files
from src.data.synthetic import SEED_BOUND
from src.io.images import ImageReadError, read_rgb, sixteen_to_eight_bits
from src.io.video import VIDEO_SUFFIXES, probe_video, read_frame_folder, read_video_frames
from src.ops.bd import bd_downsample
from src.ops.imresize import imresize_array, one_thread
from src.utils.errors import UserError

if TYPE_CHECKING:
    from src.io.download import RemoteArchive

log = logging.getLogger(__name__)

LrSource = Literal["bi", "bd", "files"]
LR_SOURCES = ("bi", "bd", "files")
# LR pixels of context kept around a crop whose LR is computed from it: more than the reach of
# the bicubic (2 x scale HR px from an LR pixel's centre) and BD (12 taps) kernels.
WINDOW_MARGIN = 4
Sample = dict[str, Any]


class ClipError(UserError, ValueError):
    """A clip that cannot be used (gaps in its numbering, frames of mixed sizes, too short, LR
    frames that do not match); the message names the folder or file."""


# --- frames of one clip ---------------------------------------------------------------------
def each_frame(function: Callable[[Any], np.ndarray], items: Iterable[Any]) -> list[np.ndarray]:
    """``function`` of each item, by as many threads as torch has, each running torch
    single-threaded: per-frame resizes at torch's 2 threads took 0.42 s a 720x480 frame on a
    busy 2-core machine, against about 8 ms on one thread (a frame is too small to share)."""
    threads = max(1, torch.get_num_threads())
    with one_thread(), ThreadPoolExecutor(threads, "srlab-frames") as pool:
        return list(pool.map(function, items))


def read_frames(paths: Sequence[Path]) -> np.ndarray:
    """Decode frames to one (T, H, W, 3) uint8 RGB array; a frame of another size than the
    first is refused naming both files."""
    frames = each_frame(read_rgb, paths)
    first = frames[0].shape
    for path, frame in zip(paths, frames, strict=True):
        if frame.shape != first:
            raise ClipError(
                f"{path}: frame is {frame.shape[1]}x{frame.shape[0]}, but {paths[0].name} of the "
                f"same clip is {first[1]}x{first[0]} (frames of mixed sizes)"
            )
    return np.stack(frames)


def modcrop_frames(frames: np.ndarray, scale: int) -> np.ndarray:
    """The top-left ``floor(H/s)*s x floor(W/s)*s`` region of every frame of (T, H, W, C)."""
    height, width = frames.shape[1:3]
    return frames[:, : height - height % scale, : width - width % scale]


def check_lr_source(lr_source: str, scale: int, where: str) -> None:
    """Refuse an unknown LR source, and BD at an odd scale (its recipe samples from s/2)."""
    if lr_source not in LR_SOURCES:
        raise UserError(
            f"{where}.lr_source must be one of {', '.join(LR_SOURCES)}, got {lr_source!r}"
        )
    if lr_source == "bd" and scale % 2:
        raise UserError(
            f"{where}.lr_source=bd needs an even scale (MATLAB's BD recipe keeps every s-th pixel "
            f"from s/2), got scale={scale}"
        )


def make_lr(hr: np.ndarray, scale: int, lr_source: str) -> np.ndarray:
    """The LR of (T, H, W, C) uint8 frames whose sides are multiples of ``scale``: MATLAB
    bicubic (``bi``) or BD (``bd``) of each frame, (T, H/s, W/s, C) uint8."""
    if lr_source == "bd":
        return np.stack(each_frame(partial(bd_downsample, scale=scale), hr))
    if lr_source != "bi":
        raise ValueError(f"no LR is computed for lr_source={lr_source!r}")
    # Frame by frame: one call over the whole (T, C, H, W) stack measured 3.7x slower.
    return np.stack(each_frame(partial(imresize_array, scale=1.0 / scale), hr))


def lr_of_window(
    frames: np.ndarray, scale: int, top: int, left: int, size: int, lr_source: str
) -> np.ndarray:
    """The ``size`` x ``size`` LR crop at LR ``(top, left)`` of mod-cropped (T, H, W, C) frames,
    computed from the HR crop plus :data:`WINDOW_MARGIN` LR pixels of context (cut at the
    frame's edges): the same pixels as the crop of :func:`make_lr` of the whole frames."""
    lr_h, lr_w = frames.shape[1] // scale, frames.shape[2] // scale
    t0, l0 = max(0, top - WINDOW_MARGIN), max(0, left - WINDOW_MARGIN)
    t1, l1 = min(lr_h, top + size + WINDOW_MARGIN), min(lr_w, left + size + WINDOW_MARGIN)
    region = frames[:, t0 * scale : t1 * scale, l0 * scale : l1 * scale]
    lr = make_lr(region, scale, lr_source)
    return lr[:, top - t0 : top - t0 + size, left - l0 : left - l0 + size]


# --- clips ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    """A decoded clip: ``hr`` (T, H, W, 3) uint8 mod-cropped to the scale, ``lr`` (T, H/s, W/s,
    3) uint8, and the name of each frame (file stems)."""

    set_name: str
    name: str
    frames: tuple[str, ...]
    hr: np.ndarray
    lr: np.ndarray


class ClipEntry(Protocol):
    """One clip of a set, not decoded yet: what the datasets need to list and read it."""

    @property
    def set_name(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def frame_names(self) -> tuple[str, ...]: ...

    def frame_size(self) -> tuple[int, int]:
        """(height, width) of its HR frames (before the mod-crop)."""
        ...

    def read(self, scale: int) -> Clip: ...


def check_lr_frames(lr: np.ndarray, hr: np.ndarray, scale: int, where: Path) -> None:
    """Refuse given LR frames whose size is not the mod-cropped HR divided by the scale."""
    expected = (hr.shape[1] // scale, hr.shape[2] // scale)
    if lr.shape[1:3] != expected:
        raise ClipError(
            f"{where}: LR frames are {lr.shape[2]}x{lr.shape[1]}, but the HR frames mod-cropped "
            f"to x{scale} need {expected[1]}x{expected[0]} (LR made for another scale?)"
        )


@dataclass(frozen=True)
class ClipRef:
    """A clip on disk: its HR frame files, its LR frame files (``lr_source=files``) or how its
    LR is made (``bi``, ``bd``)."""

    set_name: str
    name: str
    hr_paths: tuple[Path, ...]
    lr_source: LrSource
    lr_paths: tuple[Path, ...] | None = None

    @property
    def frame_names(self) -> tuple[str, ...]:
        return tuple(path.stem for path in self.hr_paths)

    def frame_size(self) -> tuple[int, int]:
        width, height = header_size(self.hr_paths[0])
        return height, width

    def read(self, scale: int) -> Clip:
        """Decode every frame; LR read from its files or made from the mod-cropped HR."""
        hr = modcrop_frames(read_frames(self.hr_paths), scale)
        if self.lr_paths is not None:
            lr = read_frames(self.lr_paths)
            check_lr_frames(lr, hr, scale, self.lr_paths[0].parent)
        else:
            lr = make_lr(hr, scale, self.lr_source)
        return Clip(self.set_name, self.name, self.frame_names, np.ascontiguousarray(hr), lr)

    def window(
        self, scale: int, start: int, count: int, top: int, left: int, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """LR and HR crops (``size`` LR px at LR ``(top, left)``) of frames ``start ..
        start + count - 1``, decoded from disk now."""
        hr = modcrop_frames(read_frames(self.hr_paths[start : start + count]), scale)
        s = scale
        hr_crop = hr[:, top * s : (top + size) * s, left * s : (left + size) * s]
        if self.lr_paths is None:
            return lr_of_window(hr, s, top, left, size, self.lr_source), hr_crop
        lr = read_frames(self.lr_paths[start : start + count])
        check_lr_frames(lr, hr, s, self.lr_paths[0].parent)
        return lr[:, top : top + size, left : left + size], hr_crop


def stack_frames(frames: list[np.ndarray], where: Path) -> np.ndarray:
    """Decoded frames as one (T, H, W, 3) uint8 array (deeper frames rounded to 8 bits); a
    frame of another size than the first is refused naming ``where`` and the frame."""
    frames = [sixteen_to_eight_bits(f) if f.dtype == np.uint16 else f for f in frames]
    for number, frame in enumerate(frames, start=1):
        if frame.shape != frames[0].shape:
            raise ClipError(
                f"{where}: frame {number} is {frame.shape[1]}x{frame.shape[0]}, but frame 1 is "
                f"{frames[0].shape[1]}x{frames[0].shape[0]} (frames of mixed sizes)"
            )
    return np.stack(frames)


@dataclass(frozen=True)
class VideoClip:
    """A clip in a video file, decoded whole when read (:mod:`src.io.video`); its frames are
    named by their place, ``00000000``, ``00000001``, ... Its LR is made (``bi``, ``bd``)."""

    set_name: str
    name: str
    path: Path
    lr_source: LrSource
    frame_count: int
    size: tuple[int, int]

    @classmethod
    def probe(cls, set_name: str, name: str, path: Path, lr_source: LrSource) -> VideoClip:
        """The clip of ``path``, its frame count and size read without decoding it all."""
        if lr_source == "files":
            raise ClipError(
                f"{path}: lr_source=files reads LR frame folders; a video file's LR is made "
                f"(lr_source=bi or bd)"
            )
        info = probe_video(path)
        return cls(set_name, name, path, lr_source, info.frames, (info.height, info.width))

    @property
    def frame_names(self) -> tuple[str, ...]:
        return tuple(f"{index:08d}" for index in range(self.frame_count))

    def frame_size(self) -> tuple[int, int]:
        return self.size

    def read(self, scale: int) -> Clip:
        decoded = [frame.pixels for frame in read_video_frames(self.path)]
        hr = np.ascontiguousarray(modcrop_frames(stack_frames(decoded, self.path), scale))
        names = tuple(f"{index:08d}" for index in range(len(hr)))
        return Clip(self.set_name, self.name, names, hr, make_lr(hr, scale, self.lr_source))


# --- where clips come from -------------------------------------------------------------------
def is_video_file(path: Path) -> bool:
    """A file whose suffix is a video container's."""
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def read_list_file(path: Path) -> list[str]:
    """Clip folders listed one per line (Vimeo-90K's ``sep_testlist.txt``), blank lines left out."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such clip list file")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def refuse_or_warn(problems: list[str], on_bad_image: OnBadImage, what: str) -> None:
    """Raise the first problem (``error``: one line naming the file) or warn with all of them
    (``skip``: those clips are left out)."""
    if not problems:
        return
    if on_bad_image == "error":
        raise ClipError(problems[0])
    listed = "\n  ".join(problems[:20]) + (
        f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    )
    warnings.warn(f"skipped {len(problems)} {what}:\n  {listed}", stacklevel=3)


@dataclass(kw_only=True)
class ClipFolders:
    """Clips as folders of frames (or video files) under ``root``: those ``clips`` names, those
    a ``list_file`` lists (relative paths, one per line), or every sub-folder and video file;
    less ``exclude``; optionally one side of a seeded train/val split of them (``split``,
    ``val_count``, ``split_seed``).

    ``lr_source`` says how LR frames are made (``bi``, ``bd``) or that they are read from
    ``lr_root``, which holds the same clip folders with the same frame names. A missing
    ``root`` (``lr_root``) is fetched from ``download`` (``lr_download``), the fields of a
    :class:`~src.io.download.RemoteArchive`, unpacked into ``download_to`` (default: the folder
    itself); an archive without a sha256 is never downloaded (:func:`archive_to_fetch`).
    ``download_key`` and ``lr_download_key`` say where those sit in the config, for messages.
    """

    root: str
    name: str = ""
    clips: list[str] | None = None
    exclude: list[str] = field(default_factory=list)
    list_file: str | None = None
    split: Split = "all"
    val_count: int = 0
    split_seed: int = 0
    lr_source: LrSource = "bi"
    lr_root: str | None = None
    on_bad_image: OnBadImage = "error"
    download: RemoteArchive | Mapping[str, Any] | None = None
    download_to: str | None = None
    download_key: str = "data.train_set.download"
    lr_download: RemoteArchive | Mapping[str, Any] | None = None
    lr_download_to: str | None = None
    lr_download_key: str = "data.train_set.lr_download"
    allow_download: bool = True
    cache_dir: str | None = None
    _listed: list[ClipRef | VideoClip] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.root).name

    def _present(
        self,
        folder: Path,
        what: str,
        download: RemoteArchive | Mapping[str, Any] | None,
        download_to: str | None,
        key: str,
    ) -> Path:
        """``folder``, fetched first from ``download`` when missing and allowed."""
        if folder.is_dir():
            return folder
        if download is None or not self.allow_download:
            hint = "; data.download=true fetches them" if download is not None else ""
            raise DatasetNotFoundError(
                f"{self.name} {what} not found: expected a folder of clip folders at "
                f"{folder.resolve()} (set paths.data_dir, or the data config's root, to where "
                f"they are{hint})"
            )
        from src.io.download import fetch

        target = Path(download_to) if download_to else folder
        archive = archive_to_fetch(download, self.name, folder, key)
        cache = Path(self.cache_dir) if self.cache_dir else target.parent / ".downloads"
        log.info("%s %s missing; downloading them to %s", self.name, what, target)
        fetch(archive, cache, target)
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"{self.name}: {archive.url} was unpacked into {target.resolve()}, but "
                f"{folder.resolve()} is still missing; fix {key}.subdir or the folder setting"
            )
        return folder

    def ensure_present(self) -> Path:
        """The HR folder (and the LR folder for ``lr_source=files``), downloaded if needed."""
        root = self._present(
            Path(self.root), "clips", self.download, self.download_to, self.download_key
        )
        if self.lr_source == "files":
            if not self.lr_root:
                raise UserError(
                    f"{self.name}: lr_source=files reads LR frames from lr_root, which is not set "
                    f"(give data.lr_root, or use lr_source=bi or bd)"
                )
            self._present(
                Path(self.lr_root),
                "LR clips",
                self.lr_download,
                self.lr_download_to,
                self.lr_download_key,
            )
        return root

    def clip_names(self, root: Path) -> list[str]:
        """The clip folders (relative to ``root``) this source uses, before the split."""
        if self.list_file:
            names = read_list_file(Path(self.list_file))
        elif self.clips is not None:
            names = [str(name) for name in self.clips]
        else:
            names = sorted(
                p.name
                for p in root.iterdir()
                if not p.name.startswith(".") and (p.is_dir() or is_video_file(p))
            )
        excluded = {str(name) for name in self.exclude}
        names = [name for name in names if name not in excluded]
        if not names:
            raise DatasetNotFoundError(f"{self.name}: no clip folders in {root.resolve()}")
        return names

    def _entry(self, root: Path, name: str) -> ClipRef | VideoClip:
        """The clip ``name``: a video file, or a folder of frames (and of LR frames)."""
        if is_video_file(root / name):
            return VideoClip.probe(self.name, Path(name).stem, root / name, self.lr_source)
        hr = read_frame_folder(root / name)
        lr = None
        if self.lr_source == "files":
            assert self.lr_root is not None
            lr = read_frame_folder(Path(self.lr_root) / name)
            if [p.stem for p in lr] != [p.stem for p in hr]:
                raise ClipError(
                    f"{Path(self.lr_root) / name}: its {len(lr)} LR frames are not named as the "
                    f"{len(hr)} HR frames of {root / name}"
                )
        return ClipRef(
            self.name, name, tuple(hr), self.lr_source, None if lr is None else tuple(lr)
        )

    def clips_found(self) -> list[ClipRef | VideoClip]:
        """Every clip of this source (listed once), the bad ones refused or skipped by
        ``on_bad_image``."""
        if self._listed is not None:
            return self._listed
        root = self.ensure_present()
        names = self.clip_names(root)
        folders = split_files(
            [root / name for name in names], self.split, self.val_count, self.split_seed
        )
        chosen = [folder.relative_to(root).as_posix() for folder in folders]
        refs: list[ClipRef | VideoClip] = []
        problems: list[str] = []
        for name in chosen:
            try:
                refs.append(self._entry(root, name))
            except (ClipError, ImageReadError) as error:
                problems.append(str(error))
        refuse_or_warn(problems, self.on_bad_image, f"unusable clip(s) of {self.name}")
        if not refs:
            raise DatasetNotFoundError(f"{self.name}: no usable clip in {root.resolve()}")
        self._listed = refs
        return refs


class ClipSource(Protocol):
    """Anything that lists the clips of a set under a set name."""

    name: str

    def clips_found(self) -> Sequence[ClipEntry]: ...


# --- training samples -----------------------------------------------------------------------
class ClipStore(Protocol):
    """A training clip's frames, in memory or on disk."""

    @property
    def name(self) -> str: ...

    @property
    def set_name(self) -> str: ...

    @property
    def length(self) -> int: ...

    @property
    def lr_size(self) -> tuple[int, int]: ...

    def window(
        self, start: int, count: int, top: int, left: int, size: int
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class MemoryClip:
    """A decoded clip; crops are slices of it."""

    clip: Clip

    @property
    def name(self) -> str:
        return self.clip.name

    @property
    def set_name(self) -> str:
        return self.clip.set_name

    @property
    def length(self) -> int:
        return len(self.clip.frames)

    @property
    def lr_size(self) -> tuple[int, int]:
        return self.clip.lr.shape[1], self.clip.lr.shape[2]

    def window(
        self, start: int, count: int, top: int, left: int, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        s = self.clip.hr.shape[1] // self.clip.lr.shape[1]
        frames = slice(start, start + count)
        lr = self.clip.lr[frames, top : top + size, left : left + size]
        hr = self.clip.hr[frames, top * s : (top + size) * s, left * s : (left + size) * s]
        return lr, hr


@dataclass(frozen=True)
class DiskClip:
    """A clip read from disk for each sample (sets too large to keep decoded)."""

    ref: ClipRef
    scale: int
    lr_size: tuple[int, int]

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def set_name(self) -> str:
        return self.ref.set_name

    @property
    def length(self) -> int:
        return len(self.ref.hr_paths)

    def window(
        self, start: int, count: int, top: int, left: int, size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.ref.window(self.scale, start, count, top, left, size)


def d4_frames(frames: np.ndarray, index: int) -> np.ndarray:
    """One of the 8 flips/rotations of the square, the same for every frame of (T, H, W, C)."""
    if index >= 4:
        frames = frames[:, :, ::-1]
    return np.rot90(frames, k=index % 4, axes=(1, 2))


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) uint8 -> (T, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float().div_(255.0)


class TrainingClips(Dataset[Sample]):
    """``length`` training samples of ``num_frames`` frames, each a pure function of its index:
    ``{"lr": (T, C, p, p), "hr": (T, C, sp, sp), "name", "set", "start", "reversed", "seed"}``
    (``seed``: the sample's own, for degradations drawn per clip). With ``mirror`` the frames are
    followed by themselves backwards (T = 2 ``num_frames``), as mmagic's MirrorSequence makes
    the Vimeo-90K and RealBasicVSR samples."""

    def __init__(
        self,
        stores: Sequence[ClipStore],
        num_frames: int,
        lr_patch_size: int,
        length: int,
        seed: int,
        augment: bool = True,
        reverse_prob: float = 0.5,
        mirror: bool = False,
    ):
        short = [s.name for s in stores if s.length < num_frames]
        small = [s.name for s in stores if min(s.lr_size) < lr_patch_size]
        if short or small or not stores:
            raise ValueError(f"clips too short ({short}) or too small ({small}), or none")
        self.stores = list(stores)
        self.num_frames = num_frames
        self.lr_patch_size = lr_patch_size
        self.length = length
        self.seed = seed
        self.augment = augment
        self.reverse_prob = reverse_prob
        self.mirror = mirror

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Sample:
        rng = np.random.default_rng((self.seed, index))
        store = self.stores[int(rng.integers(len(self.stores)))]
        n, p = self.num_frames, self.lr_patch_size
        start = int(rng.integers(store.length - n + 1))
        top = int(rng.integers(store.lr_size[0] - p + 1))
        left = int(rng.integers(store.lr_size[1] - p + 1))
        transform = int(rng.integers(8))
        backwards = bool(rng.random() < self.reverse_prob)
        lr, hr = store.window(start, n, top, left, p)
        if self.augment:
            lr, hr = d4_frames(lr, transform), d4_frames(hr, transform)
        if backwards:
            lr, hr = lr[::-1], hr[::-1]
        if self.mirror:
            lr, hr = np.concatenate((lr, lr[::-1])), np.concatenate((hr, hr[::-1]))
        return {
            "lr": frames_to_tensor(lr),
            "hr": frames_to_tensor(hr),
            "name": store.name,
            "set": store.set_name,
            "start": torch.tensor(start),
            "reversed": torch.tensor(backwards),
            "seed": torch.tensor(int(rng.integers(SEED_BOUND)), dtype=torch.int64),
        }


# --- validation clips -----------------------------------------------------------------------
VIDEO_CROP_BORDER = 0


def clip_sample(clip: Clip, index: int) -> Sample:
    """A validation item: the whole clip as one sequence."""
    return {
        "lr": frames_to_tensor(clip.lr),
        "hr": frames_to_tensor(clip.hr),
        "set": clip.set_name,
        "name": clip.name,
        "frames": list(clip.frames),
        "index": torch.tensor(index),
        "gray": torch.tensor(False),
        "bit_depth": torch.tensor(8),
        # The video protocols (Vid4, REDS4, Vimeo-90K-T) score every pixel: no border crop.
        "crop_border": torch.tensor(VIDEO_CROP_BORDER),
    }


class ValidationClips(Dataset[Sample]):
    """Whole clips, read when asked for; kept once read when ``keep`` (training validates many
    times, in the main process). A clip that cannot be read gives ``{"error", "set", "index"}``
    instead, for the data module to refuse or skip in the main process."""

    def __init__(self, entries: Sequence[ClipEntry], scale: int, keep: bool):
        self.entries = list(entries)
        self.scale = scale
        self.keep = keep
        self._kept: dict[int, Clip] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def set_names(self) -> list[str]:
        """The set of every clip, in order."""
        return [entry.set_name for entry in self.entries]

    def __getitem__(self, index: int) -> Sample:
        clip = self._kept.get(index)
        if clip is None:
            entry = self.entries[index]
            try:
                clip = entry.read(self.scale)
            except (ClipError, ImageReadError) as error:
                return {"error": str(error), "set": entry.set_name, "index": torch.tensor(index)}
            if self.keep:
                self._kept[index] = clip
        return clip_sample(clip, index)
