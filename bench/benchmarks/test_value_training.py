"""Value-model training time per epoch with and without the frozen-layer cache, on the same data,
side by side: without it every step runs the frozen bottom layers again; with it they run once
(each prompt once, its responses continuing the prompt's cache) and every epoch runs only the
top N layers and the head.

Base `FORKCODE_BENCH_VALUE_BASE` (e.g. the Qwen2.5-Coder-0.5B GGUF), else SmolLM2-135M; data: 24
problems x 8 rollouts of ~100 response tokens after a ~120-token prompt (synthetic token ids: the
cost does not depend on them)."""

import json
import os
import random
import time

import torch

from valuemodel.model import ValueModel
from valuemodel.train import TrainConfig, train

BASE = os.environ.get("FORKCODE_BENCH_VALUE_BASE") or "smollm2"
LAST_LAYERS = 2


def _data(path, vocab):
    rng = random.Random(0)
    rows = []
    for p in range(24):
        prompt = [rng.randrange(100, vocab) for _ in range(120)]
        for i in range(8):
            resp = [rng.randrange(100, vocab) for _ in range(rng.randrange(60, 140))]
            rows.append({"problem_id": f"p{p}", "example_id": f"r{i}", "policy": BASE, "tokenizer": None, "prompt_tokens": prompt,
                         "response_tokens": resp, "label": int(i % 3 == 0), "label_start": 0,
                         "prompt_text": "", "response_text": ""})
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_training_epoch_with_and_without_the_frozen_cache(benchmark, timed, tmp_path, monkeypatch):
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))  # the cache is built here, not found
    results = {}
    for cache in (False, True):
        torch.manual_seed(0)
        vm = ValueModel.from_base(BASE, last_layers=LAST_LAYERS)
        data = tmp_path / "train.jsonl"
        if not data.exists():
            _data(data, len(vm.tokenizer))
        out, cfg = str(tmp_path / f"out-{cache}"), TrainConfig(epochs=2, cache=cache)
        if cache:  # the measured side
            history, total = timed(lambda vm=vm, out=out, cfg=cfg, data=data: train(vm, str(data), out, cfg, progress=False))
        else:
            start = time.perf_counter()
            history = train(vm, str(data), out, cfg, progress=False)
            total = time.perf_counter() - start
        cfg = json.loads((tmp_path / f"out-{cache}" / "value_config.json").read_text())
        results[cache] = {"epoch_s": [h["seconds"] for h in history], "cache_s": cfg["train"]["frozen_cache_seconds"],
                          "total_s": total, "loss": [round(h["loss"], 4) for h in history]}
    off, on = results[False], results[True]
    print(f"\n{BASE}, last {LAST_LAYERS} layers + head, 192 rollouts of 24 problems, 2 epochs:")
    print(f"  no cache:   epochs {off['epoch_s'][0]:.1f} s, {off['epoch_s'][1]:.1f} s; total {off['total_s']:.1f} s")
    print(f"  with cache: build {on['cache_s']:.1f} s once, epochs {on['epoch_s'][0]:.1f} s, {on['epoch_s'][1]:.1f} s; "
          f"total {on['total_s']:.1f} s")
    diff = max(abs(a - b) for a, b in zip(off["loss"], on["loss"]))
    print(f"  per epoch: {off['epoch_s'][1] / on['epoch_s'][1]:.1f}x faster with the cache; losses "
          f"{off['loss']} vs {on['loss']} (largest difference {diff:.1e})")
    benchmark.extra_info.update({"no_cache": off, "cache": on})
    assert off["epoch_s"][1] >= 2 * on["epoch_s"][1]  # measured 5.2x
    assert diff <= 1e-4  # the same training either way
