"""The command-line toolkit every forkcode command shares: the one-line error and the subcommand
dispatch. No forkcode imports: every layer may use it."""

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit 2, not usage plus error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def die(prog, message):
    """The one error line every forkcode command gives for bad input, and exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def dispatch(prog, handlers, args, errors):
    """Run the chosen subcommand; expected errors become one line instead of a traceback."""
    try:
        handlers[args.command](args)
    except errors as exc:
        die(prog, str(exc))
    except KeyboardInterrupt:
        die(prog, "interrupted; rerun the same command to resume" if prog == "datagen" else "interrupted")
