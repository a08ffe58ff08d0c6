"""Stage evaluate: score the trained model on the 10,000 test images."""

import argparse

from fmnist_pipeline.evaluate import run
from fmnist_pipeline.stage import run_stage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/model.keras")
    parser.add_argument("--test", default="data/prepared/test.npz")
    parser.add_argument("--live-dir", default="metrics/evaluate")
    parser.add_argument("--figure", default="metrics/figures/confusion_matrix.png")
    args = parser.parse_args(argv)
    run_stage(
        "evaluate",
        run,
        model_path=args.model,
        test_path=args.test,
        live_dir=args.live_dir,
        figure_path=args.figure,
    )


if __name__ == "__main__":
    main()
