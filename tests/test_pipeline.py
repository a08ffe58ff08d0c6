"""Real `dvc repro` runs in a temporary git repository."""

import csv
import io
import json
import os

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

    # DVCLive logged train and hold-out loss and accuracy at every epoch.
    epochs = json.loads((repo / "metrics/train/metrics.json").read_text())["epochs_run"]
    logs = repo / "metrics/train/plots/metrics"
    for split in ("train", "eval"):
        for name in ("loss", "accuracy"):
            lines = (logs / split / f"{name}.tsv").read_text().splitlines()
            assert lines[0] == f"step\t{name}"
            assert [int(line.split("\t")[0]) for line in lines[1:]] == list(
                range(epochs)
            )

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
    params = tiny_params([str(mirror)], checksums)
    params["search"]["n_jobs"] = 2  # parallel fits, as by default
    repo = pipeline_repo(params)

    run(["dvc", "repro"], repo)
    evaluation = check_outputs(repo)
    # The bars are easy to tell apart; even a two-epoch model is far above chance.
    assert evaluation["accuracy"] > 0.3
    best = (repo / "metrics/best_params.json").read_text()
    scores = (repo / "metrics/cv_results.csv").read_text()

    # Determinism: running every stage again gives the same candidates, scores,
    # best params and test metrics.
    run(["dvc", "repro", "--force"], repo)
    assert (repo / "metrics/best_params.json").read_text() == best
    assert _without_times(repo / "metrics/cv_results.csv") == _without_times_text(
        scores
    )
    again = json.loads((repo / "metrics/evaluate/metrics.json").read_text())
    assert _numbers(again) == pytest.approx(_numbers(evaluation), abs=1e-6, rel=0)

    status = run(["dvc", "status"], repo)
    assert "up to date" in status.stdout
    again = run(["dvc", "repro"], repo)
    assert "Running stage" not in again.stdout

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    assert json.dumps(shown).count("macro_f1") == 1
    plots = run(["dvc", "plots", "show", "--json"], repo)
    assert "Confusion matrix (test set)" in plots.stdout


def _numbers(tree, prefix=""):
    """Flatten nested metrics into {dotted key: number}."""
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(_numbers(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _without_times_text(text):
    """The CSV's rows without its columns of seconds, which vary run to run."""
    rows = list(csv.DictReader(io.StringIO(text)))
    return [{k: v for k, v in row.items() if not k.endswith("_time")} for row in rows]


def _without_times(path):
    return _without_times_text(path.read_text())


def test_dvc_repro_fails_cleanly_when_no_source_has_the_data(tmp_path, pipeline_repo):
    repo = pipeline_repo(tiny_params([str(tmp_path / "empty")]))
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode != 0
    assert "could not obtain a verified" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


# CI installs the Debian package, so there the real-data run is never skipped.
@pytest.mark.skipif(
    not REAL_DATA.is_dir() and not os.environ.get("CI"),
    reason="needs the Debian package dataset-fashion-mnist",
)
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
