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
    table = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    text = json.dumps(table)
    assert "narrow-lr" in text
    assert '"high": 0.002' in text
    for column in ("best_mean_cv_score", "macro_f1", "accuracy", "learning_rate"):
        assert column in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.n_iter=zero", "search.n_iter: got 'zero', expected an integer >= 1"),
        ("search.folds=1", "search.folds: got 1, expected an integer >= 2"),
        ("search.n_iters=4", "search.n_iters"),
    ],
)
def test_bad_override_fails_before_any_training(repo, override, message):
    result = run(["dvc", "exp", "run", "-S", override], repo, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert message in output
    assert "Epoch 1" not in output
    assert "candidate 1/" not in output


def test_queued_experiments_run_and_metrics_diff_between_commits(repo):
    for units in (24, 40):
        run(
            ["dvc", "exp", "run", "--queue", "-S", f"search.space.units_1=[{units}]"],
            repo,
        )
    # --run-all starts the queue's worker like `dvc queue start` and waits for it.
    run(["dvc", "exp", "run", "--run-all"], repo)
    table = json.dumps(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
    assert "[24]" in table and "[40]" in table

    run(["dvc", "exp", "apply", _newest_experiment(repo)], repo)
    run(["git", "commit", "-qam", "apply experiment"], repo)
    diff = json.loads(
        run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo).stdout
    )
    accuracy = diff["metrics/evaluate/metrics.json"]["accuracy"]
    assert set(accuracy) == {"old", "new", "diff"}

    plots = run(["dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"], repo).stdout
    rendered = json.loads(plots)["data"]
    for title in ("Confusion matrix (test set)", "Learning curves"):
        revisions = {rev for plot in rendered[title] for rev in plot["revisions"]}
        assert {"HEAD~1", "HEAD"} <= revisions, (title, revisions)


def _newest_experiment(repo) -> str:
    listing = run(["dvc", "exp", "list", "--name-only"], repo).stdout.split()
    assert listing, "no experiments listed"
    return listing[0]


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
