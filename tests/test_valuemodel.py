"""The value model on tiny random Phi-3 models, and every metric on hand-made values."""

import json
import math
import os
import re

import pytest
import torch
from conftest import make_tiny_model

from lm.models import ModelError, vocab_fingerprint
from valuemodel.metrics import (
    auroc,
    auroc_lower_bound,
    calibration,
    process_curve,
    random_pass_at_k,
    selection,
    table2,
    value_at_fraction,
)
from valuemodel.model import AGGREGATES, ValueModel, ValueModelError, trainable_names
from valuemodel.train import IGNORE, TrainConfig, collate, make_features, problem_loss, train


@pytest.fixture(scope="module")
def vm(tiny_model_dir):
    return ValueModel.from_base(tiny_model_dir, last_layers=2, dtype="float32", device="cpu")


def _rows(n=8):
    rows = []
    for i in range(n):
        prompt = [5 + i % 3, 6, 7, 8]
        resp = [20 + (i * 7 + j) % 200 for j in range(6 + i % 4)]
        rows.append({"problem_id": f"p{i % 4}", "example_id": f"r{i}", "policy": "x", "tokenizer": "match",
                     "prompt_tokens": prompt, "response_tokens": resp, "label": i % 2, "label_start": 2,
                     "prompt_text": "", "response_text": ""})
    return rows


def test_only_head_and_last_layers_train(vm):
    names = trainable_names(vm.model, 2)
    assert any(n.startswith("score") for n in names)
    assert all(n.startswith("score") or ".layers.2." in n or ".layers.3." in n for n in names)
    assert {n for n, p in vm.model.named_parameters() if p.requires_grad} == set(names)


def test_training_changes_only_trainable_tensors_and_roundtrips(tiny_model_dir, tmp_path):
    vm = ValueModel.from_base(tiny_model_dir, last_layers=1, dtype="float32", device="cpu")
    before = {n: p.detach().clone() for n, p in vm.model.named_parameters()}
    data = tmp_path / "train.jsonl"
    rows = _rows()
    for r in rows:
        r["tokenizer"] = vocab_fingerprint(vm.tokenizer)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "vm"
    train(vm, str(data), str(out), TrainConfig(epochs=2, batch_size=4, lr=1e-2, logging_steps=1), progress=False)
    trained = set(trainable_names(vm.model, 1))
    for n, p in vm.model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == (n in trained), n
    # The checkpoint holds just the delta, and base + delta gives identical values.
    from safetensors.torch import load_file
    delta = load_file(str(out / "delta.safetensors"))
    assert set(delta) == trained and {t.dtype for t in delta.values()} == {torch.bfloat16}
    seqs = [r["prompt_tokens"] + r["response_tokens"] for r in rows[:3]]
    again = ValueModel.load(str(out), dtype="float32", device="cpu")
    for a, b in zip(again.values(seqs), vm.values(seqs)):  # the delta is stored in bf16
        assert a == pytest.approx(b, abs=2e-3)
    cfg = json.loads((out / "value_config.json").read_text())
    assert cfg["base"] == tiny_model_dir and cfg["last_layers"] == 1


def test_checkpoint_digest_names_the_weights_not_how_they_were_trained(vm, tmp_path):
    from valuemodel.model import DELTA_CONFIG, checkpoint_digest
    path = str(tmp_path / "vm")
    vm.save(path, extra={"train": {"data": "runs/a.jsonl"}})
    digest = checkpoint_digest(path)
    with open(f"{path}/{DELTA_CONFIG}") as f:
        cfg = json.load(f)
    cfg["train"]["data"] = "b.jsonl (sha256 0123456789abcdef)"
    with open(f"{path}/{DELTA_CONFIG}", "w") as f:
        json.dump(cfg, f)
    assert checkpoint_digest(path) == digest
    head = next(p for n, p in vm.model.named_parameters() if n.startswith(("score.", "classifier.")))
    with torch.no_grad():
        head.add_(1.0)
    try:
        vm.save(path)
    finally:
        with torch.no_grad():
            head.sub_(1.0)
    assert checkpoint_digest(path) != digest


def test_mismatched_base_is_refused(vm, tmp_path):
    vm.save(str(tmp_path / "vm"))
    other = make_tiny_model(str(tmp_path / "other"), seed=1)
    with pytest.raises(ValueModelError, match="was trained on base.*other weights"):
        ValueModel.load(str(tmp_path / "vm"), base=other, dtype="float32", device="cpu")
    with pytest.raises(ValueModelError, match="no value model"):
        ValueModel.load(str(tmp_path / "nothing"))
    bigger = make_tiny_model(str(tmp_path / "bigger"), seed=0, layers=5)
    with pytest.raises(ValueModelError, match="architecture differs.*num_hidden_layers 4 vs 5"):
        ValueModel.load(str(tmp_path / "vm"), base=bigger, dtype="float32", device="cpu")


@pytest.mark.parametrize("damage", ["config-not-json", "config-no-base", "delta-truncated", "delta-missing"])
def test_damaged_checkpoint_is_one_clear_error(vm, tmp_path, damage):
    path = tmp_path / "vm"
    vm.save(str(path))
    cfg, delta = path / "value_config.json", path / "delta.safetensors"
    if damage == "config-not-json":
        cfg.write_text(cfg.read_text()[:40])
    elif damage == "config-no-base":
        cfg.write_text(json.dumps({"last_layers": 2}))
    elif damage == "delta-truncated":
        delta.write_bytes(delta.read_bytes()[:100])
    else:
        delta.unlink()
    with pytest.raises(ValueModelError, match="value checkpoint .*(value_config.json|delta.safetensors)"):
        ValueModel.load(str(path), dtype="float32", device="cpu")


def test_unreachable_base_falls_back_to_the_policys_copy(tiny_model_dir, tmp_path):
    """A delta whose recorded base cannot be loaded here (a hub id offline; here a moved path) loads
    onto the policy's own copy of the model when its signature matches."""
    vm = ValueModel.from_base(tiny_model_dir, last_layers=1, dtype="float32", device="cpu")
    vm.base = "/nonexistent/Qwen2.5-Coder-0.5B-Instruct"
    vm.save(str(tmp_path / "vm"))
    with pytest.raises(ModelError):
        ValueModel.load(str(tmp_path / "vm"), dtype="float32", device="cpu")
    again = ValueModel.load(str(tmp_path / "vm"), dtype="float32", device="cpu", fallback_base=tiny_model_dir)
    assert again.base == vm.base and again.values([[5, 6, 7]])[0] == pytest.approx(vm.values([[5, 6, 7]])[0], abs=2e-3)
    other = make_tiny_model(str(tmp_path / "other"), seed=1)
    with pytest.raises(ValueModelError, match="other weights"):
        ValueModel.load(str(tmp_path / "vm"), dtype="float32", device="cpu", fallback_base=other)


def test_base_check_tolerates_dtype_and_warns_on_a_requantized_copy(vm, tiny_model_dir, tmp_path):
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer
    vm.save(str(tmp_path / "vm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same base in bf16: no warning at all
        ValueModel.load(str(tmp_path / "vm"), dtype="bfloat16", device="cpu")
    # The same weights with quantization-sized noise (a re-quantized copy): loads, with a warning.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * p.std() * torch.randn_like(p))
    model.save_pretrained(tmp_path / "requant")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "requant")
    with pytest.warns(UserWarning, match="correlation"):
        ValueModel.load(str(tmp_path / "vm"), base=str(tmp_path / "requant"), dtype="float32", device="cpu")


def test_frozen_bottom_then_top_equals_the_full_forward(vm):
    from transformers import DynamicCache
    ids = torch.randint(5, 300, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    full = vm.model(input_ids=ids, attention_mask=mask).logits[..., 0]
    hidden, _ = vm.bottom_hidden(ids, mask)
    assert torch.allclose(vm.top_logits(hidden, mask)[mask.bool()], full[mask.bool()], atol=1e-5)
    # A response continuing a shared prompt's bottom-layer cache has the same hidden states.
    prompt_h, cache = vm.bottom_hidden(ids[:1, :9], past_key_values=DynamicCache())
    cache.batch_repeat_interleave(3)
    resp_h, _ = vm.bottom_hidden(ids[:, 9:], torch.ones(3, 17, dtype=torch.long), past_key_values=cache)
    whole, _ = vm.bottom_hidden(torch.cat([ids[:1, :9].expand(3, -1), ids[:, 9:]], 1))
    assert torch.allclose(torch.cat([prompt_h.expand(3, -1, -1), resp_h], 1), whole, atol=1e-5)


@pytest.mark.parametrize("last_layers", [0, 1])
def test_training_with_the_frozen_cache_equals_training_without(tiny_model_dir, tmp_path, monkeypatch, last_layers):
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    rows = _rows(12)
    for r in rows:
        r["tokenizer"] = None
        r["policy"] = tiny_model_dir
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {}
    for cache in (True, False):
        torch.manual_seed(0)  # the same head initialisation
        model = ValueModel.from_base(tiny_model_dir, last_layers=last_layers, dtype="float32", device="cpu")
        history = train(model, str(data), str(tmp_path / f"out-{cache}"),
                        TrainConfig(epochs=2, lr=1e-2, batch_size=4, cache=cache), progress=False)
        results[cache] = ([h["loss"] for h in history], model.values([rows[0]["prompt_tokens"] + rows[0]["response_tokens"]]))
    assert results[True][0] == pytest.approx(results[False][0], abs=1e-5)
    assert results[True][1][0] == pytest.approx(results[False][1][0], abs=1e-4)
    assert not (tmp_path / "out-True" / "train_state.pt").exists()  # only an unfinished run keeps it
    # The cache holds one file per prompt group: more data computes only its new groups.
    groups = sorted((tmp_path / "cache" / "frozen").glob("*/*.safetensors"))
    assert len(groups) == 3
    stamps = [g.stat().st_mtime_ns for g in groups]
    extra = dict(rows[0], problem_id="p9", prompt_tokens=[99, 98, 97])
    data.write_text("".join(json.dumps(r) + "\n" for r in rows + [extra]))
    model = ValueModel.from_base(tiny_model_dir, last_layers=last_layers, dtype="float32", device="cpu")
    train(model, str(data), str(tmp_path / "out-more"), TrainConfig(epochs=1, batch_size=4), progress=False)
    assert [g.stat().st_mtime_ns for g in groups] == stamps
    assert len(list((tmp_path / "cache" / "frozen").glob("*/*.safetensors"))) == 4


def test_within_problem_loss_balances_classes_and_ranks_pairs():
    from valuemodel.train import problem_loss
    labels = torch.tensor([[IGNORE, 1.0, 1.0], [IGNORE, 0.0, IGNORE], [IGNORE, 0.0, 0.0]])
    outcome = torch.tensor([1, 0, 0])
    logits = torch.zeros(3, 3)
    # All logits 0: BCE is log 2 for every rollout; each (pass, fail) margin is 0 -> softplus(0) = log 2.
    assert problem_loss(logits, labels, outcome, 0.0).item() == pytest.approx(math.log(2))
    assert problem_loss(logits, labels, outcome, 1.0).item() == pytest.approx(2 * math.log(2))
    # The pair term reads each rollout's last labelled token (row 1: position 1).
    ranked = torch.tensor([[0.0, 0.0, 5.0], [0.0, -5.0, 9.0], [0.0, 0.0, -5.0]])
    assert problem_loss(ranked, labels, outcome, 1.0) < problem_loss(-ranked, labels, outcome, 1.0)


def test_incremental_scoring_equals_full_forward(vm):
    seq = [5 + (i * 13) % 300 for i in range(40)]
    full = vm.values([seq])[0]
    scorer = vm.scorer()
    inc = scorer.extend(seq[:10])
    for t in seq[10:30]:
        inc += scorer.extend([t])
    branch = scorer.fork()
    inc += scorer.extend(seq[30:])
    assert max(abs(a - b) for a, b in zip(full, inc)) < 1e-5
    assert max(abs(a - b) for a, b in zip(full[30:], branch.extend(seq[30:]))) < 1e-5
    # Batched scoring with padding gives each sequence its own values.
    short = seq[:7]
    both = vm.values([seq, short])
    assert max(abs(a - b) for a, b in zip(both[1], vm.values([short])[0])) < 1e-5


def test_final_values_from_shared_prefix_equal_full_scoring(vm):
    prefix = [5 + (i * 7) % 300 for i in range(12)]
    conts = [[9, 10, 11], [40] * 9, [77]]
    shared = vm.final_values(prefix, conts)
    full = [v[-1] for v in vm.values([prefix + c for c in conts])]
    assert max(abs(a - b) for a, b in zip(shared, full)) < 1e-5


def test_loss_ignores_prompt_context_and_padding(vm):
    rows = _rows(2)
    feats = make_features(rows, vm.tokenizer, "match", "x", 2048)
    assert feats[0]["labels"][:4 + 2] == [IGNORE] * 6
    assert set(feats[0]["labels"][6:]) == {float(rows[0]["label"])}
    batch = collate(feats, vm.tokenizer.pad_token_id)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()
    logits = torch.randn(batch["labels"].shape)
    outcome = torch.tensor([f["label"] for f in feats])
    poked = logits.clone()
    poked[batch["labels"] == IGNORE] = 1e4  # anything at masked positions must not matter
    for aggregate in AGGREGATES:
        base = problem_loss(logits, batch["labels"], outcome, 1.0, aggregate)
        assert torch.allclose(problem_loss(poked, batch["labels"], outcome, 1.0, aggregate), base)


# --- metrics on hand-made values ---------------------------------------------------------------

def test_table2_known_answer():
    values = [0.9, 0.8, 0.3, 0.6, 0.1, 0.2]
    labels = [1, 1, 1, 0, 0, 0]
    t = table2(values, labels)
    assert t["share_ge_0.5"] == 0.5 and t["share_lt_0.5"] == 0.5
    assert t["accuracy"] == pytest.approx(4 / 6)
    assert t["p_correct_given_ge"] == pytest.approx(2 / 3)
    assert t["p_incorrect_given_lt"] == pytest.approx(2 / 3)
    assert t["p_ge_given_correct"] == pytest.approx(2 / 3)
    assert t["p_lt_given_incorrect"] == pytest.approx(2 / 3)


def test_random_pass_at_k_exact():
    assert random_pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert random_pass_at_k(4, 1, 3) == pytest.approx(0.75)
    assert random_pass_at_k(6, 2, 3) == pytest.approx(1 - 4 / 20)
    assert random_pass_at_k(3, 0, 2) == 0.0 and random_pass_at_k(3, 2, 2) == 1.0


def test_selection_known_answer_and_ties():
    groups = {"a": [(0.9, 1), (0.5, 0), (0.1, 0), (0.2, 0)],   # value picks the pass
              "b": [(0.9, 0), (0.8, 0), (0.7, 1), (0.1, 0)],   # best-1 misses, best-3 hits
              "c": [(0.5, 1), (0.5, 0)]}                         # a tie: counts as a random pick
    s = selection(groups)
    assert s["pass@1"]["value_picked"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert s["pass@1"]["random_pick"] == pytest.approx((0.25 + 0.25 + 0.5) / 3)
    assert s["pass@1"]["relative_improvement"] == pytest.approx((1.5 / 3) / (1 / 3) - 1)
    assert s["pass@3"]["value_picked"] == pytest.approx((1 + 1 + 1) / 3)
    assert s["pass@3"]["random_pick"] == pytest.approx((0.75 + 0.75 + 1) / 3)


def test_auroc_and_bound():
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert auroc([0.9, 0.3, 0.6, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)
    assert auroc([0.3, 0.4], [1, 1]) is None
    assert auroc_lower_bound(0.75, 2, 2) < 0.75 < 1
    assert auroc_lower_bound(0.9, 200, 200) > 0.85


def test_process_curve_fraction_and_first_beating_chance():
    curve = [0.5] * 2 + [0.5] * 5 + [0.9] * 5  # prompt context 2, then 10 generated tokens
    assert value_at_fraction(curve, 2, 0.1) == 0.5 and value_at_fraction(curve, 2, 0.5) == 0.5
    assert value_at_fraction(curve, 2, 0.6) == 0.9 and value_at_fraction(curve, 2, 1.0) == 0.9
    good = [[0.5] * 5 + [0.9] * 5 for _ in range(30)]
    bad = [[0.5] * 5 + [0.1] * 5 for _ in range(30)]
    p = process_curve([(c, 0, 1) for c in good] + [(c, 0, 0) for c in bad])
    assert p["curve"][4]["auroc"] == 0.5 and p["curve"][5]["auroc"] == 1.0
    assert p["first_fraction_beating_chance"] == 0.6
    assert p["curve"][9]["accuracy"] == 1.0


def test_calibration_known_answer():
    c = calibration([0.05, 0.05, 0.95, 0.95], [0, 1, 1, 1])
    assert c["brier"] == pytest.approx((0.05 ** 2 + 0.95 ** 2 + 0.05 ** 2 + 0.05 ** 2) / 4)
    assert c["ece"] == pytest.approx(0.5 * abs(0.05 - 0.5) + 0.5 * abs(0.95 - 1.0))
    assert [b["count"] for b in c["bins"]] == [2, 2]


def test_within_problem_auroc_ignores_problem_difficulty():
    from valuemodel.metrics import within_problem_auroc
    # Pooled, the easy problem's high values would dominate; within each problem the order is what counts.
    groups = {"easy": [(0.9, 1), (0.8, 0), (0.95, 1)], "hard": [(0.1, 0), (0.2, 1), (0.2, 0)],
              "all-fail": [(0.5, 0), (0.4, 0)]}
    w = within_problem_auroc(groups)
    assert w["problems"] == 2 and w["pairs"] == 2 + 2
    assert w["pairs_auroc"] == pytest.approx((2 + 1.5) / 4)
    assert w["mean_problem_auroc"] == pytest.approx((1.0 + 0.75) / 2)
    assert within_problem_auroc({"x": [(0.3, 1)]})["pairs_auroc"] is None


def _separable_rows(model_dir, tmp_path):
    """10 problems x 4 rollouts in which the passing ones end in token 250 and the failing ones in
    30: a within-problem signal a head on the final hidden state can learn. (rows, train.jsonl)"""
    rows = []
    for p in range(10):
        for r in range(4):
            resp = [20 + (p * 11 + r * 5 + j) % 150 for j in range(5)] + [250 if r % 2 else 30]
            rows.append({"problem_id": f"p{p}", "example_id": f"r{r}", "policy": model_dir, "tokenizer": None,
                         "prompt_tokens": [5 + p, 6, 7], "response_tokens": resp, "label": r % 2, "label_start": 0,
                         "prompt_text": "", "response_text": ""})
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows, data


def test_cross_validation_learns_a_within_problem_signal_on_held_out_problems(tiny_model_dir, tmp_path, monkeypatch):
    from valuemodel.train import cross_validate
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    rows, data = _separable_rows(tiny_model_dir, tmp_path)
    torch.manual_seed(0)
    model = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
    before = {n: p.clone() for n, p in model.model.named_parameters() if p.requires_grad}
    report = cross_validate(model, str(data), TrainConfig(epochs=6, lr=3e-2, batch_size=4), folds=5, progress=False)
    assert report["problems"] == 10 and report["mixed_problems"] == 10 and len(report["curve"]) == 6
    last = report["curve"][-1]
    assert last["within_problem_auroc"] > 0.9 and last["value_pass@1"] > 0.9
    assert last["random_pass@1"] == pytest.approx(0.5) and last["oracle_pass@1"] == 1.0
    # The model is left as it came (every fold starts from the same initial head).
    assert all(torch.equal(p, before[n]) for n, p in model.model.named_parameters() if p.requires_grad)


def test_resume_after_a_kill_mid_epoch_or_while_saving_matches_an_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch):
    import valuemodel.train as train_module
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    rows = _rows(12)
    for r in rows:
        r["tokenizer"], r["policy"] = None, tiny_model_dir
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=4)

    def fresh():
        torch.manual_seed(0)
        return ValueModel.from_base(tiny_model_dir, last_layers=1, dtype="float32", device="cpu")
    whole = train(fresh(), str(data), str(tmp_path / "whole"), cfg, progress=False)

    real_epoch, calls = train_module.run_epoch, []

    def killed_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(train_module, "run_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), str(data), str(tmp_path / "cut"), cfg, progress=False)
    monkeypatch.setattr(train_module, "run_epoch", real_epoch)
    assert (tmp_path / "cut" / "train_state.pt").exists()

    def killed_while_saving(self, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(ValueModel, "save", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), str(data), str(tmp_path / "cut"), cfg, resume=True, progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    assert (tmp_path / "cut" / "train_state.pt").exists()  # the kill while saving left the epoch checkpoint
    resumed = train(fresh(), str(data), str(tmp_path / "cut"), cfg, resume=True, progress=False)
    assert [h["loss"] for h in resumed] == pytest.approx([h["loss"] for h in whole], abs=1e-5)
    assert not (tmp_path / "cut" / "train_state.pt").exists()
    a = ValueModel.load(str(tmp_path / "whole"), dtype="float32", device="cpu")
    b = ValueModel.load(str(tmp_path / "cut"), dtype="float32", device="cpu")
    seq = rows[0]["prompt_tokens"] + rows[0]["response_tokens"]
    assert a.values([seq]) == b.values([seq])


def test_mean_aggregate_final_values_equal_the_mean_logit_of_the_continuation(vm):
    from valuemodel.model import aggregate_values
    prefix = [5 + (i * 7) % 300 for i in range(12)]
    conts = [[9, 10, 11], [40] * 9, [77]]
    vm.aggregate = "mean"
    try:
        shared = vm.final_values(prefix, conts)
        full = [aggregate_values(v[len(prefix):], "mean") for v in vm.values([prefix + c for c in conts])]
        no_prefix = vm.final_values([], conts)
    finally:
        vm.aggregate = "last"
    assert shared == pytest.approx(full, abs=1e-5)
    assert no_prefix == pytest.approx([aggregate_values(v, "mean") for v in vm.values(conts)], abs=1e-6)
    assert aggregate_values([0.5, 0.9], "mean") == pytest.approx(0.75, abs=0.01)  # sigmoid of the mean logit
    assert aggregate_values([0.2, 0.9], "last") == 0.9


def test_probe_fit_ranks_held_out_problems_and_saves_a_head_only_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    from valuemodel.train import cross_validate
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    rows, data = _separable_rows(tiny_model_dir, tmp_path)
    cfg = TrainConfig(epochs=0, probe_l2=0.01, aggregate="last")
    report = cross_validate(ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu"),
                            str(data), cfg, folds=5, progress=False)
    assert [c["epoch"] for c in report["curve"]] == [0] and report["curve"][0]["within_problem_auroc"] > 0.9
    vm = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
    assert train(vm, str(data), str(tmp_path / "probe"), cfg, progress=False) == []
    loaded = ValueModel.load(str(tmp_path / "probe"), dtype="float32", device="cpu")
    good, bad = (loaded.values([rows[i]["prompt_tokens"] + rows[i]["response_tokens"]])[0][-1] for i in (1, 0))
    assert good > bad


def test_cv_extra_rows_train_every_fold_and_are_never_tested(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """--extra-data (e.g. rollout trees): the test rows stay the data's, and the extra rows do train.
    Extra problems whose log-prob signal is inverted outnumber the data's, so the held-out ranking
    turns below chance; rows of a problem the data has only on one side join only the training."""
    from valuemodel.train import cross_validate
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))

    def rows(problems, sign, labels=lambda r: r % 2):
        return [{"problem_id": f"p{p}", "example_id": f"r{r}", "policy": tiny_model_dir, "tokenizer": None,
                 "prompt_tokens": [5 + p, 6, 7], "response_tokens": [20 + (p * 7 + r * 3 + j) % 150 for j in range(6)],
                 "label": labels(r), "label_start": 0, "prompt_text": "", "response_text": "",
                 "mean_logprob": 0.2 * (p % 10) - 1.5 + sign * (0.3 if labels(r) else 0.0) + 0.01 * r}
                for p in problems for r in range(4)]
    data, extra = tmp_path / "data.jsonl", tmp_path / "extra.jsonl"
    # 10 mixed problems with the signal, and p10 with passing rows only (mixed only with its extra rows).
    write = lambda path, part: path.write_text("".join(json.dumps(r) + "\n" for r in part))
    write(data, rows(range(10), 1) + rows([10], 1, labels=lambda r: 1))
    write(extra, rows(range(10, 50), -1))
    cfg = TrainConfig(epochs=0, probe_l2=0.3, aggregate="mean", logprob_feature=True, mixed_only=True)
    vm = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
    alone = cross_validate(vm, str(data), cfg, folds=5, progress=False)
    both = cross_validate(vm, str(data), cfg, folds=5, progress=False, extra_path=str(extra))
    assert alone["problems"] == both["problems"] == 10
    assert (alone["mixed_problems"], alone["pairs"]) == (both["mixed_problems"], both["pairs"]) == (10, 40)
    assert alone["curve"][0]["within_problem_auroc"] > 0.9 > 0.1 > both["curve"][0]["within_problem_auroc"]
    # The command line: --extra-data, and --seeds repeating the CV over fold assignments 0 and 1.
    from valuemodel.cli import main as valuemodel_main
    valuemodel_main(["cv", "--data", str(data), "--extra-data", str(extra), "--base", tiny_model_dir,
                     "--last-layers", "0", "--probe-l2", "0.3", "--aggregate", "mean", "--epochs", "0",
                     "--logprob-feature", "--mixed-only", "--seeds", "2", "--dtype", "float32", "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1] and len(out["per_seed"]) == 2 and out["per_seed"][0] == both["curve"]
    assert out["mean_over_seeds"]["within_problem_auroc"][0]["mean"] < 0.1


def test_a_critic_cut_at_n_layers_trains_saves_and_loads_on_the_full_base(tiny_model_dir, tmp_path, monkeypatch):
    """--trunk-layers N: the head reads the hidden state after layer N (through the final norm); the
    delta names the whole base (its signature is the full model's) and loads back cut at N."""
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    rows, data = _separable_rows(tiny_model_dir, tmp_path)
    vm = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu", trunk_layers=2)
    full = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
    assert len(vm.model.base_model.layers) == 2 and vm.signature == full.signature
    ids = torch.tensor([rows[0]["prompt_tokens"] + rows[0]["response_tokens"]])
    with torch.no_grad():
        after_two = full.model.base_model(input_ids=ids, output_hidden_states=True).hidden_states[2]
        want = torch.sigmoid(vm.model(input_ids=ids).logits[0, :, 0])
        assert torch.allclose(vm._head(full.model.base_model.norm(after_two))[0], want, atol=1e-6)
    train(vm, str(data), str(tmp_path / "cut"), TrainConfig(epochs=0, probe_l2=0.01, aggregate="last"), progress=False)
    loaded = ValueModel.load(str(tmp_path / "cut"), dtype="float32", device="cpu")
    assert loaded.trunk_layers == 2 and len(loaded.model.base_model.layers) == 2
    assert loaded.values([ids[0].tolist()])[0] == pytest.approx(vm.values([ids[0].tolist()])[0], abs=0.02)  # bf16 delta
    with pytest.raises(ValueError, match="trunk_layers"):
        ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu", trunk_layers=9)


def test_a_probe_with_the_policy_log_prob_learns_its_weight_and_every_reader_applies_it(tiny_model_dir, tmp_path, monkeypatch):
    """--logprob-feature: rows whose only within-problem signal is the policy's mean log-prob (their
    tokens say nothing): the probe puts a positive weight on it, the checkpoint records it, and
    final_values, program_value and best_of_k's ranking read it (and refuse to guess without it)."""
    from engine.best_of_k import rank_candidates
    from engine.result import Candidate
    from valuemodel.model import ValueModelError, aggregate_values
    from valuemodel.train import cross_validate
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    rows = []
    for p in range(10):
        for r in range(4):
            rows.append({"problem_id": f"p{p}", "example_id": f"r{r}", "policy": tiny_model_dir, "tokenizer": None,
                         "prompt_tokens": [5 + p, 6, 7], "response_tokens": [20 + (p * 7 + r * 3 + j) % 150 for j in range(6)],
                         "label": r % 2, "label_start": 0, "prompt_text": "", "response_text": "",
                         # Higher for the passing rows of a problem, but not across problems: finite weights.
                         "mean_logprob": 0.2 * p - 1.5 + (0.3 if r % 2 else 0.0) + 0.01 * r})
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(epochs=0, probe_l2=0.3, aggregate="mean", logprob_feature=True)
    report = cross_validate(ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu"),
                            str(data), cfg, folds=5, progress=False)
    assert report["curve"][0]["within_problem_auroc"] > 0.9
    train(ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu"), str(data),
          str(tmp_path / "lp"), cfg, progress=False)
    vm = ValueModel.load(str(tmp_path / "lp"), dtype="float32", device="cpu")
    assert vm.logprob_weight > 0 and vm.aggregate == "mean"
    prompt, conts, lps = rows[0]["prompt_tokens"], [rows[i]["response_tokens"] for i in (0, 1)], [-1.5, -1.2]
    finals = vm.final_values(prompt, conts, lps)
    per_token = [v[len(prompt):] for v in vm.values([prompt + c for c in conts])]
    assert finals == pytest.approx([vm.program_value(v, lp) for v, lp in zip(per_token, lps)], abs=1e-5)
    assert finals == pytest.approx([aggregate_values(v, "mean", lp, vm.logprob_weight) for v, lp in zip(per_token, lps)], abs=1e-5)
    assert finals[1] > finals[0]
    ranked = rank_candidates(vm, prompt, [Candidate("a", "", conts[0], None, "eos", logprobs=[-1.5] * 6),
                                          Candidate("b", "", conts[1], None, "eos", mean_logprob=-1.2)])
    assert [c.program for c in ranked] == ["b", "a"] and [c.value for c in ranked] == pytest.approx(finals[::-1], abs=1e-6)
    with pytest.raises(ValueModelError, match="log-prob"):
        vm.final_values(prompt, conts)
    with pytest.raises(ValueError, match="--epochs 0"):
        train(ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu"), str(data),
              str(tmp_path / "lp2"), TrainConfig(epochs=1, probe_l2=0.3, aggregate="mean", logprob_feature=True),
              progress=False)


def test_a_new_head_does_not_depend_on_the_global_rng(tiny_model_dir):
    from valuemodel.model import head_module
    heads = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # what loading a model (a GGUF's first conversion) may have drawn
        vm = ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
        heads.append(head_module(vm.model)[1].weight.detach().clone())
    assert torch.equal(heads[0], heads[1]) and heads[0].abs().sum() > 0


def test_features_recorded_while_sampling_train_and_rank_with_no_second_forward(tiny_model_dir, tiny_policy, tmp_path,
                                                                                monkeypatch):
    """sample_many(features=True) records each completion's mean final hidden state: the same as a
    full forward's over its tokens. A head-only mean probe trained from them equals the one trained
    through the frozen forward pass, with 0 feature forward tokens, and ranks from them exactly as
    final_values does; features of another model are never read."""
    from engine.best_of_k import rank_candidates
    from engine.result import Candidate
    from lm.features import encode_features, feature_source, model_signature
    from lm.sampling import SamplingParams
    from valuemodel.train import cross_validate
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "cache"))
    prompts = [tiny_policy.prompt_tokens([{"role": "user", "content": f"Task {i}: add {i} and {i + 1}."}]) for i in range(6)]
    requests = [(p, 4, SamplingParams(max_new_tokens=10, temperature=1.0, seed=i)) for i, p in enumerate(prompts)]
    done = dict(tiny_policy.sample_many(requests, max_rows=12, features=True))
    model = tiny_policy.model
    for i, completions in done.items():
        for c in completions:
            with torch.inference_mode():
                states = model(input_ids=torch.tensor([prompts[i] + c.tokens]), output_hidden_states=True).hidden_states[-1]
            assert torch.allclose(c.features, states[0, len(prompts[i]):].mean(0), atol=1e-4)
    source = feature_source(tiny_policy)
    rows = [{"problem_id": f"p{i}", "example_id": f"s{r}", "policy": tiny_model_dir, "tokenizer": vocab_fingerprint(tiny_policy.tokenizer),
             "prompt_tokens": prompts[i], "response_tokens": c.tokens, "label": r % 2, "label_start": 0,
             "prompt_text": "", "response_text": "", "mean_logprob": sum(c.logprobs) / len(c.logprobs),
             "features": encode_features(c.features), "feature_source": source}
            for i, completions in sorted(done.items()) for r, c in enumerate(completions)]
    recorded, plain = tmp_path / "recorded.jsonl", tmp_path / "plain.jsonl"
    recorded.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("features", "feature_source")}) + "\n"
                         for r in rows))
    cfg = TrainConfig(epochs=0, probe_l2=0.3, aggregate="mean", logprob_feature=True, mixed_only=True)

    def critic():
        return ValueModel.from_base(tiny_model_dir, last_layers=0, dtype="float32", device="cpu")
    with_features = cross_validate(critic(), str(recorded), cfg, folds=3, progress=False)
    without = cross_validate(critic(), str(plain), cfg, folds=3, progress=False)
    assert with_features["feature_source"] == "recorded" and with_features["feature_forward_tokens"] == 0
    assert without["feature_source"] == "forward" and without["feature_forward_tokens"] > 0
    assert with_features["curve"][0]["within_problem_auroc"] == pytest.approx(without["curve"][0]["within_problem_auroc"], abs=0.02)
    half = tmp_path / "half.jsonl"  # a mix of sources (e.g. new samples with features, old ones without)
    half.write_text("".join(json.dumps(r if i % 2 else {k: v for k, v in r.items() if k != "features"}) + "\n"
                            for i, r in enumerate(rows)))
    monkeypatch.setenv("FORKCODE_CACHE", str(tmp_path / "fresh-cache"))  # nothing cached from the runs above
    mixed = cross_validate(critic(), str(half), cfg, folds=3, progress=False)
    assert mixed["feature_source"] == "recorded+forward"
    assert 0 < mixed["feature_forward_tokens"] < without["feature_forward_tokens"]
    assert mixed["curve"][0]["within_problem_auroc"] == pytest.approx(without["curve"][0]["within_problem_auroc"], abs=0.02)
    train(critic(), str(recorded), str(tmp_path / "rec"), cfg, progress=False)
    train(critic(), str(plain), str(tmp_path / "fwd"), cfg, progress=False)
    a = ValueModel.load(str(tmp_path / "rec"), dtype="float32", device="cpu")
    b = ValueModel.load(str(tmp_path / "fwd"), dtype="float32", device="cpu")
    saved = json.loads((tmp_path / "rec" / "value_config.json").read_text())["train"]
    assert saved["feature_source"] == "recorded" and saved["feature_forward_tokens"] == 0
    assert a.logprob_weight == pytest.approx(b.logprob_weight, rel=1e-2)
    completions = done[0]
    lps = [sum(c.logprobs) / len(c.logprobs) for c in completions]
    from_pass = a.final_values(prompts[0], [c.tokens for c in completions], lps)
    tokens_before = a.tokens_scored
    ranked = rank_candidates(a, prompts[0], [Candidate(f"p{j}", "", c.tokens, None, "eos", logprobs=c.logprobs,
                                                       features=c.features) for j, c in enumerate(completions)],
                             feature_source=source)
    assert a.tokens_scored == tokens_before  # no forward pass
    assert sorted(c.value for c in ranked) == pytest.approx(sorted(from_pass), abs=1e-5)
    other = {**source, "signature": model_signature(*_other_model(tmp_path))}
    assert a.reads_features(source) and not a.reads_features(other) and not a.reads_features(None)
    rank_candidates(a, prompts[0], [Candidate("x", "", completions[0].tokens, None, "eos", logprobs=completions[0].logprobs,
                                              features=completions[0].features)], feature_source=other)
    assert a.tokens_scored > tokens_before  # another model's features: scored by a forward pass instead


def _other_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = make_tiny_model(str(tmp_path / "other"), seed=1)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _free_port():
    """A port no process listens on now: each launch's processes meet there (torchrun's default port
    can still be held by the previous launch's)."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _training_file(tiny_model_dir, tmp_path):
    """16 problems' training rows on the tiny model in a file, and the environment its training
    subprocesses run in (one thread each, a cache of their own)."""
    rows = _rows(16)
    for r in rows:
        r["tokenizer"], r["policy"] = None, tiny_model_dir
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, dict(os.environ, FORKCODE_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")


def _two_processes():
    """accelerate's --multi_gpu launcher for valuemodel.cli in 2 processes (torch.distributed.run); on a
    machine without GPUs each one's Accelerator(cpu=True) joins them over gloo (MULTI_CPU)."""
    import sys
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--main_process_port", str(_free_port()), "--mixed_precision", "no", "--dynamo_backend", "no",
            "-m", "valuemodel.cli"]


def _launch(cmd, env):
    """Run a command; once more if a process aborted in gloo's threads ("terminate called without an
    active exception": on this 2-core machine about one 2-process CPU launch in five, at start-up or
    in the first steps, whatever the training does). Any other failure, and any wrong number, fails."""
    import subprocess
    for _ in range(2):
        if "--main_process_port" in cmd:  # a fresh port each time: the last one may still be held
            cmd[cmd.index("--main_process_port") + 1] = str(_free_port())
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode == 0 or "terminate called without an active exception" not in done.stderr:
            break
    return done


def test_fsdp_training_on_two_processes_matches_one_and_resumes(tiny_model_dir, tmp_path):
    """--fsdp under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU): the trained
    layers are sharded across the processes (FSDP2), the head and frozen bottom stay whole; the
    losses and weights are one process's (with gradient checkpointing too), and a run stopped
    after one epoch resumes from its gathered state to the same end."""
    import subprocess
    import sys

    from safetensors.torch import load_file
    data, env = _training_file(tiny_model_dir, tmp_path)
    args = ["train", "--data", str(data), "--base", tiny_model_dir, "--last-layers", "2", "--lr", "1e-2",
            "--batch-size", "2", "--problems-per-step", "3", "--dtype", "float32", "--device", "cpu", "--json"]
    launch = _two_processes()

    def run(cmd, out, epochs, *more, ok=True):
        done = _launch([*cmd, *args, "--epochs", str(epochs), "--out", str(tmp_path / out), *more], env)
        assert (done.returncode == 0) == ok, done.stderr[-3000:]
        if "--fsdp" in more:  # each process holds half of the trained layers' parameters
            shards = re.findall(r"2 trained layers sharded \(FSDP2\): ([\d,]+) of their ([\d,]+)", done.stderr)
            assert len(shards) == 2 and all(2 * int(a.replace(",", "")) == int(b.replace(",", "")) for a, b in shards)
        return [h["loss"] for h in json.loads(done.stdout.strip().splitlines()[-1])["history"]] if ok else None
    one = run([sys.executable, "-m", "valuemodel.cli"], "one", 2)
    two = run(launch, "two", 2, "--fsdp", "--gradient-checkpointing")  # recomputed activations: the same math
    assert len(one) == 2 and one == pytest.approx(two, abs=1e-5)
    # Stopped while saving after the first epoch (a directory where the weights go), then resumed.
    (tmp_path / "resumed" / "delta.safetensors").mkdir(parents=True)
    run(launch, "resumed", 1, "--fsdp", ok=False)
    assert (tmp_path / "resumed" / "train_state.pt").exists()
    (tmp_path / "resumed" / "delta.safetensors").rmdir()
    assert run(launch, "resumed", 2, "--fsdp", "--resume") == pytest.approx(two, abs=1e-5)
    a, b, c = (load_file(str(tmp_path / name / "delta.safetensors")) for name in ("one", "two", "resumed"))
    assert a.keys() == b.keys() == c.keys() and any(".layers." in k for k in a)
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=2e-2), name  # bf16 on disk
        assert torch.allclose(b[name].float(), c[name].float(), atol=2e-2), name
    one_process = subprocess.run([sys.executable, "-m", "valuemodel.cli", *args, "--epochs", "1", "--fsdp",
                                  "--out", str(tmp_path / "bad")], capture_output=True, text=True, env=env)
    assert one_process.returncode != 0 and "--fsdp" in one_process.stderr.strip().splitlines()[-1]


def test_training_under_accelerate_on_two_processes_matches_one(tiny_model_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo): each process computes half of every step's
    problems and the gradients are summed across them, so the losses and the trained weights are
    one process's, up to float rounding."""
    import subprocess
    import sys

    from safetensors.torch import load_file
    data, env = _training_file(tiny_model_dir, tmp_path)
    args = ["train", "--data", str(data), "--base", tiny_model_dir, "--last-layers", "1", "--epochs", "2",
            "--lr", "1e-2", "--batch-size", "2", "--problems-per-step", "4", "--dtype", "float32", "--device", "cpu", "--json"]
    one = subprocess.run([sys.executable, "-m", "valuemodel.cli", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _launch([*_two_processes(), *args, "--out", str(tmp_path / "two")], env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "MULTI_CPU" in two.stderr  # two processes ran (each logs its rank)
    losses = [[h["loss"] for h in json.loads(r.stdout.strip().splitlines()[-1])["history"]] for r in (one, two)]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], abs=1e-5)
    a, b = (load_file(str(tmp_path / name / "delta.safetensors")) for name in ("one", "two"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=2e-2), name  # bf16 on disk
