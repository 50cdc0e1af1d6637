"""The fields readers rely on in datagen's row files (trees, bench samples it exports, export
rows): the storage itself is common.store."""

TREES = "trees.jsonl"
NUMBER = (int, float)

# The fields readers rely on, per kind of row: a row without them (or with another type) is a bad
# line like one that is not JSON. A dict value is a nested record, a one-element list a list of them.
TREE_FIELDS = {"problem_id": str, "prompt_tokens": list, "prompt_text": str, "settings": dict,
               "trunk": {"tokens": list, "verdict": str}, "forks": list,
               "rollouts": [{"id": int, "tokens": list, "verdict": str, "prefix_len": int, "fork": int}],
               "stats": {"generated_tokens": int, "forward_tokens": int}}
SAMPLE_FIELDS = {"problem_id": str, "strategy": str, "policy": str, "prompt_tokens": list, "prompt_text": str,
                 "stats": {"policy_tokens": int, "value_tokens": int, "wall_s": {"total": NUMBER}},
                 "candidates": [{"program": str, "text": str, "tokens": list, "finish": str, "passed": (bool, int),
                                 "verdict": str, "weight": int, "mean_logprob": NUMBER}]}
EXAMPLE_FIELDS = {"problem_id": str, "example_id": str, "label": int, "prompt_tokens": [int], "response_tokens": [int],
                  "label_start": int}
