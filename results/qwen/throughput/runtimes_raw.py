"""The raw sampler's rate on three runtimes, one process each (issue 26, item 3): one short prompt
x rows, 256 new tokens a row (128 at 1 row), EOS ignored, temperature 0.8, top-p 0.95, each
sampled token's log-prob kept. Usage: runtimes_raw.py {hf,openvino,ortgenai} MODEL ROWS,ROWS,...

- hf: this project's HFPolicy.sample_many (with the critic's features), main venv, MODEL = the GGUF;
- openvino: OpenVINO GenAI's ContinuousBatchingPipeline (its GenerationOutput.generated_log_probs
  are the sampled tokens' log-probs at temperature 1, as ours: `openvino-logprobs.txt`), MODEL = an
  IR from runtimes-export.sh;
- ortgenai: ONNX Runtime GenAI's Generator. It returns no log-probs, so each step also reads the
  logits and takes the sampled tokens' log-softmax in numpy, part of the timed work."""
import os
import sys
import time

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")

PROMPT = [{"role": "user", "content": "Write a Python function that merges two sorted lists, with a docstring."}]


def hf(model):
    sys.path.insert(0, REPO)
    from lm.policy import HFPolicy
    from lm.sampling import SamplingParams
    policy = HFPolicy(model)
    prompt = policy.prompt_tokens(PROMPT)

    def run(rows, steps):
        params = SamplingParams(max_new_tokens=steps, temperature=0.8, top_p=0.95, seed=0, ignore_eos=True)
        start = time.perf_counter()
        done = list(policy.sample_many([(prompt, rows, params)], max_rows=rows, features=True))
        return sum(len(c.tokens) for _, cs in done for c in cs) / (time.perf_counter() - start)
    return run


def prompt_ids():
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained("/tmp/qwen-hf").apply_chat_template(PROMPT, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def openvino(model):
    import openvino as ov
    import openvino_genai as genai
    ids = ov.Tensor(np.array([prompt_ids()], dtype=np.int64))
    scheduler = genai.SchedulerConfig()
    scheduler.cache_size, scheduler.max_num_seqs, scheduler.max_num_batched_tokens = 4, 128, 4096
    pipe = genai.ContinuousBatchingPipeline(model, scheduler, "CPU", {})

    def run(rows, steps):
        config = genai.GenerationConfig(max_new_tokens=steps, do_sample=True, temperature=0.8, top_p=0.95,
                                        ignore_eos=True, logprobs=1, rng_seed=0)
        handles = [pipe.add_request(i, ids, config) for i in range(rows)]
        start = time.perf_counter()
        while pipe.has_non_finished_requests():
            pipe.step()
        outs = [h.read_all()[0] for h in handles]
        seconds = time.perf_counter() - start
        assert all(len(o.generated_log_probs) == len(o.generated_ids) for o in outs)
        return sum(len(o.generated_ids) for o in outs) / seconds
    return run


def ortgenai(model):
    import onnxruntime_genai as og
    ids, lm = prompt_ids(), og.Model(model)

    def run(rows, steps):
        params = og.GeneratorParams(lm)
        params.set_search_options(do_sample=True, temperature=0.8, top_p=0.95, top_k=0, random_seed=0, batch_size=rows,
                                  max_length=len(ids) + steps, min_length=len(ids) + steps)
        gen = og.Generator(lm, params)
        gen.append_tokens(np.array([ids] * rows, dtype=np.int32))
        start, tokens = time.perf_counter(), 0
        while not gen.is_done():
            logits = gen.get_logits()[:, -1, :].astype(np.float32)
            gen.generate_next_token()
            chosen = logits[np.arange(rows), gen.get_next_tokens()]
            top = logits.max(-1)
            _ = chosen - top - np.log(np.exp(logits - top[:, None]).sum(-1))  # the sampled tokens' log-probs
            tokens += rows
        return tokens / (time.perf_counter() - start)
    return run


if __name__ == "__main__":
    backend, model, rows_list = sys.argv[1], sys.argv[2], [int(r) for r in sys.argv[3].split(",")]
    start = time.perf_counter()
    run = {"hf": hf, "openvino": openvino, "ortgenai": ortgenai}[backend](model)
    print(f"{backend} {model.split('/')[-1]}: loaded in {time.perf_counter() - start:.1f} s", flush=True)
    run(2, 4)  # warm-up
    for rows in rows_list:
        print(f"{backend} {model.split('/')[-1]} {rows} rows: {run(rows, 256 if rows > 1 else 128):.1f} tok/s", flush=True)
