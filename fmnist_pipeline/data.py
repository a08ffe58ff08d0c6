"""Fetching, verifying, parsing and preparing the Fashion-MNIST IDX files."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import math
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fmnist_pipeline import CLASS_NAMES
from fmnist_pipeline.errors import FetchError, IdxFormatError, PipelineError
from fmnist_pipeline.io import atomic_path

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
IMAGE_SHAPE = (28, 28)
_CHUNK = 1 << 20
_IDX_UBYTE = 0x08


class Split(NamedTuple):
    """Images as float32 in [0, 1] of shape (n, 28, 28) and labels as uint8."""

    x: np.ndarray
    y: np.ndarray


# Fetching ---------------------------------------------------------------------


def decompressed_sha256(path: str | Path) -> str:
    """SHA-256 of the gunzipped content of ``path``.

    Mirrors recompress the files, so only the decompressed bytes are comparable.

    Raises
    ------
    OSError, EOFError, zlib.error
        When the file is not gzip or ends early.
    """
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> str | None:
    """Return why ``path`` fails verification, or ``None`` when it passes."""
    try:
        actual = decompressed_sha256(path)
    except (OSError, EOFError, zlib.error) as error:
        return f"not a complete gzip file ({error})"
    if actual != expected:
        return f"checksum mismatch (got {actual[:12]}..., want {expected[:12]}...)"
    return None


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def _copy_from_directory(source: str, name: str, tmp: Path) -> None:
    candidate = Path(source).expanduser() / name
    if not candidate.is_file():
        raise FileNotFoundError(f"{candidate} does not exist")
    shutil.copyfile(candidate, tmp)


def _download(source: str, name: str, tmp: Path, timeout: float) -> None:
    url = f"{source.rstrip('/')}/{name}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        announced = response.headers.get("Content-Length")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
            received = out.tell()
    if announced is not None and received != int(announced):
        raise OSError(f"truncated download: {received} of {announced} bytes")


def _attempt(source: str, name: str, tmp: Path, expected: str, timeout: float) -> str:
    """Copy or download ``name`` from ``source`` into ``tmp``; return what failed."""
    try:
        if _is_url(source):
            _download(source, name, tmp, timeout)
        else:
            _copy_from_directory(source, name, tmp)
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} {error.reason}"
    except urllib.error.URLError as error:
        return str(error.reason)
    except http.client.HTTPException as error:
        return f"{type(error).__name__}: {error}"
    except (OSError, ValueError) as error:
        return str(error) or type(error).__name__
    return _verify(tmp, expected) or ""


def fetch_file(
    name: str,
    expected_sha256: str,
    sources: Sequence[str],
    out_dir: Path,
    timeout: float,
) -> tuple[Path, str]:
    """Obtain one verified file into ``out_dir``, trying ``sources`` in order.

    Returns the final path and the source it came from. Each attempt lands in a
    hidden temporary file beside ``out_dir`` (on the same file system) that is
    renamed into it only once it verifies, so nothing unverified ever reaches
    ``out_dir``, even if the process is killed.
    """
    target = out_dir / name
    tmp = out_dir.parent / f".{out_dir.name}.{name}.part"
    failures = []
    try:
        for source in sources:
            problem = _attempt(source, name, tmp, expected_sha256, timeout)
            if not problem:
                os.replace(tmp, target)
                return target, source
            failures.append(f"{source.rstrip('/')}/{name}: {problem}")
    finally:
        tmp.unlink(missing_ok=True)
    tried = "; ".join(failures)
    raise FetchError(
        f"could not obtain a verified {name} from any source ({tried}). "
        "Install the Debian package dataset-fashion-mnist, or add a directory or "
        "URL holding the file to fetch.sources in params.yaml."
    )


def fetch(
    files: Mapping[str, str],
    sources: Sequence[str],
    out_dir: str | Path,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Fetch every file in ``files`` (name to decompressed SHA-256) into ``out_dir``.

    Returns a mapping of file name to the source that provided it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {}
    for name, expected in files.items():
        started = time.perf_counter()
        path, source = fetch_file(name, expected, sources, out_dir, timeout)
        provenance[name] = source
        logger.info(
            "fetched %s from %s (%.1f MB, %.1fs)",
            name,
            source,
            path.stat().st_size / 1e6,
            time.perf_counter() - started,
        )
    return provenance


# IDX parsing -------------------------------------------------------------------


def parse_idx(payload: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an unsigned-byte IDX file into an array.

    The header is two zero bytes, a type code (0x08 for unsigned bytes), the number
    of dimensions, then one big-endian uint32 per dimension.

    Raises
    ------
    IdxFormatError
        When the magic number, the type or the sizes disagree with the payload.
    """
    if len(payload) < 4:
        raise IdxFormatError(f"{source}: {len(payload)} bytes is too short for IDX")
    zero, dtype_code, ndim = payload[:2], payload[2], payload[3]
    if zero != b"\x00\x00":
        raise IdxFormatError(f"{source}: bad magic number {payload[:4].hex()}")
    if dtype_code != _IDX_UBYTE:
        raise IdxFormatError(
            f"{source}: element type 0x{dtype_code:02x} is not unsigned byte (0x08)"
        )
    if ndim == 0:
        raise IdxFormatError(f"{source}: IDX file declares zero dimensions")
    header_size = 4 + 4 * ndim
    if len(payload) < header_size:
        raise IdxFormatError(f"{source}: header truncated ({len(payload)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(payload, ">u4", ndim, offset=4))
    expected = header_size + math.prod(dims)
    if len(payload) != expected:
        raise IdxFormatError(
            f"{source}: dimensions {dims} need {expected} bytes, file has "
            f"{len(payload)}"
        )
    return np.frombuffer(payload, np.uint8, offset=header_size).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Read a gzip-compressed (``.gz``) or plain IDX file."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                payload = handle.read()
        else:
            payload = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise IdxFormatError(f"{path}: cannot read ({error})") from error
    return parse_idx(payload, str(path))


def check_split(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Check that IDX images and labels belong together."""
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise IdxFormatError(
            f"{source}: images have shape {images.shape}, expected (n, 28, 28)"
        )
    if labels.ndim != 1:
        raise IdxFormatError(
            f"{source}: labels have shape {labels.shape}, expected (n,)"
        )
    if len(images) != len(labels):
        raise IdxFormatError(f"{source}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise IdxFormatError(
            f"{source}: label {int(labels.max())} outside 0..{len(CLASS_NAMES) - 1}"
        )


def load_idx_split(images_path: str | Path, labels_path: str | Path) -> Split:
    """Read one split from its IDX files and scale pixels to float32 in [0, 1]."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    check_split(images, labels, f"{images_path} + {labels_path}")
    return Split(x=images.astype(np.float32) / 255.0, y=labels.astype(np.uint8))


# Prepared arrays ---------------------------------------------------------------


def save_split(path: str | Path, split: Split) -> None:
    """Write a split as an uncompressed ``.npz`` (fast to load), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, x=split.x, y=split.y)


def load_split(path: str | Path) -> Split:
    """Read a split written by :func:`save_split`, checking what it holds."""
    rebuild = "rerun `dvc repro -f preprocess`"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x, y = arrays["x"], arrays["y"]
    except FileNotFoundError as error:
        raise PipelineError(
            f"{path} does not exist; run `dvc repro` to prepare the data"
        ) from error
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
    ) as error:
        reason = str(error).split(". ")[0] or type(error).__name__
        message = f"{path} is not a prepared split ({reason}); {rebuild}"
        raise PipelineError(message) from error
    try:
        check_split(x, y, str(path))
        if x.dtype != np.float32 or not len(y):
            raise IdxFormatError(f"{path}: expected float32 images, at least one")
    except IdxFormatError as error:
        raise PipelineError(f"{error}; {rebuild}") from error
    return Split(x=x, y=y)


def preprocess(raw_dir: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Parse the four raw IDX files and write ``train.npz`` and ``test.npz``."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    sizes = {}
    for split_name, images, labels in (
        ("train", TRAIN_IMAGES, TRAIN_LABELS),
        ("test", TEST_IMAGES, TEST_LABELS),
    ):
        split = load_idx_split(raw_dir / images, raw_dir / labels)
        save_split(out_dir / f"{split_name}.npz", split)
        sizes[split_name] = len(split.y)
        counts = np.bincount(split.y, minlength=len(CLASS_NAMES))
        logger.info(
            "%s: %d images, per-class counts %s",
            split_name,
            len(split.y),
            counts.tolist(),
        )
    return sizes


def run_fetch(params_path: str | Path, out_dir: str | Path) -> dict[str, str]:
    """Fetch the files listed under ``fetch`` in the params file into ``out_dir``."""
    from fmnist_pipeline.config import load_params

    config = load_params(params_path)["fetch"]
    return fetch(config["files"], config["sources"], out_dir, config["timeout"])
