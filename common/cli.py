"""The command-line toolkit every forkcode command shares: the project's error types, the one-line
error, the subcommand dispatch, and options derived from config dataclasses. No forkcode imports:
every layer may use it."""

import argparse
import dataclasses
import sys
import typing


class ForkcodeError(Exception):
    """Bad input or an expected failure (an unreadable problem or row file, a model that cannot be
    loaded, a setting out of range): the message is meant for the user as is, and a command shows
    it as one error line (exit status 2). Any other exception is a bug and keeps its traceback."""


class ConfigError(ForkcodeError, ValueError):
    """A setting that is unknown or out of range (an option's value, a config field)."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit 2, not usage plus error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def die(prog, message):
    """The one error line every forkcode command gives for bad input, and exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def dispatch(prog, handlers, args, interrupted="interrupted"):
    """Run the chosen subcommand (`args.command`): a ForkcodeError becomes one error line, Ctrl-C the
    line `interrupted` (e.g. how to resume); anything else is a bug and keeps its traceback."""
    try:
        handlers[args.command](args)
    except ForkcodeError as exc:
        die(prog, str(exc))
    except KeyboardInterrupt:
        die(prog, interrupted)


# --- options from config dataclasses ---------------------------------------------------------------
# A command's settings are one dataclass (engine.result.DecodeConfig, datagen.tree.TreeConfig): each
# field's default, type, help and choices live in the field, and the command's options are derived
# from them, so a default is written once.

def option(default, help=None, **argparse_kwargs):
    """A config field that is also a command-line option: `help` (may say %(default)s) and any
    argparse keyword (choices, type) go into the field's metadata."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kwargs})


def add_config_options(parser, config, only=None, exclude=(), **overrides):
    """One option per field of the dataclass `config` (those in `only`, else all but `exclude`):
    `--kebab-case-name`, its default and type (int, float, str; a bool is a flag, with a `--no-` form
    when it defaults to True) from the field, help and choices from its metadata (see `option`). `overrides`: field name
    -> argparse keywords that replace the derived ones (e.g. choices known only to the command)."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{config.__name__}.{f.name}: an option needs a plain default")
        kwargs = {"default": f.default, **f.metadata}
        kind = hints[f.name]
        if kind is bool:  # a flag; one that is on by default also gets its --no- form
            kwargs["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
        elif "type" not in kwargs:
            if kind not in (int, float, str):
                raise TypeError(f"{config.__name__}.{f.name}: no option for a field of type {kind}")
            kwargs["type"] = kind
        kwargs.update(overrides.get(f.name, {}))
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def config_from_args(config, args, **values):
    """The dataclass `config` from parsed options: each field that has an option in `args` takes its
    value, `values` win over both, and every other field keeps its default."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if f.init and hasattr(args, f.name)}
    return config(**{**given, **values})
