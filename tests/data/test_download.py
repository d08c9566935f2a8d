"""Downloads against a local HTTP server on 127.0.0.1 and ``file://`` URLs (never the network):
checksums, size bounds, atomic writes, mirror fallback, the one-line MNIST errors, and
``torchstn data download``."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from torchstn.cli import main
from torchstn.data import download as download_module
from torchstn.data import load_mnist, mnist
from torchstn.data.download import DownloadError, download
from torchstn.errors import DataError

#: the real opener, captured before the data tests' no-network fixture replaces it.
REAL_URLOPEN = download_module._urlopen
#: the repository's vendored files (captured before any fixture hides the folder).
VENDORED = mnist.REPO_DIR
PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
#: what the endless route sends at most (a client without a bound would read all of it).
ENDLESS = 32 << 20


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/endless":  # no Content-Length, more bytes than anyone expects
            self.send_response(200)
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(ENDLESS // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:  # the client hung up: what a bounded download does
                pass
            return
        if self.path == "/liar":  # declares a huge body
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP server (its base URL) serving ``_Handler.files``; downloads may reach it."""
    monkeypatch.setattr(download_module, "_urlopen", REAL_URLOPEN)
    _Handler.files = {"/good.bin": PAYLOAD, "/bad.bin": PAYLOAD[:-1] + b"!"}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/x.bin"


class TestDownload:
    def test_verified_file_lands_and_nothing_else(self, server: str, tmp_path: Path) -> None:
        dest = tmp_path / "d" / "f.bin"
        out = download([f"{server}/good.bin"], dest, MD5, sha256=SHA256, size=len(PAYLOAD))
        assert out == dest and dest.read_bytes() == PAYLOAD
        assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]

    def test_checksum_mismatch_is_refused_and_leaves_nothing(
        self, server: str, tmp_path: Path
    ) -> None:
        dest = tmp_path / "f.bin"
        with pytest.raises(DownloadError, match="md5") as info:
            download([f"{server}/bad.bin"], dest, MD5, size=len(PAYLOAD))
        assert not info.value.unreachable
        assert list(tmp_path.iterdir()) == []
        # the md5 alone would pass: the sha256 still refuses a file that differs from it
        with pytest.raises(DownloadError, match="sha256"):
            download([f"{server}/good.bin"], dest, MD5, sha256="0" * 64)
        assert list(tmp_path.iterdir()) == []

    def test_oversized_body_is_cut_off(self, server: str, tmp_path: Path) -> None:
        dest = tmp_path / "f.bin"
        with pytest.raises(DownloadError, match="more than the expected 10240 bytes"):
            download([f"{server}/endless"], dest, MD5, size=len(PAYLOAD), timeout=10)
        assert list(tmp_path.iterdir()) == []

    def test_declared_oversize_is_refused_before_reading(self, server: str, tmp_path: Path) -> None:
        with pytest.raises(DownloadError, match="declares 1099511627776 bytes"):
            download([f"{server}/liar"], tmp_path / "f.bin", MD5, size=len(PAYLOAD))
        assert list(tmp_path.iterdir()) == []

    def test_short_body_is_refused(self, server: str, tmp_path: Path) -> None:
        _Handler.files["/short.bin"] = PAYLOAD[:-1]
        with pytest.raises(DownloadError, match="10239 bytes instead of 10240"):
            download([f"{server}/short.bin"], tmp_path / "f.bin", MD5, size=10240)
        assert list(tmp_path.iterdir()) == []

    def test_falls_back_to_the_next_mirror(self, server: str, tmp_path: Path) -> None:
        urls = [_closed_port(), f"{server}/missing.bin", f"{server}/bad.bin", f"{server}/good.bin"]
        dest = download(urls, tmp_path / "f.bin", MD5, sha256=SHA256, size=len(PAYLOAD))
        assert dest.read_bytes() == PAYLOAD

    def test_unreachable_mirrors_say_so(self, server: str, tmp_path: Path) -> None:
        with pytest.raises(DownloadError) as info:
            download([_closed_port(), _closed_port()], tmp_path / "f.bin", MD5)
        assert info.value.unreachable
        with pytest.raises(DownloadError, match="HTTP 404") as answered:
            download([_closed_port(), f"{server}/missing.bin"], tmp_path / "f.bin", MD5)
        assert not answered.value.unreachable  # a mirror answered: the network is there
        assert list(tmp_path.iterdir()) == []

    def test_file_url(self, server: str, tmp_path: Path) -> None:
        source = tmp_path / "src" / "good.bin"
        source.parent.mkdir()
        source.write_bytes(PAYLOAD)
        dest = download([source.as_uri()], tmp_path / "out" / "f.bin", MD5, size=len(PAYLOAD))
        assert dest.read_bytes() == PAYLOAD


def _serve_mnist(monkeypatch: pytest.MonkeyPatch, server: str, names: list[str]) -> None:
    _Handler.files.update({f"/mnist/{n}.gz": (VENDORED / f"{n}.gz").read_bytes() for n in names})
    monkeypatch.setattr(mnist, "MIRRORS", (f"{server}/nothing-here/", f"{server}/mnist/"))


class TestMnistDownload:
    def test_find_mnist_downloads_verified_files(
        self, server: str, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _serve_mnist(monkeypatch, server, list(mnist.FILES["test"]))
        images, labels = load_mnist("test")
        assert images.shape == (10000, 28, 28) and labels[:3].tolist() == [7, 2, 1]
        assert sorted(p.name for p in isolated_lookup.iterdir()) == [
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]

    def test_a_mirror_with_other_bytes_is_refused(
        self, server: str, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _serve_mnist(monkeypatch, server, [])
        _Handler.files["/mnist/t10k-labels-idx1-ubyte.gz"] = b"\x1f\x8b" + b"\0" * 4540
        _Handler.files["/mnist/t10k-images-idx3-ubyte.gz"] = b"\0" * 1648877
        with pytest.raises(DataError) as info:
            mnist.find_mnist("test")
        message = str(info.value)
        assert "\n" not in message and "md5" in message and "no network" not in message
        assert not isolated_lookup.exists() or list(isolated_lookup.iterdir()) == []

    def test_no_network_is_one_plain_line(
        self, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(download_module, "_urlopen", REAL_URLOPEN)
        monkeypatch.setattr(mnist, "MIRRORS", (_closed_port()[:-5], _closed_port()[:-5]))
        with pytest.raises(DataError) as info:
            mnist.find_mnist("train")
        message = str(info.value)
        assert "\n" not in message and len(message) < 400, message
        assert message.startswith(f"MNIST train files not found in {isolated_lookup}")
        assert "no network to download them" in message
        assert f"into {isolated_lookup} or pass --root FOLDER" in message
        assert "train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz" in message
        assert "root=" not in message and str(mnist.REPO_DIR) not in message  # not a checkout

    def test_cli_download_then_offline_use(
        self,
        server: str,
        isolated_lookup: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        names = [*mnist.FILES["train"], *mnist.FILES["test"]]
        _serve_mnist(monkeypatch, server, names)
        root = tmp_path / "offline"
        assert main(["data", "download", "--root", str(root)]) == 0
        assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in names)
        assert str(root) in capsys.readouterr().out
        _Handler.files.clear()  # the mirrors are gone: the files are used as they are
        assert main(["data", "download", "--root", str(root)]) == 0
        images, _ = load_mnist("test", root=root)
        assert images.shape[0] == 10000

    def test_cli_data_command_without_mnist_says_one_line(
        self,
        isolated_lookup: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setattr(download_module, "_urlopen", REAL_URLOPEN)
        monkeypatch.setattr(mnist, "MIRRORS", (_closed_port()[:-5],))
        out = tmp_path / "x.npz"
        assert main(["data", "export", "rts", "--num", "4", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "no network to download them" in err
        assert not out.exists()
