"""Stage preprocess: parse the IDX files and write scaled arrays."""

import argparse

from fmnist_pipeline.data import preprocess
from fmnist_pipeline.stage import run_stage


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", default="data/raw")
    parser.add_argument("--out", default="data/prepared")
    args = parser.parse_args(argv)
    run_stage("preprocess", preprocess, raw_dir=args.raw, out_dir=args.out)


if __name__ == "__main__":
    main()
