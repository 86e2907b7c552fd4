#!/usr/bin/env python3
"""Search a token pruning schedule for a fine-tuned BERT classifier: `python3 token_search.py --help`.

The front door of `tfprune.cli.token_search` (also installed as the `tfprune-token-search` command).
"""
import sys

from tfprune.cli import run
from tfprune.cli.token_search import main

if __name__ == "__main__":
    sys.exit(run(main))
