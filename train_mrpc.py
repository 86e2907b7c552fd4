#!/usr/bin/env python3
"""Fine-tune a BERT classifier on GLUE MRPC while pruning it: `python3 train_mrpc.py --help`.

The front door of `tfprune.cli.train_mrpc` (also installed as the `tfprune-train-mrpc` command).
"""
import sys

from tfprune.cli import run
from tfprune.cli.train_mrpc import main

if __name__ == "__main__":
    sys.exit(run(main))
