"""One line for a `bench quality --strategies sample` run: problems, the samples' tokens, the rows'
wall time, tokens/s and the samples' pass rate. Usage: summarize_run.py OUT_DIR [LABEL [FIRST LAST]]
(FIRST, LAST: a slice of the stored rows, 0-based, LAST excluded)."""
import json
import sys

out = sys.argv[1]
label = sys.argv[2] if len(sys.argv) > 2 else out
rows = [json.loads(line) for line in open(out + "/runs/sample.jsonl")]
if len(sys.argv) > 4:
    rows = rows[int(sys.argv[3]):int(sys.argv[4])]
tokens = sum(r["stats"]["policy_tokens"] for r in rows)
wall = sum(r["stats"]["wall_s"]["total"] for r in rows)
passed = sum(c["passed"] for r in rows for c in r["candidates"]) / sum(len(r["candidates"]) for r in rows)
print(label, len(rows), "problems", tokens, "tokens", round(wall, 1), "s", round(tokens / wall, 1), "tok/s", "pass", round(passed, 4))
