"""bench.layer_probe, the research tool behind the critic's feature choices: what it extracts must be
what the critic would read."""

import json

import pytest
import torch

from bench import layer_probe


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
