"""The DVC experiment workflow, run for real in a temporary git repository."""

import ast
import json

import pytest
import yaml

from tests.conftest import REPO_ROOT, run, tiny_params

pytestmark = pytest.mark.slow

STAGE_PARAMS = {
    "fetch": ["fetch"],
    "search": ["search"],
    "train": ["train"],
    "evaluate": ["evaluate"],
}


def ran_stages(output: str) -> set[str]:
    return {
        line.split("'")[1]
        for line in output.splitlines()
        if line.startswith("Running stage '")
    }


@pytest.fixture
def repo(synthetic_mirror, pipeline_repo):
    mirror, checksums = synthetic_mirror
    repo = pipeline_repo(tiny_params([str(mirror)], checksums))
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline run"], repo)
    return repo


def test_each_stage_declares_exactly_its_params_section():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    declared = {name: stage.get("params", []) for name, stage in stages.items()}
    assert {k: v for k, v in declared.items() if v} == STAGE_PARAMS
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert set(params) == {section for v in STAGE_PARAMS.values() for section in v}


def test_changes_rerun_exactly_the_affected_stages(repo):
    assert ran_stages(run(["dvc", "repro"], repo).stdout) == set()
    assert "up to date" in run(["dvc", "status"], repo).stdout

    changed = run(["dvc", "exp", "run", "-S", "evaluate.misclassified=3"], repo)
    assert ran_stages(changed.stdout) == {"evaluate"}

    changed = run(["dvc", "exp", "run", "-S", "train.patience=2"], repo)
    assert ran_stages(changed.stdout) == {"train", "evaluate"}

    changed = run(
        [
            "dvc",
            "exp",
            "run",
            "-S",
            "search.space.units_1=[40]",
            "-S",
            "search.n_iter=1",
        ],
        repo,
    )
    assert ran_stages(changed.stdout) == {"search", "train", "evaluate"}
    best = json.loads((repo / "metrics/best_params.json").read_text())
    assert best["units_1"] == 40


def experiments(repo) -> dict[str, dict]:
    """``dvc exp show --json`` as {experiment name: its params and metrics}."""
    table = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    found = {}
    for commit in table:
        for experiment in commit.get("experiments") or []:
            rev = experiment["revs"][0]
            found[rev["name"]] = rev["data"]
    return found


def accuracy_diff(repo, old: str, new: str) -> dict:
    """The test accuracy entry of ``dvc metrics diff OLD NEW``, checked for shape."""
    command = ["dvc", "metrics", "diff", old, new, "--all", "--json"]
    diff = json.loads(run(command, repo).stdout)
    accuracy = diff["metrics/evaluate/metrics.json"]["accuracy"]
    assert set(accuracy) == {"old", "new", "diff"}
    return accuracy


def test_nested_dict_override_and_experiment_table(repo):
    run(
        [
            "dvc",
            "exp",
            "run",
            "-n",
            "narrow-lr",
            "-S",
            "search.space.learning_rate={low: 0.001, high: 0.002}",
        ],
        repo,
    )
    data = experiments(repo)["narrow-lr"]
    params = data["params"]["params.yaml"]["data"]
    assert params["search"]["space"]["learning_rate"] == {"low": 0.001, "high": 0.002}
    metrics = {path: entry["data"] for path, entry in data["metrics"].items()}
    # The searched best params are shown beside the test metrics.
    best = metrics["metrics/best_params.json"]
    assert 0.001 <= best["learning_rate"] <= 0.002
    assert best["units_1"] in (32, 48)
    assert 0 <= metrics["metrics/evaluate/metrics.json"]["accuracy"] <= 1
    assert "best_mean_cv_score" in metrics["metrics/search.json"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.n_iter=zero", "error: stage search: params.yaml: search.n_iter: "),
        ("search.folds=1", "params.yaml: search.folds: got 1, expected an integer"),
        # DVC itself refuses to override a key that is not in the file ...
        ("search.n_iters=4", "Could not override 'search.n_iters'"),
        # ... and when told to add it, the stage refuses it.
        ("+search.n_iters=4", "params.yaml: search.n_iters: unknown key (set to 4)"),
    ],
)
def test_bad_override_fails_before_any_training(repo, override, message):
    result = run(["dvc", "exp", "run", "-S", override], repo, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output
    # The search stage stopped at its params: no fit started.
    assert "Fitting " not in output and "[CV" not in output
    assert "Running stage 'train'" not in output


def test_queued_experiments_run_and_metrics_diff_between_them_and_commits(repo):
    bounds = {
        "lr-low": "{low: 1.0e-4, high: 2.0e-4}",
        "lr-high": "{low: 2.0e-3, high: 3.0e-3}",
    }
    for name, bound in bounds.items():
        run(
            [
                "dvc",
                "exp",
                "run",
                "--queue",
                "-n",
                name,
                "-S",
                f"search.space.learning_rate={bound}",
            ],
            repo,
        )
    assert set(experiments(repo)) == set(bounds)
    run(["dvc", "queue", "start"], repo)
    # DVC's own way to wait: --run-all follows every queued or running experiment
    # until it has finished.
    run(["dvc", "exp", "run", "--run-all"], repo)
    assert run(["dvc", "queue", "status"], repo).stdout.count("Success") == 2

    # One command compares the two experiments' test accuracy.
    accuracy = accuracy_diff(repo, "lr-low", "lr-high")
    assert accuracy["diff"] == pytest.approx(accuracy["new"] - accuracy["old"])
    best_low = experiments(repo)["lr-low"]["metrics"]["metrics/best_params.json"]
    assert best_low["data"]["learning_rate"] < 2.0e-4

    run(["dvc", "exp", "apply", "lr-high"], repo)
    run(["git", "commit", "-qam", "apply experiment"], repo)
    accuracy_diff(repo, "HEAD~1", "HEAD")

    plots = run(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], repo).stdout
    rendered = json.loads(plots)["data"]
    for title in ("Confusion matrix (test set)", "Learning curves"):
        revisions = {rev for plot in rendered[title] for rev in plot["revisions"]}
        assert {"HEAD~1", "HEAD"} <= revisions, (title, revisions)


def _package_imports(path) -> set[str]:
    """Modules of fmnist_pipeline that the file at ``path`` imports anywhere."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("fmnist_pipeline"):
                module = REPO_ROOT / (name.replace(".", "/") + ".py")
                if module.is_file():
                    found.add(module.relative_to(REPO_ROOT).as_posix())
    if found:
        found.add("fmnist_pipeline/__init__.py")
    return found


def test_each_stage_depends_on_every_module_it_imports():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        script = f"stages/{name}.py"
        needed, todo = set(), [script]
        while todo:
            for module in _package_imports(REPO_ROOT / todo.pop()):
                if module not in needed:
                    needed.add(module)
                    todo.append(module)
        declared = set(stage["deps"])
        assert script in declared
        assert needed <= declared, f"stage {name} misses {sorted(needed - declared)}"
