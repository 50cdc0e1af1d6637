#!/bin/bash
# Issue 26, item 3: the policy (Qwen2.5-Coder-0.5B-Instruct, the Q4_K_M GGUF de-quantized, as
# HFPolicy loads it) for OpenVINO GenAI and ONNX Runtime GenAI, each in a scratch venv under /tmp
# (nothing here is installed by the project). OpenVINO GenAI's own GGUF reader fails on this file
# ("gguf_tensor_to_f16 failed"), so both start from a transformers checkpoint of it.
set -e
Q=/root/.cache/forkcode-models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
export HF_HUB_OFFLINE=1
cd /work/main && .venv/bin/python - "$Q" <<'PY'
import os, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.bfloat16)
model.hf_quantizer = None  # de-quantized already: save it as a plain bf16 checkpoint
model.save_pretrained("/tmp/qwen-hf")
AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path)).save_pretrained("/tmp/qwen-hf")
PY
python3 -m venv /tmp/ov
# optimum-intel pulled torch 2.14.1 and transformers 5.5.4 into this venv (only the export uses them)
/tmp/ov/bin/pip install -q openvino==2026.4.1 openvino-genai==2026.4.1.0 openvino-tokenizers==2026.4.1.0 \
  "optimum-intel[openvino]==2.2.0" nncf
for w in fp16 int8; do  # fp16 weights run in bf16 on AMX (OpenVINO's default precision hint there)
  /tmp/ov/bin/optimum-cli export openvino --model /tmp/qwen-hf --task text-generation-with-past --weight-format $w /tmp/qwen-ov-$w
done
python3 -m venv /tmp/ort
/tmp/ort/bin/pip install -q torch==2.13.0 onnxruntime-genai==0.18.0 onnx onnx_ir "transformers<5.20"
# bf16 builds but does not run on the CPU provider ("Could not find an implementation for Where(16)")
/tmp/ort/bin/python -m onnxruntime_genai.models.builder -m /tmp/qwen-hf -i /tmp/qwen-hf -o /tmp/qwen-ort-fp32 -p fp32 -e cpu -c /tmp/ort-cache
/tmp/ort/bin/python -m onnxruntime_genai.models.builder -m /tmp/qwen-hf -i /tmp/qwen-hf -o /tmp/qwen-ort-int4 -p int4 -e cpu \
  -c /tmp/ort-cache --extra_options int4_accuracy_level=4
