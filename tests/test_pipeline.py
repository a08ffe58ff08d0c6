"""Real `dvc repro` runs in a temporary git repository."""

import json

import numpy as np
import pytest
import yaml

from fmnist_pipeline import CLASS_NAMES
from fmnist_pipeline.model import load_model
from fmnist_pipeline.search import SEARCHED
from tests.conftest import REAL_DATA, REPO_ROOT, run, tiny_params

pytestmark = pytest.mark.slow


def declared_outputs() -> list[str]:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    outputs = []
    for stage in stages.values():
        for out in stage.get("outs", []):
            outputs.append(next(iter(out)) if isinstance(out, dict) else out)
    return outputs


def check_outputs(repo):
    for out in declared_outputs():
        path = repo / out
        assert path.exists(), f"{out} was not written"
        if path.is_file():
            assert path.stat().st_size > 0, f"{out} is empty"

    best = json.loads((repo / "metrics/best_params.json").read_text())
    assert set(best) == set(SEARCHED)
    evaluation = json.loads((repo / "metrics/evaluate/metrics.json").read_text())
    assert 0.0 <= evaluation["accuracy"] <= 1.0
    assert set(evaluation["per_class"]) == set(CLASS_NAMES)
    search = json.loads((repo / "metrics/search.json").read_text())
    assert search["candidates"] == 2
    model = load_model(repo / "models/model.keras")
    assert [layer.units for layer in model.layers[1:]][:3] == [
        best["units_1"],
        best["units_2"],
        best["units_3"],
    ]
    pngs = sorted(p.name for p in (repo / "metrics/figures").iterdir())
    assert pngs == [
        "confusion_matrix.png",
        "cv_scores.png",
        "learning_curves.png",
        "misclassified.png",
    ]
    for png in pngs:
        assert (repo / "metrics/figures" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = (repo / "metrics/report.md").read_text()
    assert f"| units_1 | {best['units_1']} |" in report
    assert f"| accuracy | {evaluation['accuracy']:.4f} |" in report
    for name in CLASS_NAMES:
        assert f"| {name} |" in report
    for png in pngs:
        assert f"(figures/{png})" in report
    return evaluation


def test_dvc_repro_on_a_synthetic_mirror_writes_every_output(
    synthetic_mirror, pipeline_repo
):
    mirror, checksums = synthetic_mirror
    repo = pipeline_repo(tiny_params([str(mirror)], checksums))

    run(["dvc", "repro"], repo)
    evaluation = check_outputs(repo)
    # The bars are easy to tell apart; even a two-epoch model is far above chance.
    assert evaluation["accuracy"] > 0.3

    status = run(["dvc", "status"], repo)
    assert "up to date" in status.stdout
    again = run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert json.dumps(shown).count("macro_f1") == 1
    plots = run(["dvc", "plots", "show", "--json"], repo)
    assert "Confusion matrix (test set)" in plots.stdout


def test_dvc_repro_fails_cleanly_when_no_source_has_the_data(tmp_path, pipeline_repo):
    repo = pipeline_repo(tiny_params([str(tmp_path / "empty")]))
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0
    assert "could not obtain a verified" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="needs dataset-fashion-mnist")
def test_smoke_run_on_real_fashion_mnist(pipeline_repo):
    params = tiny_params([str(REAL_DATA)])
    params["search"].update(subsample=1000, batch_size=64)
    params["train"].update(max_epochs=1, batch_size=256)
    repo = pipeline_repo(params)

    run(["dvc", "repro"], repo)
    evaluation = check_outputs(repo)
    prepared = np.load(repo / "data/prepared/test.npz")
    assert prepared["x"].shape == (10000, 28, 28)
    assert np.bincount(prepared["y"]).tolist() == [1000] * 10
    # One epoch of a small MLP on the real images already sorts most of them.
    assert evaluation["accuracy"] > 0.6
