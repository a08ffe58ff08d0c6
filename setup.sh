#!/usr/bin/env bash
# Set up everything the pipeline and its tests need: the Fashion-MNIST files from
# the Debian package (where apt is available) and a virtual environment in .venv
# with the pinned Python packages and this project installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")"

DATASET_DIR=/usr/share/datasets/fashion-mnist
PYTHON=${PYTHON:-python3}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
HAVE_APT=false
if command -v apt-get >/dev/null 2>&1; then HAVE_APT=true; fi
APT_UPDATED=false
apt_install() {
    if [ "$APT_UPDATED" = false ]; then
        $SUDO apt-get update -qq && APT_UPDATED=true
    fi
    $SUDO apt-get install -y -qq "$@"
}

if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'
then
    echo "setup: $PYTHON is $("$PYTHON" --version 2>&1); the pinned packages need" \
         "Python 3.11 or 3.12 (set PYTHON=python3.12, for example)" >&2
    exit 1
fi

if [ ! -d "$DATASET_DIR" ]; then
    if [ "$HAVE_APT" = true ]; then
        echo "setup: installing dataset-fashion-mnist (offline copy of the data)"
        if ! apt_install dataset-fashion-mnist >/dev/null; then
            echo "setup: could not install dataset-fashion-mnist;" \
                 "the fetch stage will use the download URLs in params.yaml" >&2
        fi
    else
        echo "setup: no apt-get; the fetch stage will use the download URLs" >&2
    fi
fi

# Debian and Ubuntu ship venv (ensurepip) in a package of its own.
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null && [ "$HAVE_APT" = true ]; then
    echo "setup: installing python3-venv"
    apt_install python3-venv >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
echo "setup: installing pinned packages into .venv (first time: a few minutes)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
echo "setup: done; activate with '. .venv/bin/activate'"
