"""The command-line toolkit every forkcode command shares: the project's error types, the one-line
error and the subcommand dispatch. No forkcode imports: every layer may use it."""

import argparse
import sys


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
