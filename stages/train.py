"""Stage train: retrain the best candidate on all training images."""

import argparse

from fmnist_pipeline.stage import run_stage
from fmnist_pipeline.train import run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", default="data/prepared/train.npz")
    parser.add_argument("--best-params", default="metrics/best_params.json")
    parser.add_argument("--model", default="models/model.keras")
    parser.add_argument("--history", default="models/history.json")
    parser.add_argument("--live-dir", default="metrics/train")
    parser.add_argument("--figure", default="metrics/figures/learning_curves.png")
    args = parser.parse_args(argv)
    run_stage(
        "train",
        run,
        params_path=args.params,
        train_path=args.train,
        best_params_path=args.best_params,
        model_path=args.model,
        history_path=args.history,
        live_dir=args.live_dir,
        figure_path=args.figure,
    )


if __name__ == "__main__":
    main()
