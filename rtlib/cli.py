"""The command line's one-line errors, for every subcommand's parser (standard library only:
`rtlib data` runs before the install)."""
from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, `prog: error: message`, with exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")
