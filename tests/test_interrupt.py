"""Killing a real stage leaves the previous outputs or none, never half a file."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run, tiny_params

pytestmark = pytest.mark.slow


def start_in_own_session(command: list[str], cwd: Path) -> subprocess.Popen:
    env_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": env_bin + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def read_until(process: subprocess.Popen, marker: str) -> list[str]:
    lines = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} never appeared:\n{''.join(lines)[-3000:]}")


def snapshot(repo: Path, paths: list[str]) -> dict[str, bytes]:
    """The bytes of every file under ``paths``, by path relative to ``repo``."""
    files = {}
    for path in paths:
        root = repo / path
        for file in [root] if root.is_file() else sorted(root.rglob("*")):
            if file.is_file():
                files[str(file.relative_to(repo))] = file.read_bytes()
    return files


TRAIN_OUTPUTS = [
    "models/model.keras",
    "models/history.json",
    "metrics/train",
    "metrics/figures/learning_curves.png",
]


def test_killed_stage_keeps_every_previous_output_and_next_repro_recovers(
    synthetic_mirror, pipeline_repo
):
    mirror, checksums = synthetic_mirror
    params = tiny_params([str(mirror)], checksums)
    repo = pipeline_repo(params)
    run(["dvc", "repro"], repo)
    finished = snapshot(repo, TRAIN_OUTPUTS)
    assert "metrics/train/metrics.json" in finished

    # A training that would run for a long time, stopped during its second epoch
    # while DVCLive is logging epochs and nothing is final yet.
    params["train"].update(max_epochs=100000, patience=100000)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage_command = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]
    for signum in (signal.SIGTERM, signal.SIGINT):
        process = start_in_own_session(stage_command["cmd"].split(), repo)
        read_until(process, "Epoch 2/")
        os.killpg(process.pid, signum)
        rest = process.communicate()[0]
        assert process.returncode == 130, rest
        assert "error: stage train interrupted; rerun `dvc repro`" in rest
        assert snapshot(repo, TRAIN_OUTPUTS) == finished
        leftovers = [
            p.name for p in repo.rglob(".*") if p.name.endswith((".tmp", ".old"))
        ]
        assert leftovers == []

    # Through dvc, which removes a stage's outputs before running it: none are
    # left, the stage is not up to date, and the next run recovers.
    process = start_in_own_session(["dvc", "repro"], repo)
    read_until(process, "Epoch 2/")
    os.killpg(process.pid, signal.SIGINT)
    rest = process.communicate()[0]
    assert process.returncode != 0
    model = repo / "models/model.keras"
    assert (
        not model.exists()
        or model.read_bytes() == finished[str(model.relative_to(repo))]
    ), rest
    assert "train" in run(["dvc", "status"], repo).stdout

    params["train"].update(max_epochs=2, patience=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], repo)
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert model.read_bytes()[:2] == b"PK"  # a .keras file is a zip archive
