"""GPU-path checks on a CUDA machine (no model download needed): tiny random Phi-3 models.

    python3 scripts/gpu_check.py

Checks, each printed as PASS/FAIL with its numbers: fork sampling from one KV cache equals
recomputing (fp32 and bf16 on CUDA), teacher forcing agrees with sampling log-probs, the
incremental value scorer equals the full forward, a bf16 training step trains only the head and
last layers, best_of_k / beam / tree run on CUDA in bf16, batched fork throughput on a mid-size
random model, and (with Ray and vLLM installed) sampling on a Ray actor with a vLLM replica.
"""

import json
import os
import sys
import tempfile
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from conftest import make_tiny_model

from lm.models import vocab_fingerprint
from lm.policy import HFPolicy
from lm.sampling import SamplingParams
from valuemodel.model import ValueModel, trainable_names
from valuemodel.train import TrainConfig, train

results = []


def ray_vllm(model_dir):
    """The Ray path on a GPU node: bench quality --workers 1 --backend vllm runs one vLLM replica in a
    Ray actor holding one GPU, and every problem is stored once."""
    import importlib.util
    import subprocess
    if not (importlib.util.find_spec("ray") and importlib.util.find_spec("vllm")):
        check("ray + vllm sampling: skipped (pip install 'forkcode[ray,vllm]')", True)
        return
    with tempfile.TemporaryDirectory() as out:
        r = subprocess.run([sys.executable, "-m", "bench.cli", "quality", "--dataset", "humaneval", "--limit", "4",
                            "--strategies", "sample", "--k", "2", "--max-new-tokens", "32", "--policy", model_dir,
                            "--backend", "vllm", "--workers", "1", "--out", out, "--json"],
                           capture_output=True, text=True, cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
        ids = []
        if os.path.exists(os.path.join(out, "runs", "sample.jsonl")):
            with open(os.path.join(out, "runs", "sample.jsonl")) as f:
                ids = [json.loads(line)["problem_id"] for line in f]
        check("bench quality --workers 1 --backend vllm (a Ray actor with one GPU)",
              r.returncode == 0 and sorted(ids) == sorted(set(ids)) and len(ids) == 4, rows=len(ids),
              error=r.stderr.strip().splitlines()[-1][:300] if r.returncode else "")


def check(name, ok, **numbers):
    results.append({"check": name, "ok": bool(ok), **numbers})
    print(("PASS " if ok else "FAIL ") + name + " " + json.dumps(numbers), flush=True)


def fork_equivalence(policy, dtype_name):
    prompt = policy.prompt_tokens([{"role": "user", "content": "print the sum of two numbers"}])
    ((trunk, state),) = policy.sample_with_state(prompt, SamplingParams(max_new_tokens=48, seed=1))
    lp, _ = policy.teacher_force(prompt, trunk.tokens)
    tf_diff = max(abs(a - b) for a, b in zip(lp, trunk.logprobs))
    positions = [len(prompt) + i for i in (1, 7, 20, 33)]
    greedy = SamplingParams(max_new_tokens=32, temperature=0)
    forks = policy.sample_forks(state, positions, 4, greedy)
    same, diffs = 0, []
    for p, group in zip(positions, forks):
        fresh = policy.sample(state.tokens[:p], 1, greedy)[0]
        same += all(c.tokens == fresh.tokens for c in group)
        n = min(len(group[0].logprobs), len(fresh.logprobs))
        diffs.append(max(abs(a - b) for a, b in zip(group[0].logprobs[:n], fresh.logprobs[:n])))
    tol = 1e-3 if dtype_name == "float32" else 0.1
    check(f"fork KV reuse == recompute ({dtype_name}, cuda)", same == len(positions) and max(diffs) < tol,
          identical_groups=f"{same}/{len(positions)}", max_logprob_diff=max(diffs), teacher_force_diff=tf_diff)


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    import transformers
    print("transformers", transformers.__version__, flush=True)
    tmp = tempfile.mkdtemp()
    tiny = make_tiny_model(os.path.join(tmp, "tiny"))
    for dtype in ("float32", "bfloat16"):
        fork_equivalence(HFPolicy(tiny, dtype=dtype, device="cuda"), dtype)

    vm = ValueModel.from_base(tiny, last_layers=2, dtype="float32", device="cuda")
    seq = [5 + (i * 13) % 300 for i in range(300)]
    full = vm.values([seq])[0]
    sc = vm.scorer()
    inc = sc.extend(seq[:100]) + [v for t in seq[100:] for v in sc.extend([t])]
    check("incremental value == full forward (fp32, cuda)", max(abs(a - b) for a, b in zip(full, inc)) < 1e-4,
          max_diff=max(abs(a - b) for a, b in zip(full, inc)))

    vm = ValueModel.from_base(tiny, last_layers=1, dtype="float32", device="cuda")
    before = {n: p.detach().clone() for n, p in vm.model.named_parameters()}
    fp = vocab_fingerprint(vm.tokenizer)
    rows = [{"problem_id": f"p{i % 3}", "example_id": f"r{i}", "policy": "x", "tokenizer": fp,
             "prompt_tokens": [5, 6, 7], "response_tokens": [20 + (i * 7 + j) % 200 for j in range(30)],
             "label": i % 2, "label_start": 3, "prompt_text": "", "response_text": ""} for i in range(32)]
    data = os.path.join(tmp, "train.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    result, _ = train(vm, data, os.path.join(tmp, "vm"), TrainConfig(epochs=2, batch_size=8, bf16=True, lr=1e-3),
                      progress=False)
    trained = set(trainable_names(vm.model, 1))
    wrong = [n for n, p in vm.model.named_parameters() if (not torch.equal(before[n], p.detach())) != (n in trained)]
    check("bf16 training on cuda trains only head + last layers", not wrong and result.training_loss == result.training_loss,
          loss=result.training_loss, steps=result.global_step, wrongly_changed=wrong[:3])

    # The decoding strategies end to end on CUDA in bf16 (policy and value on the GPU).
    from engine.beam import beam
    from engine.best_of_k import best_of_k
    from engine.result import DecodeConfig
    from engine.tree import tree
    from judge import Problem
    problem = Problem(id="p", question="Print the sum of two integers.", kind="stdio", inputs=["1 2\n"], outputs=["3\n"])
    policy = HFPolicy(tiny, dtype="bfloat16", device="cuda")
    vm = ValueModel.from_base(tiny, last_layers=2, dtype="bfloat16", device="cuda")
    prefix, conts = seq[:50], [seq[50:60], seq[60:90], seq[90:91]]
    shared = vm.final_values(prefix, conts)
    full = [v[-1] for v in vm.values([prefix + c for c in conts])]
    check("shared-prefix final values == full scoring (bf16, cuda)", max(abs(a - b) for a, b in zip(shared, full)) < 2e-2,
          max_diff=max(abs(a - b) for a, b in zip(shared, full)))
    cfg = DecodeConfig(k=6, max_new_tokens=48, seed=0, dedupe=False, beam_width=2, expansions=3, step="8",
                       token_budget=200)
    r = best_of_k(policy, vm, problem, cfg)
    check("best_of_k on cuda bf16 picks the highest value", r.value == max(c.value for c in r.candidates)
          and len(r.candidates) == 6, policy_tokens=r.stats["policy_tokens"])
    r = beam(policy, vm, problem, cfg)
    check("beam on cuda bf16 keeps <= B beams and the budget", r.stats["policy_tokens"] <= 200
          and all(len(t["kept"]) <= 2 for t in r.stats["trace"]), policy_tokens=r.stats["policy_tokens"],
          steps=r.stats["steps"])
    r = tree(policy, vm, problem, replace(cfg, branch_prob=0.5, max_branches=4, abort_value=1.0, patience=4))
    check("tree on cuda bf16 branches and aborts", r.stats["branches"] >= 1 and r.stats["aborted"] >= 1,
          branches=r.stats["branches"], aborted=r.stats["aborted"], tokens_saved=r.stats["tokens_saved"])

    # Throughput of batched forks on a mid-size random model (about SmolLM2's size).
    from transformers import AutoTokenizer, Phi3Config, Phi3ForCausalLM
    tok = AutoTokenizer.from_pretrained(tiny)
    cfg = Phi3Config(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, pad_token_id=tok.pad_token_id,
                     eos_token_id=tok.eos_token_id, max_position_embeddings=4096)
    model = Phi3ForCausalLM(cfg).to("cuda", torch.bfloat16).eval()
    policy = HFPolicy(model=model, tokenizer=tok, spec="random-phi3-135m")
    policy.eos_ids = []  # random weights: decode to the full length
    prompt = list(range(10, 210))
    ((trunk, state),) = policy.sample_with_state(prompt, SamplingParams(max_new_tokens=128, seed=0))
    params = SamplingParams(max_new_tokens=256, seed=0)
    torch.cuda.synchronize()
    start = time.perf_counter()
    groups = policy.sample_forks(state, [len(prompt) + i for i in (5, 25, 45, 65, 85, 105)], 6, params)
    torch.cuda.synchronize()
    dt = time.perf_counter() - start
    n = sum(len(c.tokens) for g in groups for c in g)
    check("6x6 forks x 256 tokens, 135M-size random Phi-3, bf16 cuda", n == 36 * 256, tokens=n,
          seconds=round(dt, 2), tokens_per_s=round(n / dt))
    ray_vllm(tiny)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_check.json"), "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
