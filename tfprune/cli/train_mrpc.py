"""GLUE MRPC's front door to `train_glue`: the same flags, the task fixed (`python train_mrpc.py --help`)."""
from __future__ import annotations

from tfprune import cli
from tfprune.cli import train_glue


def build_parser():
    return train_glue.build_parser(task="mrpc")


def main(argv=None):
    return train_glue.main(argv, task="mrpc")


def console() -> int:
    """The `tfprune-train-mrpc` command."""
    return cli.run(main)
