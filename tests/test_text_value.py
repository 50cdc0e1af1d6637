"""A critic with another vocabulary than the policy's (valuemodel.text_value): values through the
policy's text equal a whole-text forward of the critic after every appended chunk."""

import random

import pytest
from conftest import make_tiny_model

TEXTS = [
    "```python\ndef two_sum(nums, target):\n    seen = {}\n    for i, x in enumerate(nums):\n"
    "        if target - x in seen:\n            return [seen[target - x], i]\n        seen[x] = i\n```",
    "```python\nimport sys\n\ndef main():\n    n = int(input())\n    values  =  list(map(int, input().split()))\n"
    "    print(sum(values) % 1000000007)  # é, ü and 🚀 are several bytes each\n\n\nmain()\n```",
    "x = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'                                   \n\t\tyield x",
]


@pytest.fixture(scope="module")
def critic_dir(tmp_path_factory):
    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-critic")), seed=1, layers=2, vocab=300)


@pytest.fixture(scope="module")
def text_value(tiny_policy, critic_dir):
    from valuemodel.model import ValueModel
    from valuemodel.text_value import TextValue
    vm = ValueModel.from_base(critic_dir, last_layers=0, dtype="float32", device="cpu")
    assert len(vm.tokenizer) != len(tiny_policy.tokenizer)
    return TextValue(vm, tiny_policy.decode, tiny_policy.tokenizer.decode)


def _whole(tv, prompt_tokens, response_text):
    """The critic's values over prompt + response, each tokenized on its own, in one forward."""
    prompt = tv.prompt_ids(prompt_tokens)
    ids, spans = tv.encode(response_text)
    return prompt, ids, spans, tv.vm.values([prompt + ids])[0]


@pytest.mark.parametrize("seed", range(3))
def test_incremental_values_equal_a_whole_text_forward_after_every_chunk(tiny_policy, text_value, seed):
    from valuemodel.text_value import per_policy_token
    rng = random.Random(seed)
    prompt_tokens = tiny_policy.prompt_tokens([{"role": "user", "content": "Add two numbers."}])
    for text in TEXTS:
        tokens = tiny_policy.tokenizer(text, add_special_tokens=False)["input_ids"]
        scorer = text_value.scorer()
        first = scorer.extend(prompt_tokens)
        assert len(first) == len(prompt_tokens)
        done, got = 0, []
        while done < len(tokens):
            step = rng.choice([1, 1, 1, 2, 3, 7])
            chunk = tokens[done:done + step]
            done += len(chunk)
            got += scorer.extend(chunk)
            so_far = tiny_policy.decode(tokens[:done])
            prompt, ids, spans, whole = _whole(text_value, prompt_tokens, so_far)
            assert scorer.ids == ids and scorer.spans == spans
            assert scorer.token_values == pytest.approx(whole[len(prompt):], abs=1e-5)
            ends = [len(tiny_policy.decode(tokens[:i + 1])) for i in range(done - len(chunk), done)]
            expected = per_policy_token(whole[len(prompt):], [s for s, _ in spans], ends, whole[len(prompt) - 1])
            assert got[-len(chunk):] == pytest.approx(expected, abs=1e-5)
        assert len(got) == len(tokens)


def test_fork_is_independent(tiny_policy, text_value):
    prompt_tokens = tiny_policy.prompt_tokens([{"role": "user", "content": "Print one."}])
    a = text_value.scorer()
    a.extend(prompt_tokens)
    a.extend(tiny_policy.tokenizer("```python\nprint(", add_special_tokens=False)["input_ids"])
    b = a.fork()
    tail_a = tiny_policy.tokenizer("1)\n```", add_special_tokens=False)["input_ids"]
    tail_b = tiny_policy.tokenizer("'one')\n```", add_special_tokens=False)["input_ids"]
    va, vb = a.extend(tail_a), b.extend(tail_b)
    for scorer, tail, got in ((a, tail_a, va), (b, tail_b, vb)):
        fresh = text_value.scorer()
        fresh.extend(prompt_tokens)
        fresh.extend(scorer.tokens[:-len(tail)])
        assert fresh.extend(tail) == pytest.approx(got, abs=1e-5)


def test_final_values_read_the_text_as_training_does(tiny_policy, text_value):
    from valuemodel.model import aggregate_values
    prompt_tokens = tiny_policy.prompt_tokens([{"role": "user", "content": "Add two numbers."}])
    conts = [tiny_policy.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:2]]
    for how in ("last", "mean"):
        text_value.vm.aggregate = how
        finals = text_value.final_values(prompt_tokens, conts)
        for cont, final in zip(conts, finals):
            prompt, _, _, whole = _whole(text_value, prompt_tokens, tiny_policy.decode(cont))
            assert final == pytest.approx(aggregate_values(whole[len(prompt):], how), abs=1e-5)
    text_value.vm.aggregate = "last"


def test_labels_of_another_tokenizer_cover_exactly_the_rollouts_own_text(tiny_policy, critic_dir, tmp_path):
    """Rollout trees of the policy, trained on by a critic with another vocabulary: each row's
    labelled critic tokens are exactly those that begin inside the rollout's own characters (after
    the fork's prefix), and training on those rows runs."""
    import json
    import os

    from datagen.export import to_rows
    from datagen.tree import TreeConfig, grow_tree, judge_tree
    from judge import load_dataset
    from lm.models import vocab_fingerprint
    from valuemodel.model import ValueModel
    from valuemodel.train import IGNORE, TrainConfig, make_features, train
    apps = os.path.join(os.path.dirname(__file__), "fixtures", "apps", "train")
    cfg = TreeConfig(forks=3, per_fork=2, trunk="reference", max_new_tokens=16, timeout=2)
    rows = []
    for problem in load_dataset(apps):
        rows += to_rows(judge_tree(grow_tree(tiny_policy, problem, cfg), problem, cfg))
    forked = [r for r in rows if r["label_start"] > 0]
    assert forked and all(r["response_text"][:r["label_start_char"]] == tiny_policy.decode(r["response_tokens"][:r["label_start"]])
                          for r in forked)
    vm = ValueModel.from_base(critic_dir, last_layers=1, dtype="float32", device="cpu")
    feats = make_features(rows, vm.tokenizer, vocab_fingerprint(vm.tokenizer), vm.base, 4096)
    assert len(feats) == len(rows)
    for row, f in zip(rows, feats):
        spans = vm.tokenizer(row["response_text"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        labels = f["labels"][f["n_prompt"]:]
        assert len(labels) == len(spans)
        own = [start >= row["label_start_char"] for start, _ in spans]
        assert [x != IGNORE for x in labels] == own
        assert {x for x in labels if x != IGNORE} <= {float(row["label"])}
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    history = train(vm, str(data), str(tmp_path / "critic"), TrainConfig(epochs=1, cache=False), progress=False)
    assert len(history) == 1 and history[0]["loss"] > 0


def test_whole_sequence_values_map_the_critics_values_to_policy_tokens(tiny_policy, text_value):
    from valuemodel.text_value import per_policy_token
    seqs = [tiny_policy.tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:2]] + [[]]
    got = text_value.values(seqs)
    assert [len(g) for g in got] == [len(s) for s in seqs]
    for seq, values in zip(seqs[:2], got):
        ids, spans = text_value.encode(tiny_policy.decode(seq))
        whole = text_value.vm.values([ids])[0]
        ends = [len(tiny_policy.decode(seq[:i + 1])) for i in range(len(seq))]
        assert values == pytest.approx(per_policy_token(whole, [s for s, _ in spans], ends, whole[0]), abs=1e-5)
