"""Stage evaluate: score the trained model on the 10,000 test images."""

import argparse

from fmnist_pipeline.evaluate import run
from fmnist_pipeline.stage import run_stage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/model.keras")
    parser.add_argument("--test", default="data/prepared/test.npz")
    parser.add_argument("--best-params", default="metrics/best_params.json")
    parser.add_argument("--search-metrics", default="metrics/search.json")
    parser.add_argument("--live-dir", default="metrics/evaluate")
    parser.add_argument("--figures", default="metrics/figures")
    parser.add_argument("--report", default="metrics/report.md")
    args = parser.parse_args(argv)
    run_stage(
        "evaluate",
        run,
        params_path=args.params,
        model_path=args.model,
        test_path=args.test,
        best_params_path=args.best_params,
        search_metrics_path=args.search_metrics,
        live_dir=args.live_dir,
        figures_dir=args.figures,
        report_path=args.report,
    )


if __name__ == "__main__":
    main()
