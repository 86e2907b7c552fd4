#!/usr/bin/env python3
"""Token pruning for an LSTM on a GLUE task, against the unpruned LSTM: `python3 token_lstm.py --help`.

The front door of `tfprune.cli.token_lstm` (also installed as the `tfprune-token-lstm` command).
"""
import sys

from tfprune.cli import run
from tfprune.cli.token_lstm import main

if __name__ == "__main__":
    sys.exit(run(main))
