"""The GLUE tasks as data, in the manner of Hugging Face's run_glue: where each task's TSVs keep their
columns, its label set (or regression), and its metrics; and one reader for all of them.

Rows are (sentence1, sentence2 or None, label): an int class index, or a float score for regression
(STS-B). Files are split on tabs, never parsed as CSV (sentences contain quote characters); a malformed row
is an error naming the file and line, since skipping it would change the data set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from tfprune.errors import TfpruneError


@dataclass(frozen=True)
class Task:
    """One GLUE task: its folder, its TSV layout and what is measured on it."""

    name: str
    folder: str
    sentence1: int  # column index
    sentence2: int | None  # None: single-sentence task
    label: int
    header: bool
    labels: tuple | None  # the label strings in class order; None: regression
    metrics: tuple  # metric names, the first the one to select on
    min_columns: int
    header_marker: str | None = None  # a column name the header must hold (a file of another task: an error)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


TASKS = {task.name: task for task in (
    Task("mrpc", "MRPC", 3, 4, 0, True, ("0", "1"), ("f1", "accuracy"), 5, "#1 String"),
    Task("rte", "RTE", 1, 2, 3, True, ("entailment", "not_entailment"), ("accuracy",), 4),
    Task("wnli", "WNLI", 1, 2, 3, True, ("0", "1"), ("accuracy",), 4),
    Task("stsb", "STS-B", 7, 8, 9, True, None, ("spearman", "pearson"), 10),
    Task("sst2", "SST-2", 0, None, 1, True, ("0", "1"), ("accuracy",), 2),
    Task("cola", "CoLA", 3, None, 1, False, ("0", "1"), ("matthews",), 4),
)}


def get_task(name: str) -> Task:
    """Raises TfpruneError for a name not in TASKS."""
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise TfpruneError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[key]


def read_task_tsv(path: str, task: Task, labelled: bool = True) -> list[tuple]:
    """Rows (sentence1, sentence2 or None, label) of one of `task`'s TSV files (label None where unlabelled,
    as GLUE's test files are).

    Raises:
        TfpruneError: a missing file, an empty one, or a malformed row (file and line named).
    """
    if not os.path.isfile(path):
        raise TfpruneError(f"{task.folder} file {path} not found")
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        lines = enumerate(handle, start=1)
        if task.header:
            _, header = next(lines, (1, ""))
            if task.header_marker and task.header_marker not in header:
                raise TfpruneError(f"{path}:1: not a GLUE {task.folder} header (expected a "
                                   f"'{task.header_marker}' column)")
        for number, line in lines:
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < task.min_columns:
                raise TfpruneError(f"{path}:{number}: malformed row: expected {task.min_columns} tab-separated "
                                   f"fields, found {len(fields)}")
            label = _label(fields[task.label], task, path, number) if labelled else None
            second = fields[task.sentence2] if task.sentence2 is not None else None
            rows.append((fields[task.sentence1], second, label))
    if not rows:
        raise TfpruneError(f"{path} has no data rows")
    return rows


def _label(text: str, task: Task, path: str, number: int):
    if task.is_regression:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 5.0:
            raise TfpruneError(f"{path}:{number}: malformed row: score must be a number in [0, 5], found {text!r}")
        return value
    if text not in task.labels:
        raise TfpruneError(f"{path}:{number}: malformed row: label must be one of {list(task.labels)}, found {text!r}")
    return task.labels.index(text)


def load_task(task: Task, data_dir: str | None = None) -> tuple[dict[str, list], str]:
    """({"train": rows, "dev": rows}, the folder read): `data_dir`, else $GLUE_DIR/<folder>, else
    data/glue/<folder>.

    Raises:
        TfpruneError: no folder found, or a file that is missing or malformed.
    """
    candidates = [data_dir] if data_dir else [
        os.path.join(os.environ["GLUE_DIR"], task.folder) if os.environ.get("GLUE_DIR") else None,
        os.path.join("data", "glue", task.folder)]
    folder = next((c for c in candidates if c and os.path.isdir(c)), None)
    if folder is None:
        where = data_dir or f"$GLUE_DIR/{task.folder} or data/glue/{task.folder}"
        raise TfpruneError(f"{task.folder} not found: {where} does not exist (GLUE format: train.tsv, dev.tsv)")
    return {split: read_task_tsv(os.path.join(folder, f"{split}.tsv"), task) for split in ("train", "dev")}, folder
