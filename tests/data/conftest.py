"""Shared fixtures of the data tests: no network, tiny synthetic IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datahelpers import write_idx

from torchstn.data import download as download_module
from torchstn.data import mnist


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must never reach the mirrors: any download attempt fails loudly."""

    def refuse(url: str, timeout: float) -> None:
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(download_module, "_urlopen", refuse)


@pytest.fixture
def synthetic_mnist(tmp_path: Path) -> Path:
    """A folder with tiny look-alike MNIST files (5 train, 3 test images; gzipped train, raw test)."""
    rng = np.random.default_rng(0)
    for name, n, gz in (("train", 5, True), ("t10k", 3, False)):
        suffix = ".gz" if gz else ""
        write_idx(
            tmp_path / f"{name}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
            gz=gz,
        )
        write_idx(
            tmp_path / f"{name}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8), gz=gz
        )
    return tmp_path


@pytest.fixture
def isolated_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No repository folder, no TORCHSTN_MNIST, an empty user cache under ``tmp_path/cache``."""
    monkeypatch.setattr(mnist, "REPO_DIR", tmp_path / "no-repo")
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "torchstn" / "mnist"
