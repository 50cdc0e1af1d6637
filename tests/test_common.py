"""The shared toolkit (common/): the one-line error for the project's own errors only, and atomic writes."""

import argparse
import os
import re

import pytest

from common.cli import ConfigError, ForkcodeError, dispatch
from common.store import StoreError, atomic_path, write_text_atomic
from judge import ProblemError, SandboxError
from lm.models import ModelError
from valuemodel.model import ValueModelError


def _run(handler, **kwargs):
    dispatch("prog", {"go": handler}, argparse.Namespace(command="go"), **kwargs)


def test_dispatch_makes_a_project_error_one_line_and_leaves_a_bug_its_traceback(capsys):
    def bad_input(args):
        raise ConfigError("--forks must be >= 0")

    with pytest.raises(SystemExit) as exc:
        _run(bad_input)
    assert exc.value.code == 2 and capsys.readouterr().err == "prog: error: --forks must be >= 0\n"

    def bug(args):
        raise ValueError("a bug deep inside, e.g. from torch")

    with pytest.raises(ValueError, match="a bug deep inside"):  # not turned into a one-line error
        _run(bug)

    def interrupted(args):
        raise KeyboardInterrupt

    with pytest.raises(SystemExit):
        _run(interrupted, interrupted="interrupted; rerun the same command to resume")
    assert capsys.readouterr().err == "prog: error: interrupted; rerun the same command to resume\n"


def test_every_expected_error_is_a_forkcode_error_and_keeps_its_old_base():
    for error, old in ((ProblemError, ValueError), (StoreError, ValueError), (ConfigError, ValueError),
                       (SandboxError, RuntimeError), (ModelError, RuntimeError), (ValueModelError, RuntimeError)):
        assert issubclass(error, ForkcodeError) and issubclass(error, old), error


def test_atomic_path_replaces_whole_or_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "f.txt")
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed mid-write")
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["f.txt"]  # the temporary file is gone
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("new")
    assert open(path).read() == "new" and os.listdir(tmp_path) == ["f.txt"]


def test_options_come_from_the_config_fields_and_build_the_config_back():
    from dataclasses import dataclass

    from common.cli import OneLineParser, add_config_options, config_from_args, option

    @dataclass
    class Config:
        max_new_tokens: int = option(512, "tokens (default %(default)s)")
        top_p: float = 0.95
        mode: str = option("strict", choices=("strict", "apps-legacy"))
        quick: bool = False
        kept: bool = True
        name: str = "x"

    parser = OneLineParser(prog="p")
    add_config_options(parser, Config, exclude=("kept",), name={"choices": ("x", "y")})
    assert config_from_args(Config, parser.parse_args([])) == Config()
    args = parser.parse_args(["--max-new-tokens", "8", "--top-p", "0.5", "--mode", "apps-legacy", "--quick",
                              "--name", "y"])
    assert config_from_args(Config, args, top_p=0.1) == Config(8, 0.1, "apps-legacy", True, True, "y")
    assert "tokens (default 512)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "loose"])
    # A bool that is on by default is turned off by its --no- form.
    both = OneLineParser(prog="p")
    add_config_options(both, Config, only=("quick", "kept"))
    assert config_from_args(Config, both.parse_args(["--no-kept"])).kept is False
    assert config_from_args(Config, both.parse_args([])).kept is True


def test_the_commands_defaults_are_the_config_defaults(monkeypatch):
    """decode / bench quality and datagen build take every default from DecodeConfig / TreeConfig."""
    from common.cli import OneLineParser, config_from_args
    from datagen.tree import TreeConfig
    from engine.options import add_model_and_search_options
    from engine.result import DecodeConfig

    parser = OneLineParser()
    add_model_and_search_options(parser)
    assert config_from_args(DecodeConfig, parser.parse_args([])) == DecodeConfig()
    import datagen.cli
    captured = {}
    monkeypatch.setattr(datagen.cli, "cmd_build", lambda args: captured.update(cfg=config_from_args(TreeConfig, args)))
    datagen.cli.main(["build", "--dataset", "d", "--out", "o"])
    assert captured["cfg"] == TreeConfig()


def test_rows_are_checked_against_the_required_part_of_their_typed_record():
    from typing import Annotated, TypedDict

    from common.store import SHALLOW, schema_error

    class _InnerKeys(TypedDict):
        total: float

    class Inner(_InnerKeys, total=False):
        note: str              # optional: not checked

    class _RowKeys(TypedDict):
        problem_id: str
        passed: bool | int
        label: int
        tokens: list[int]
        logprobs: Annotated[list[float], SHALLOW]
        inner: Inner
        items: list[Inner]

    class Row(_RowKeys, total=False):
        extra: int

    good = {"problem_id": "p", "passed": True, "label": 1, "tokens": [1, 2], "logprobs": [-1, "x"],
            "inner": {"total": 3}, "items": [{"total": 0.5, "note": 7}], "extra": "not checked"}
    assert schema_error(good, Row) is None  # a float takes an int; SHALLOW and optional keys are not looked into
    assert schema_error({**good, "passed": 0}, Row) is None
    for change, message in ((dict(label=True), "label must be an integer"),  # JSON true is not a number
                            (dict(inner={"total": True}), "total must be a number"),
                            (dict(passed="yes"), "passed must be true/false or an integer"),
                            (dict(tokens=[1, True]), r"tokens\[1\] must be an integer"),
                            (dict(logprobs={}), "logprobs must be a list"),
                            (dict(inner=[]), "inner must be a JSON object"),
                            (dict(items=[{}]), r"items\[0\] lacks 'total'"),
                            (dict(problem_id=None), "problem_id must be text")):
        assert re.fullmatch(message, schema_error({**good, **change}, Row)), change
    assert schema_error({k: v for k, v in good.items() if k != "label"}, Row) == "row lacks 'label'"
    assert schema_error([good], Row) == "row must be a JSON object"


def test_atomic_path_gives_files_the_umasks_mode(tmp_path):
    import torch
    from safetensors.torch import save_file
    path = str(tmp_path / "delta.safetensors")
    with atomic_path(path) as tmp:
        save_file({"w": torch.zeros(2)}, tmp)  # safetensors creates its file 0600
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
