"""GLUE data for training: a task's rows from GLUE-format TSV files (MRPC also from tfds when the network
allows), tokenized once, padded per batch.

Per-batch padding keeps most batches far shorter than 128 tokens; Keras traces its train function with
reduce_retracing, so new lengths do not each cost a new trace.
"""
from __future__ import annotations

import os

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.tasks.glue_tasks import TASKS, Task, load_task, read_task_tsv

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
# Pairs a person can judge, run through every exported MRPC model (paraphrase, or not).
MRPC_DEMO_PAIRS = [
    ("The company said quarterly profit rose 12 percent.", "Quarterly profit at the company climbed 12 percent, it said."),
    ("He was arrested in Paris on Tuesday.", "Police detained him in Paris on Tuesday."),
    ("The bill passed the Senate by a vote of 60 to 38.", "The Senate approved the bill 60-38."),
    ("The cat sat on the mat.", "Stock markets in Asia fell sharply on Monday."),
    ("She will start her new job next week.", "The museum is closed for renovation until spring."),
    ("Revenue fell to $1.2 billion from $1.5 billion.", "Revenue rose to $1.5 billion from $1.2 billion."),
]


def demo_pairs(task: Task, dev_rows: list) -> list[tuple[str, str]]:
    """The pairs an export shows its predictions on: MRPC's hand-written ones, else the first two dev pairs."""
    return MRPC_DEMO_PAIRS if task.name == "mrpc" else [(a, b) for a, b, _ in dev_rows[:2]]


def read_mrpc_tsv(path: str, labelled: bool = True) -> list[tuple[str, str, int]]:
    """Rows (sentence1, sentence2, label) of a GLUE MRPC TSV (label -1 where unlabelled): `glue_tasks`'
    reader with MRPC's layout (Quality, #1 ID, #2 ID, #1 String, #2 String)."""
    rows = read_task_tsv(path, TASKS["mrpc"], labelled)
    return [(first, second, -1 if label is None else label) for first, second, label in rows]


def find_mrpc_dir(data_dir: str | None) -> str | None:
    """`data_dir`, else $GLUE_DIR/MRPC, else data/glue/MRPC; None when none exists (then tfds is tried)."""
    if data_dir:
        if not os.path.isdir(data_dir):
            raise TfpruneError(f"data directory {data_dir} does not exist")
        return data_dir
    for candidate in (os.path.join(os.environ["GLUE_DIR"], "MRPC") if os.environ.get("GLUE_DIR") else None,
                      os.path.join("data", "glue", "MRPC")):
        if candidate and os.path.isdir(candidate):
            return candidate
    return None


def load_mrpc(data_dir: str | None = None) -> tuple[dict[str, list], str]:
    """({"train": rows, "dev": rows}, source)."""
    folder = find_mrpc_dir(data_dir)
    if folder is not None:
        return {split: read_mrpc_tsv(os.path.join(folder, SPLIT_FILES[split])) for split in ("train", "dev")}, folder
    return _load_tfds(), "tfds:glue/mrpc"


def load_glue(task: Task, data_dir: str | None = None) -> tuple[dict[str, list], str]:
    """({"train": rows, "dev": rows}, source) of any task of `glue_tasks.TASKS`: rows (sentence1,
    sentence2 or None, label)."""
    return load_mrpc(data_dir) if task.name == "mrpc" else load_task(task, data_dir)


def _load_tfds() -> dict[str, list]:
    try:
        import tensorflow_datasets as tfds

        splits = tfds.load("glue/mrpc", split=["train", "validation"])
    except Exception as error:  # offline: download errors of many kinds
        raise TfpruneError("MRPC not found: give a data directory (GLUE format: train.tsv, dev.tsv) or set GLUE_DIR; "
                         f"the tfds download of glue/mrpc failed too ({type(error).__name__})") from None
    return {name: [(ex["sentence1"].decode(), ex["sentence2"].decode(), int(ex["label"])) for ex in tfds.as_numpy(split)]
            for name, split in zip(("train", "dev"), splits)}


FEATURES = ("input_ids", "attention_mask", "token_type_ids")  # what a batch holds, int32 (batch, length)


class PairBatches:
    """Tokenized examples (sentence pairs, or single sentences where the second is None) served as padded
    batches: a Keras `Sequence`-compatible iterable of (features, targets). `targets` are the labels (int
    classes, or float scores when `regression`) unless replaced, e.g. by labels with a teacher's logits."""

    def __init__(self, tokenizer, rows, batch_size: int, max_length: int = 128, shuffle: bool = False, seed: int = 0,
                 regression: bool = False):
        second = None if all(r[1] is None for r in rows) else [r[1] for r in rows]
        encoded = tokenizer([r[0] for r in rows], second, truncation=True, max_length=max_length)
        self.features = {key: encoded[key] for key in FEATURES}
        self.labels = np.array([r[2] for r in rows], np.float32 if regression else np.int32)
        self.targets = self.labels
        self.batch_size, self.shuffle = batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(rows))
        if shuffle:
            self.rng.shuffle(self.order)

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def batch(self, index: int):
        ids = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        length = max(len(self.features["input_ids"][i]) for i in ids)
        batch = {}
        for key, values in self.features.items():
            padded = np.zeros((len(ids), length), np.int32)
            for row, i in enumerate(ids):
                padded[row, :len(values[i])] = values[i]
            batch[key] = padded
        return batch, self.targets[ids]

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


def as_keras_sequence(batches: PairBatches, skip: int = 0):
    """Wrap PairBatches as a tf_keras Sequence (reshuffled every epoch by Keras' on_epoch_end). `skip`: the
    first batches of the current order left out (a run resumed in the middle of an epoch)."""
    from tfprune._keras import keras

    class _Sequence(keras.utils.Sequence):
        def __len__(self):
            return len(batches) - skip

        def __getitem__(self, index):
            return batches.batch(skip + index)

        def on_epoch_end(self):
            batches.on_epoch_end()

    return _Sequence()
