"""Shared fixtures: tiny synthetic Fashion-MNIST-shaped IDX data and a repo copy."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fmnist_pipeline.data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an unsigned-byte array as an IDX file."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is written in where a bright bar sits, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.resize(np.arange(10, dtype=np.uint8), n)
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels, strict=True):
        row = 2 + int(label) * 2
        image[row : row + 3, 4:24] = 230
    return images, labels


def write_synthetic_mirror(directory: Path, n_train: int = 300, n_test: int = 100):
    """Write the four .gz files; return {file name: SHA-256 of decompressed bytes}."""
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_split(n_train, seed=1)
    test_x, test_y = synthetic_split(n_test, seed=2)
    checksums = {}
    for name, array in (
        (TRAIN_IMAGES, train_x),
        (TRAIN_LABELS, train_y),
        (TEST_IMAGES, test_x),
        (TEST_LABELS, test_y),
    ):
        payload = idx_bytes(array)
        (directory / name).write_bytes(gzip.compress(payload))
        checksums[name] = hashlib.sha256(payload).hexdigest()
    return checksums


@pytest.fixture
def synthetic_mirror(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = tmp_path / "mirror"
    return directory, write_synthetic_mirror(directory)


def tiny_params(sources: list[str], checksums: dict[str, str] | None = None) -> dict:
    """The committed params.yaml shrunk to a budget of seconds."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["fetch"]["sources"] = sources
    if checksums is not None:
        params["fetch"]["files"] = checksums
    params["search"].update(
        subsample=200, n_iter=2, folds=2, epochs=1, batch_size=16, n_jobs=1
    )
    params["search"]["space"].update(units_1=[32, 48], units_2=[16], units_3=[16])
    params["train"].update(max_epochs=6, patience=3, batch_size=16)
    return params


def run(
    command: list[str], cwd: Path, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's environment first on PATH."""
    env_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": env_bin + os.pathsep + os.environ.get("PATH", "")}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


@pytest.fixture
def pipeline_repo(tmp_path: Path):
    """A fresh git + DVC repository holding a copy of the pipeline's files."""

    def make(params: dict) -> Path:
        repo = tmp_path / "repo"
        repo.mkdir()
        for name in ("dvc.yaml", ".gitignore"):
            shutil.copy(REPO_ROOT / name, repo / name)
        for name in ("stages", "fmnist_pipeline"):
            shutil.copytree(
                REPO_ROOT / name,
                repo / name,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(["git", "init", "-q"], repo)
        run(["git", "config", "user.email", "test@example.com"], repo)
        run(["git", "config", "user.name", "test"], repo)
        run(["dvc", "init", "-q"], repo)
        run(["dvc", "config", "core.analytics", "false"], repo)
        run(["git", "add", "-A"], repo)
        run(["git", "commit", "-qm", "pipeline"], repo)
        return repo

    return make
