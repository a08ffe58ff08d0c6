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


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_killed_training_keeps_previous_model_and_next_repro_recovers(
    synthetic_mirror, pipeline_repo, signum
):
    mirror, checksums = synthetic_mirror
    params = tiny_params([str(mirror)], checksums)
    repo = pipeline_repo(params)
    run(["dvc", "repro"], repo)
    model = repo / "models/model.keras"
    finished_model = model.read_bytes()

    # A training that would run for a long time, stopped during its second epoch.
    params["train"].update(max_epochs=100000, patience=100000)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    process = start_in_own_session(["dvc", "repro"], repo)
    read_until(process, "Epoch 2/")
    os.killpg(process.pid, signum)
    rest = process.communicate()[0]
    assert process.returncode != 0

    assert not model.exists() or model.read_bytes() == finished_model, rest
    leftovers = [p.name for p in (repo / "models").iterdir() if ".tmp" in p.name]
    assert leftovers == []
    assert "train" in run(["dvc", "status"], repo).stdout

    params["train"].update(max_epochs=2, patience=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], repo)
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert model.read_bytes()[:2] == b"PK"  # a .keras file is a zip archive
