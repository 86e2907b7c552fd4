#!/usr/bin/env python3
"""LeNet-5 pruning on Fashion-MNIST (one-shot, gradual, ADMM; irregular, filter; nested masks):
`python3 lenet_pruning.py --help`.

The front door of `tfprune.cli.lenet_pruning` (also installed as the `tfprune-lenet-pruning` command).
"""
import sys

from tfprune.cli import run
from tfprune.cli.lenet_pruning import main

if __name__ == "__main__":
    sys.exit(run(main))
