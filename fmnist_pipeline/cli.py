"""The ``fmnist`` command: classify PNG or JPEG images with the trained model.

fmnist predict shirt.jpg photos/ --top-k 3
fmnist predict photos/ --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from fmnist_pipeline import CLASS_NAMES, __version__
from fmnist_pipeline.errors import PipelineError
from fmnist_pipeline.predict import (
    DEFAULT_MODEL_PATH,
    INVERT_CHOICES,
    FashionClassifier,
    FileResult,
)


def _top_k(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= len(CLASS_NAMES):
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {len(CLASS_NAMES)}, got {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmnist", description="Fashion-MNIST pipeline tools."
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict",
        help="classify PNG or JPEG images with the trained model",
        description=(
            "Classify PNG or JPEG images with the trained model. Each image is "
            "converted to 28x28 grayscale, fitted keeping its aspect ratio and "
            "inverted when its background is light, so that the item is light on "
            "a dark background as in Fashion-MNIST."
        ),
    )
    predict.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files, or directories whose image files (directly inside) "
        "are all classified",
    )
    predict.add_argument(
        "--model",
        default=str(DEFAULT_MODEL_PATH),
        help="trained .keras model (default: %(default)s)",
    )
    predict.add_argument(
        "--top-k",
        type=_top_k,
        default=3,
        help="most probable classes to show per image (default: %(default)s)",
    )
    predict.add_argument(
        "--invert",
        choices=INVERT_CHOICES,
        default="auto",
        help="invert the grey levels: 'auto' when the border of the picture is "
        "light (default: %(default)s)",
    )
    predict.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list with one object per file instead of text",
    )
    predict.set_defaults(run=predict_command)
    return parser


def _as_text(result: FileResult) -> str:
    ranked = ", ".join(
        f"{score.class_name} {score.probability:.2%}" for score in result.predictions
    )
    return f"{result.path}: {ranked}"


def _as_json(result: FileResult) -> dict:
    if not result.ok:
        return {"path": str(result.path), "error": result.error}
    return {
        "path": str(result.path),
        "predictions": [
            {"class": score.class_name, "probability": score.probability}
            for score in result.predictions
        ],
    }


def predict_command(args: argparse.Namespace) -> int:
    """Classify the files of ``fmnist predict``; return the exit status."""
    classifier = FashionClassifier(args.model)
    results = classifier.classify_files(
        args.paths, invert=args.invert, top_k=args.top_k
    )

    for result in results:
        if not result.ok:
            print(f"error: {result.path}: {result.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([_as_json(result) for result in results], indent=2))
    else:
        for result in results:
            if result.ok:
                print(_as_text(result))
    return 0 if all(result.ok for result in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fmnist`` command; return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
