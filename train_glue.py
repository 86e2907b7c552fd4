#!/usr/bin/env python3
"""Fine-tune a BERT classifier on a GLUE task while pruning it: `python3 train_glue.py --help`.

The front door of `tfprune.cli.train_glue` (also installed as the `tfprune-train-glue` command).
"""
import sys

from tfprune.cli import run
from tfprune.cli.train_glue import main

if __name__ == "__main__":
    sys.exit(run(main))
