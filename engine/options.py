"""The command-line options of `decode` that `bench quality` shares: models, sampling, search, judging."""

from common.cli import add_config_options
from engine.result import DecodeConfig
from judge.sandbox import JUDGE_TIMEOUT
from lm.options import DEFAULT_BATCH_ROWS, add_model_options


def add_model_and_search_options(parser):
    """The model, sampling and search options shared by `decode` and `bench quality`."""
    parser.add_argument("--value", default=None, help="value checkpoint directory (default: the shipped one, if any)")
    add_config_options(parser, DecodeConfig, exclude=("strategy", "dedupe"))
    parser.add_argument("--timeout", type=float, default=JUDGE_TIMEOUT, help="judge seconds per test")
    parser.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS,
                        help="rows in one batch: sample/best_of_k samples, or beam/tree searches of several problems "
                             "side by side (default %(default)s)")
    add_model_options(parser)
