#!/bin/bash
# Issue 26, item 3, side by side in one sitting (output: runtimes-side-by-side.txt): the raw sampler
# on this project's HFPolicy, OpenVINO GenAI (fp16 and int8 weights) and ONNX Runtime GenAI (int4
# weights, int8 compute; its fp32 model ran 8.0 / 36.7 / 79.8 tok/s at 1 / 8 / 32 rows in a first
# look and bf16 does not run on its CPU provider), interleaved, two rounds. Needs runtimes-export.sh.
Q=/root/.cache/forkcode-models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
export HF_HUB_OFFLINE=1
R="$(dirname "$(readlink -f "$0")")/runtimes_raw.py"
lscpu | grep "Model name"
/tmp/ov/bin/pip list 2>/dev/null | grep -E "^openvino |^openvino-genai "
/tmp/ort/bin/pip list 2>/dev/null | grep -E "^onnxruntime "
for round in 1 2; do
  echo "== round $round"
  (cd /work/main && .venv/bin/python "$R" hf $Q 1,8,32,128) 2>/dev/null
  /tmp/ov/bin/python "$R" openvino /tmp/qwen-ov-fp16 1,8,32,128 2>/dev/null
  /tmp/ov/bin/python "$R" openvino /tmp/qwen-ov-int8 1,8,32,128 2>/dev/null
  /tmp/ort/bin/python "$R" ortgenai /tmp/qwen-ort-int4 1,8,32 2>/dev/null
done
