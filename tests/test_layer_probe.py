"""research.layer_probe, the research tool behind the critic's feature choices: what it extracts must be
what the critic would read."""

import json

import pytest
import torch

from research import layer_probe


def _rows(model_dir):
    return [{"problem_id": f"p{p}", "example_id": f"r{r}", "policy": model_dir, "tokenizer": None,
             "prompt_tokens": [5 + p, 6, 7], "response_tokens": [20 + (p * 7 + r * 3 + j) % 150 for j in range(4 + r)],
             "label": r % 2, "label_start": 0, "prompt_text": "", "response_text": "", "mean_logprob": -0.1 * r}
            for p in range(6) for r in range(4)]


def test_verify_extract_keeps_the_program_features_and_reads_the_answer_state(tiny_model_dir, tmp_path, capsys):
    """--verify appends a question after each program: the program's pooled features must not change
    (causal attention, padding after the suffix), and the answer state must be a full forward's
    last-position state over prompt + program + question, row by row despite the batch's padding."""
    rows = _rows(tiny_model_dir)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain, verify = str(tmp_path / "plain.pt"), str(tmp_path / "verify.pt")
    assert layer_probe.main(["extract", "--base", tiny_model_dir, "--data", str(data), "--out", plain]) == 0
    assert layer_probe.main(["extract", "--base", tiny_model_dir, "--data", str(data), "--out", verify, "--verify"]) == 0
    a, b = (torch.load(p, weights_only=False)["rows"] for p in (plain, verify))
    assert set(a) == set(b) == {str(i) for i in range(len(rows))}
    for k in a:
        assert "verify" not in a[k]
        torch.testing.assert_close(a[k]["mean"].float(), b[k]["mean"].float(), atol=2e-2, rtol=2e-2)
        assert a[k]["logp"] == pytest.approx(b[k]["logp"], abs=1e-3)

    from valuemodel.model import ValueModel
    vm = ValueModel.from_base(tiny_model_dir, last_layers=0)
    suffix = vm.tokenizer(layer_probe.VERIFY_SUFFIX, add_special_tokens=False)["input_ids"]
    assert suffix
    trunk = vm.model.base_model
    for i in (0, 3, 5):  # rows of different lengths in one padded batch
        ids = rows[i]["prompt_tokens"] + rows[i]["response_tokens"] + suffix
        with torch.inference_mode():
            last = trunk(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].float()
        torch.testing.assert_close(b[str(i)]["verify"][-1].float(), last, atol=3e-2, rtol=3e-2)
        assert isinstance(b[str(i)]["verify_logit"], float)

    capsys.readouterr()
    assert layer_probe.main(["cv", "--features", verify, "--pool", "mean+verify", "--add", "logp,verify_logit",
                             "--layers", "1", "--seeds", "2"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["pool"] == "mean+verify" and set(row["cv_seeds"]) == {"within_auroc", "gap_closed"}


def test_copied_from_prompt_marks_only_verbatim_runs_of_n_prompt_tokens():
    from research.layer_probe import copied_from_prompt
    prompt = [1, 2, 3, 4, 5, 6]
    assert copied_from_prompt(prompt, [9, 2, 3, 4, 8, 3, 4, 5], n=3) == [False, True, True, True, False, True, True, True]
    assert copied_from_prompt(prompt, [2, 3, 9, 4, 5], n=3) == [False] * 5  # runs shorter than n are the program's own
    assert copied_from_prompt(prompt, [1, 2], n=3) == [False, False]


def test_own_extract_pools_the_last_layer_over_the_uncopied_tokens(tiny_model_dir, tmp_path):
    """--own N: each layer's mean over the response tokens outside verbatim N-token runs of the
    prompt, checked against a full forward's final-normed last layer."""
    rows = _rows(tiny_model_dir)
    for r in rows[::3]:  # some responses start by repeating the prompt's last two tokens
        r["response_tokens"] = [6, 7] + r["response_tokens"]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(tmp_path / "own.pt")
    assert layer_probe.main(["extract", "--base", tiny_model_dir, "--data", str(data), "--out", out, "--own", "2"]) == 0
    got = torch.load(out, weights_only=False)["rows"]

    from valuemodel.model import ValueModel
    trunk = ValueModel.from_base(tiny_model_dir, last_layers=0).model.base_model
    for i in (0, 1, 3):
        prompt, response = rows[i]["prompt_tokens"], rows[i]["response_tokens"]
        with torch.inference_mode():
            states = trunk(input_ids=torch.tensor([prompt + response])).last_hidden_state[0, len(prompt):].float()
        own = torch.tensor([not c for c in layer_probe.copied_from_prompt(prompt, response, 2)])
        assert bool(own.all()) == (i % 3 != 0)
        torch.testing.assert_close(got[str(i)]["own"][-1].float(), states[own].mean(0), atol=3e-2, rtol=3e-2)
        torch.testing.assert_close(got[str(i)]["mean"][-1].float(), states.mean(0), atol=3e-2, rtol=3e-2)
