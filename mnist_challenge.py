#!/usr/bin/env python3
"""The FOR.ai pruning challenge on Fashion-MNIST: `python3 mnist_challenge.py --help`.

The front door of `tfprune.cli.mnist_challenge` (also installed as the `tfprune-mnist-challenge` command).
"""
import sys

from tfprune.cli import run
from tfprune.cli.mnist_challenge import main

if __name__ == "__main__":
    sys.exit(run(main))
