"""Writing outputs so that an interrupted stage never leaves a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fmnist_pipeline.errors import PipelineError


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place on success.

    The temporary file lives in the same directory, so the final ``os.replace`` is
    atomic: readers see the old file or the new one, never a partial one. On any
    exception (including ``KeyboardInterrupt``) the temporary file is removed and
    ``target`` is left as it was. The temporary name keeps the suffix of
    ``target``, for writers (such as Keras) that check it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{target.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file private (0600); give it the mode of a new file.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; swap it into place on success.

    For writers that fill a whole directory as they go (DVCLive logs every epoch):
    until the end, ``target`` keeps its previous content. The swap is two renames,
    so between them a reader finds no ``target`` at all, never a mix of old and
    new files. On any exception the temporary directory is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    )
    try:
        yield tmp
        if target.exists():
            # Renaming a directory onto an empty one replaces it.
            old = Path(
                tempfile.mkdtemp(
                    dir=target.parent, prefix=f".{target.name}.", suffix=".old"
                )
            )
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file that an earlier stage wrote."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise PipelineError(
            f"{path} does not exist; run `dvc repro` to produce it"
        ) from error
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path} is not readable JSON ({error})") from error
