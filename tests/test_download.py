"""Download/extract layer against a local HTTP server on 127.0.0.1 and archives made here."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from src.io import download as dl
from src.io.download import DownloadError, RemoteArchive, download, extract, fetch, sha256_of

# --- local HTTP server -----------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class ServerState:
    root: Path
    hits: list[Hit] = field(default_factory=list)
    cut_next_after: int | None = None  # one-shot: close the next reply after this many bytes
    ignore_range: bool = False


def _make_handler(state: ServerState) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            file = state.root / self.path.lstrip("/").split("?")[0]
            rng = self.headers.get("Range")
            if not file.is_file():
                self._reply(404, b"not found", rng)
                return
            data = file.read_bytes()
            match = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if match is None or state.ignore_range:
                self._reply(200, data, rng)
                return
            start = int(match.group(1))
            if start >= len(data):
                self._reply(416, b"", rng, {"Content-Range": f"bytes */{len(data)}"})
                return
            content_range = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._reply(206, data[start:], rng, {"Content-Range": content_range})

        def _reply(
            self, status: int, body: bytes, rng: str | None, headers: dict[str, str] | None = None
        ) -> None:
            cut, state.cut_next_after = state.cut_next_after, None
            sent = body if cut is None else body[:cut]
            state.hits.append(
                Hit(self.path, rng, status, len(sent))
            )  # before the client can see it
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if cut is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(sent)
            self.wfile.flush()
            if cut is not None:
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@dataclass
class Server:
    state: ServerState
    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def publish(self, name: str, data: bytes) -> RemoteArchive:
        (self.state.root / name).write_bytes(data)
        return RemoteArchive(url=self.url(name), sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    state = ServerState(root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Server(state, f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def blob(n: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes with a PNG signature in front."""
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


# --- download --------------------------------------------------------------------------------


def test_plain_download_verifies_and_lands(server: Server, tmp_path: Path) -> None:
    data = blob(50_000)
    archive = server.publish("DIV2K_mini.zip", data)
    dest = tmp_path / "cache"

    path = download(archive, dest, progress=False)

    assert path == dest / "DIV2K_mini.zip"
    assert path.read_bytes() == data
    assert sorted(p.name for p in dest.iterdir()) == ["DIV2K_mini.zip"]
    assert [(h.range, h.status) for h in server.state.hits] == [(None, 200)]


def test_interrupted_download_resumes_with_range(server: Server, tmp_path: Path) -> None:
    data = blob(200_000, seed=1)
    archive = server.publish("flickr.tar", data)
    dest = tmp_path / "cache"
    server.state.cut_next_after = 70_000

    with pytest.raises(DownloadError, match=re.escape(archive.url)):
        download(archive, dest, progress=False, chunk_size=8192)
    part = dest / "flickr.tar.part"
    assert part.stat().st_size == 70_000
    assert not (dest / "flickr.tar").exists()

    path = download(archive, dest, progress=False, chunk_size=8192)

    assert path.read_bytes() == data
    assert not part.exists()
    second = server.state.hits[-1]
    assert second.range == "bytes=70000-"
    assert second.status == 206
    assert second.body_bytes == len(data) - 70_000


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    data = blob(30_000, seed=2)
    archive = server.publish("a.zip", data)
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "a.zip.part").write_bytes(b"stale bytes that must not be kept")
    server.state.ignore_range = True

    path = download(archive, dest, progress=False)

    assert path.read_bytes() == data
    assert server.state.hits[-1].range is not None
    assert server.state.hits[-1].status == 200


def test_complete_part_with_416_is_verified_and_kept(server: Server, tmp_path: Path) -> None:
    data = blob(10_000, seed=3)
    archive = server.publish("b.zip", data)
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "b.zip.part").write_bytes(data)

    path = download(archive, dest, progress=False)

    assert path.read_bytes() == data
    assert [(h.range, h.status) for h in server.state.hits] == [("bytes=10000-", 416)]


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    data = blob(20_000, seed=4)
    server.publish("c.zip", data)
    wrong = "0" * 64
    archive = RemoteArchive(url=server.url("c.zip"), sha256=wrong)
    dest = tmp_path / "cache"

    with pytest.raises(DownloadError) as info:
        download(archive, dest, progress=False)

    message = str(info.value)
    assert wrong in message
    assert hashlib.sha256(data).hexdigest() in message
    assert archive.url in message
    assert list(dest.iterdir()) == []


def test_existing_good_file_is_reused_without_request(server: Server, tmp_path: Path) -> None:
    data = blob(5_000, seed=5)
    archive = server.publish("d.zip", data)
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "d.zip").write_bytes(data)

    path = download(archive, dest, progress=False)

    assert path.read_bytes() == data
    assert server.state.hits == []


def test_existing_bad_file_is_replaced(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = blob(5_000, seed=6)
    archive = server.publish("e.zip", data)
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "e.zip").write_bytes(b"corrupted")

    path = download(archive, dest, progress=False)

    assert path.read_bytes() == data
    assert len(server.state.hits) == 1
    assert "downloading" in caplog.text and archive.url in caplog.text


def test_http_404_names_the_url(server: Server, tmp_path: Path) -> None:
    archive = RemoteArchive(url=server.url("missing.zip"), sha256="a" * 64)

    with pytest.raises(DownloadError, match="404") as info:
        download(archive, tmp_path / "cache", progress=False)

    assert archive.url in str(info.value)
    assert not (tmp_path / "cache" / "missing.zip").exists()


def test_connection_refused_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    archive = RemoteArchive(url=f"http://127.0.0.1:{port}/x.zip", sha256="b" * 64)

    with pytest.raises(DownloadError, match=re.escape(archive.url)):
        download(archive, tmp_path / "cache", progress=False, timeout=5)


def test_size_disagreeing_with_server_is_refused(server: Server, tmp_path: Path) -> None:
    data = blob(4_000, seed=7)
    digest = server.publish("f.zip", data).sha256
    archive = RemoteArchive(url=server.url("f.zip"), sha256=digest, size=3_999)

    with pytest.raises(DownloadError, match="3999"):
        download(archive, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_progress_goes_to_stderr_and_is_throttled(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = server.publish("g.zip", blob(64_000, seed=8))

    download(archive, tmp_path / "quiet", progress=False, chunk_size=64)
    assert capsys.readouterr().err == ""

    download(archive, tmp_path / "loud", progress=True, chunk_size=64)
    err = capsys.readouterr().err
    assert "g.zip" in err and "MB/s" in err and "0.1/0.1 MB" in err
    # 1000 chunks arrive in well under a second, so only a handful of redraws may happen.
    assert 1 <= err.count("\r") <= 10


def test_remote_archive_defaults_and_validation() -> None:
    archive = RemoteArchive(url="https://example.org/data/Urban%20100.zip?dl=1", sha256="AB" * 32)
    assert archive.name == "Urban 100.zip"
    assert archive.sha256 == "ab" * 32
    assert RemoteArchive(url="https://x/y", sha256="a" * 64, filename="z.tar").name == "z.tar"
    with pytest.raises(DownloadError, match="sha256"):
        RemoteArchive(url="https://x/y.zip", sha256="1234")
    with pytest.raises(DownloadError, match="filename"):
        RemoteArchive(url="https://x/", sha256="a" * 64)
    with pytest.raises(DownloadError, match="subdir"):
        RemoteArchive(url="https://x/y.zip", sha256="a" * 64, subdir="../up")


def test_sha256_of_matches_hashlib(tmp_path: Path) -> None:
    data = blob(3 << 20, seed=9)  # spans several read blocks
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


# --- archives --------------------------------------------------------------------------------

FILES = {
    "set/HR/0001.png": blob(3_000, seed=10),
    "set/HR/0002.png": blob(2_000, seed=11),
    "set/README.txt": b"tiny test set\n",
}


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tar_mode(path: Path) -> str:
    for suffix, mode in ((".gz", "w:gz"), (".tgz", "w:gz"), (".bz2", "w:bz2"), (".xz", "w:xz")):
        if path.name.endswith(suffix):
            return mode
    return "w"


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, _tar_mode(path)) as tar:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(
    name: str, target: str, kind: bytes = tarfile.SYMTYPE
) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def dir_member(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root mapped to its bytes (None for folders)."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def test_good_zip_extracts(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "good.zip", FILES)
    target = tmp_path / "out" / "data"

    assert extract(archive, target) == target

    for name, data in FILES.items():
        assert (target / name).read_bytes() == data
    assert sorted(p.name for p in target.parent.iterdir()) == ["data"]  # no staging left over


@pytest.mark.parametrize(
    "name", ["good.tar", "good.tar.gz", "good.tgz", "good.tar.bz2", "good.tar.xz"]
)
def test_good_tar_extracts(tmp_path: Path, name: str) -> None:
    members = [dir_member("set"), *(file_member(n, d) for n, d in FILES.items())]
    members.append(link_member("set/first.png", "HR/0001.png"))  # a link that stays inside
    archive = make_tar(tmp_path / name, members)
    target = tmp_path / "out"

    extract(archive, target)

    for file, data in FILES.items():
        assert (target / file).read_bytes() == data
    assert (target / "set" / "first.png").read_bytes() == FILES["set/HR/0001.png"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_subdir_places_only_that_folders_content(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "good.zip", FILES)
    target = tmp_path / "HR"

    extract(archive, target, subdir="set/HR")

    assert sorted(p.name for p in target.iterdir()) == ["0001.png", "0002.png"]
    with pytest.raises(DownloadError, match="nope"):
        extract(archive, tmp_path / "other", subdir="nope")
    assert not (tmp_path / "other").exists()


def test_extract_merges_into_existing_folder_but_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "DIV2K"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    extract(make_zip(tmp_path / "a.zip", {"train/1.png": b"1"}), target)
    assert (target / "train" / "1.png").read_bytes() == b"1"
    assert (target / "keep.txt").read_text() == "mine"

    before = tree(target)
    with pytest.raises(DownloadError, match="train"):
        extract(make_zip(tmp_path / "b.zip", {"train/1.png": b"other"}), target)
    assert tree(target) == before


def _assert_refused(archive: Path, target: Path, member: str) -> None:
    """Extraction raises naming archive and member, target stays as it was, no staging left."""
    before = tree(target) if target.exists() else None
    with pytest.raises(DownloadError, match="refused") as info:
        extract(archive, target)
    assert str(archive) in str(info.value)
    assert repr(member) in str(info.value)
    assert (tree(target) if target.exists() else None) == before
    assert [p for p in target.parent.iterdir() if p.name.endswith(".partial")] == []


@pytest.fixture(params=[True, False], ids=["data-filter", "own-checks-only"])
def tar_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run tar refusals with and without tarfile's data filter: our checks must suffice alone."""
    monkeypatch.setattr(dl, "_TAR_DATA_FILTER", request.param and dl._TAR_DATA_FILTER)
    return bool(request.param)


def test_zip_slip_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = make_zip(tmp_path / "slip.zip", {"ok.png": b"x", "../evil.txt": b"pwned"})
    target = work / "target"

    _assert_refused(archive, target, "../evil.txt")

    assert not target.exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not (work / "evil.txt").exists()


def test_zip_absolute_path_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "abs_evil.txt"
    archive = make_zip(tmp_path / "abs.zip", {str(outside): b"pwned"})
    target = tmp_path / "work" / "target"
    target.mkdir(parents=True)
    (target / "existing.png").write_bytes(b"keep")

    _assert_refused(archive, target, str(outside))

    assert not outside.exists()
    assert sorted(p.name for p in target.iterdir()) == ["existing.png"]


def test_tar_dotdot_is_refused(tmp_path: Path, tar_filter: bool) -> None:
    archive = make_tar(
        tmp_path / "slip.tar.gz",
        [file_member("a.png", b"x"), file_member("a/../../evil.txt", b"!")],
    )
    target = tmp_path / "work" / "target"
    target.parent.mkdir()

    _assert_refused(archive, target, "a/../../evil.txt")

    assert not target.exists()
    assert not (tmp_path / "work" / "evil.txt").exists()


def test_tar_absolute_path_is_refused(tmp_path: Path, tar_filter: bool) -> None:
    outside = tmp_path / "abs_evil.txt"
    archive = make_tar(tmp_path / "abs.tar", [file_member(str(outside), b"pwned")])
    target = tmp_path / "target"

    _assert_refused(archive, target, str(outside))

    assert not outside.exists()
    assert not target.exists()


@pytest.mark.parametrize("link", ["../..", "/etc", "sub/../../.."])
def test_tar_symlink_pointing_outside_is_refused(
    tmp_path: Path, tar_filter: bool, link: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = make_tar(
        tmp_path / "link.tar",
        [link_member("escape", link), file_member("escape/evil.txt", b"pwned")],
    )
    target = work / "target"

    _assert_refused(archive, target, "escape")

    assert not target.exists()
    assert not (tmp_path / "evil.txt").exists()
    assert not (work / "evil.txt").exists()


def test_tar_write_through_inside_symlink_is_refused(tmp_path: Path, tar_filter: bool) -> None:
    archive = make_tar(
        tmp_path / "through.tar",
        [dir_member("d"), link_member("d/up", ".."), file_member("d/up/x.png", b"x")],
    )
    _assert_refused(archive, tmp_path / "target", "d/up/x.png")


def test_tar_link_chain_escaping_later_is_refused(tmp_path: Path, tar_filter: bool) -> None:
    # a/b/l2 looks inside on paper, but it resolves through l1 (added after it) to the parent.
    archive = make_tar(
        tmp_path / "chain.tar",
        [
            dir_member("a"),
            dir_member("a/b"),
            link_member("a/b/l2", "../../l1/../outside"),
            link_member("l1", "."),
        ],
    )
    _assert_refused(archive, tmp_path / "target", "a/b/l2")


def test_tar_hardlink_pointing_outside_is_refused(tmp_path: Path, tar_filter: bool) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    archive = make_tar(
        tmp_path / "hard.tar", [link_member("grab", "../secret.txt", tarfile.LNKTYPE)]
    )
    target = tmp_path / "target"

    _assert_refused(archive, target, "grab")

    assert not target.exists()
    assert secret.stat().st_nlink == 1


@pytest.mark.skipif(not dl._TAR_DATA_FILTER, reason="tarfile has no data filter here")
def test_data_filter_refusal_is_reported_as_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dl, "_vet_tar_member", lambda *args: None)
    archive = make_tar(tmp_path / "abs.tar", [link_member("escape", "/etc")])
    _assert_refused(archive, tmp_path / "target", "escape")


def test_tar_fifo_and_device_members_are_refused(tmp_path: Path, tar_filter: bool) -> None:
    for kind in (tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE):
        info = tarfile.TarInfo("special")
        info.type = kind
        archive = make_tar(tmp_path / "special.tar", [file_member("ok.png", b"x"), (info, None)])
        _assert_refused(archive, tmp_path / "target", "special")
        assert not (tmp_path / "target").exists()


def test_not_an_archive_and_damaged_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(blob(2_000))
    with pytest.raises(DownloadError, match="not a zip or tar"):
        extract(junk, tmp_path / "t1")

    good = make_zip(tmp_path / "good.zip", FILES).read_bytes()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(good[: len(good) // 2])
    with pytest.raises(DownloadError, match=r"broken\.zip"):
        extract(broken, tmp_path / "t2")
    assert not (tmp_path / "t1").exists() and not (tmp_path / "t2").exists()


# --- fetch -----------------------------------------------------------------------------------


def test_fetch_downloads_extracts_and_is_idempotent(server: Server, tmp_path: Path) -> None:
    data = make_zip(tmp_path / "src.zip", FILES).read_bytes()
    published = server.publish("Set5.zip", data)
    archive = RemoteArchive(url=published.url, sha256=published.sha256, subdir="set/HR")
    cache, target = tmp_path / "cache", tmp_path / "data" / "Set5"

    assert fetch(archive, cache, target, progress=False) == target
    assert (cache / "Set5.zip").read_bytes() == data
    assert (target / "0002.png").read_bytes() == FILES["set/HR/0002.png"]
    assert len(server.state.hits) == 1

    before = tree(target)
    (cache / "Set5.zip").unlink()  # not needed once extracted
    fetch(archive, cache, target, progress=False)
    assert tree(target) == before
    assert len(server.state.hits) == 1


def test_fetch_reuses_cached_archive(server: Server, tmp_path: Path) -> None:
    data = make_zip(tmp_path / "src.zip", FILES).read_bytes()
    archive = server.publish("Set14.zip", data)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "Set14.zip").write_bytes(data)

    fetch(archive, cache, tmp_path / "Set14", progress=False)

    assert server.state.hits == []
    assert (tmp_path / "Set14" / "set" / "README.txt").read_bytes() == FILES["set/README.txt"]


def test_data_module_fetches_missing_sets_once_in_prepare_data(
    server: Server, tmp_path: Path
) -> None:
    import cv2

    from src.data.datamodule import SRDataModule
    from src.data.sources import ConcatImages, FolderImages, SkimageImages
    from tests.test_data import photo

    pngs = {f"set/HR/img_{i}.png": cv2.imencode(".png", photo(i))[1].tobytes() for i in range(2)}
    published = server.publish("train.zip", make_zip(tmp_path / "train.zip", pngs).read_bytes())
    root = tmp_path / "data" / "train"
    download = {"url": published.url, "sha256": published.sha256, "subdir": "set/HR"}
    train = ConcatImages([FolderImages(root=str(root), name="train", download=download)])
    datamodule = SRDataModule(
        2, [SkimageImages(names=["chelsea"])], train, lr_patch_size=8, num_patches=4
    )
    datamodule.prepare_data()
    assert sorted(p.name for p in root.glob("*.png")) == ["img_0.png", "img_1.png"]
    datamodule.setup("fit")
    assert datamodule.train_data is not None and len(datamodule.train_data.pairs) == 2
    assert len(server.state.hits) == 1
