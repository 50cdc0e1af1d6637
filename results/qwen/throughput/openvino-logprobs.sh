#!/bin/bash
# Are OpenVINO GenAI's per-token log-probs the ones this project records (the sampled token's
# log-prob at temperature 1)? One 64-token sample from OpenVINO (fp16 IR, temperature 0.8, top-p
# 0.95), teacher-forced through HFPolicy's model (output: openvino-logprobs.txt). Needs runtimes-export.sh.
export HF_HUB_OFFLINE=1
/tmp/ov/bin/python - 2>/dev/null <<'PY'
import json, sys
import numpy as np, openvino as ov, openvino_genai as genai
sys.path.insert(0, "/work/main/results/qwen/throughput")
from runtimes_raw import prompt_ids
ids = prompt_ids()
scheduler = genai.SchedulerConfig()
scheduler.cache_size, scheduler.max_num_seqs, scheduler.max_num_batched_tokens = 2, 4, 2048
pipe = genai.ContinuousBatchingPipeline("/tmp/qwen-ov-fp16", scheduler, "CPU", {})
config = genai.GenerationConfig(max_new_tokens=64, do_sample=True, temperature=0.8, top_p=0.95, logprobs=1, rng_seed=3)
handle = pipe.add_request(0, ov.Tensor(np.array([ids], dtype=np.int64)), config)
while pipe.has_non_finished_requests():
    pipe.step()
out = handle.read_all()[0]
json.dump({"prompt": ids, "tokens": list(out.generated_ids), "logprobs": list(out.generated_log_probs)}, open("/tmp/ov-logprobs.json", "w"))
PY
cd /work/main && .venv/bin/python - 2>/dev/null <<'PY'
import json
import torch
from lm.policy import HFPolicy
d = json.load(open("/tmp/ov-logprobs.json"))
policy = HFPolicy("/root/.cache/forkcode-models/qwen2.5-coder-0.5b/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
with torch.inference_mode():
    logits = policy.model(torch.tensor([d["prompt"] + d["tokens"][:-1]])).logits[0, len(d["prompt"]) - 1:].float()
tokens, theirs = torch.tensor(d["tokens"]), torch.tensor(d["logprobs"])
for name, t in (("temperature 1", 1.0), ("temperature 0.8", 0.8)):
    ours = torch.log_softmax(logits / t, -1).gather(1, tokens[:, None])[:, 0]
    print(f"{len(tokens)} tokens; OpenVINO's log-probs against ours at {name}: mean |difference| {(theirs - ours).abs().mean():.4f}, "
          f"largest {(theirs - ours).abs().max():.4f}")
PY
