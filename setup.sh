#!/usr/bin/env bash
# Set up everything the pipeline and its tests need: the Fashion-MNIST files from
# the Debian package (where apt is available) and a virtual environment in .venv
# with the pinned Python packages and this project installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")"

DATASET_DIR=/usr/share/datasets/fashion-mnist
PYTHON=${PYTHON:-python3}

if [ ! -d "$DATASET_DIR" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        echo "setup: installing dataset-fashion-mnist (offline copy of the data)"
        if ! { $SUDO apt-get update -qq && \
               $SUDO apt-get install -y -qq dataset-fashion-mnist; } >/dev/null; then
            echo "setup: could not install dataset-fashion-mnist;" \
                 "the fetch stage will use the download URLs in params.yaml" >&2
        fi
    else
        echo "setup: no apt-get; the fetch stage will use the download URLs" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
echo "setup: installing pinned packages into .venv (first time: a few minutes)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
echo "setup: done; activate with '. .venv/bin/activate'"
