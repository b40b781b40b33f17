"""Shared fixtures: the real data beside the repository, and single-threaded torch."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real NSynth notes and chair renders: CONDGEN_TEST_DATA, else the data folder
# that developer and CI machines keep beside the repository.
SHARED_DATA = Path(os.environ.get("CONDGEN_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))

# Two-core CI machines: intra-op threading slows small STFTs and DataLoader
# batching down, and DataLoader workers already use the second core.
torch.set_num_threads(1)

# Keep caches that datasets build (resized chair images) out of the user's home.
if "CONDGEN_CACHE_DIR" not in os.environ:
    _cache_dir = tempfile.mkdtemp(prefix="condgen-test-cache-")
    os.environ["CONDGEN_CACHE_DIR"] = _cache_dir
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set CONDGEN_TEST_DATA to a folder with nsynth/ and chairs/ to run this test")
    return path


@pytest.fixture(scope="session")
def nsynth_dir() -> Path:
    """Folder with the real NSynth notes: nsynth-mini/, nsynth-mini.tfrecord and named-wavs/."""
    return _require(SHARED_DATA / "nsynth")


@pytest.fixture(scope="session")
def chairs_dir() -> Path:
    """Folder with the real chair renders: rendered_chairs/ and chairs.tfr."""
    return _require(SHARED_DATA / "chairs")
