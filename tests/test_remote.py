"""Sharing a finished run through a DVC remote: push, clone, pull, nothing to rerun."""

import json

import pytest

from tests.conftest import run, tiny_params

pytestmark = pytest.mark.slow


def test_a_clone_pulls_the_run_from_the_remote_and_reruns_nothing(
    synthetic_mirror, pipeline_repo, tmp_path
):
    mirror, checksums = synthetic_mirror
    repo = pipeline_repo(tiny_params([str(mirror)], checksums))
    run(["dvc", "repro"], repo)
    store = tmp_path / "store"
    run(["dvc", "remote", "add", "-d", "store", str(store)], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "run the pipeline; default remote"], repo)
    run(["dvc", "push"], repo)
    assert any(path.is_file() for path in store.rglob("*"))

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    remotes = run(["dvc", "remote", "list"], clone).stdout
    assert remotes.split() == ["store", str(store), "(default)"]
    assert not (clone / "models/model.keras").exists()
    run(["dvc", "pull"], clone)

    model = "models/model.keras"
    assert (clone / model).read_bytes() == (repo / model).read_bytes()
    again = run(["dvc", "repro"], clone)
    assert "Running stage" not in again.stdout
    assert "up to date" in run(["dvc", "status"], clone).stdout

    def metrics(where):
        return json.loads(run(["dvc", "metrics", "show", "--json"], where).stdout)

    shown = metrics(clone)
    assert "accuracy" in json.dumps(shown)
    assert shown == metrics(repo)
