"""Stage search: randomized search with stratified cross-validation."""

import argparse

from fmnist_pipeline.search import run
from fmnist_pipeline.stage import run_stage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", default="data/prepared/train.npz")
    parser.add_argument("--best-params", default="metrics/best_params.json")
    parser.add_argument("--cv-results", default="metrics/cv_results.csv")
    parser.add_argument("--metrics", default="metrics/search.json")
    parser.add_argument("--figure", default="metrics/figures/cv_scores.png")
    args = parser.parse_args(argv)
    run_stage(
        "search",
        run,
        params_path=args.params,
        train_path=args.train,
        best_params_path=args.best_params,
        cv_results_path=args.cv_results,
        metrics_path=args.metrics,
        figure_path=args.figure,
    )


if __name__ == "__main__":
    main()
