"""lm: the model layer -- the policy LM behind every stage that generates or reads tokens.

`lm.sampling`: the `Policy` interface, SamplingParams, completions and choosing tokens from logits;
`lm.policy`: the transformers backend (`HFPolicy`: prefix KV-cache reuse, batched sampling) and
`load_policy`; `lm.models`: model loading by hub id, directory or `.gguf` (de-quantized once into a
cached safetensors copy), device and dtype; `lm.vllm_policy`: the vLLM backend; `lm.prompts`: prompts and code extraction;
`lm.options`: the model options of every command that loads a policy (no torch import, so --help
stays light).

May import only common and judge (layers, bottom to top: common, judge, lm, datagen, valuemodel,
engine, bench). Importing the package itself loads nothing heavy: torch comes with lm.models, lm.sampling
and lm.policy.
"""
