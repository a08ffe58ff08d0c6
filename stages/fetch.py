"""Stage fetch: copy or download the four Fashion-MNIST files and verify them."""

import argparse

from fmnist_pipeline.data import run_fetch
from fmnist_pipeline.stage import run_stage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="data/raw", help="directory for the .gz files")
    args = parser.parse_args(argv)
    run_stage("fetch", run_fetch, params_path=args.params, out_dir=args.out)


if __name__ == "__main__":
    main()
