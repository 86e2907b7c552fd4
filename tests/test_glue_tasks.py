"""The GLUE task table: every task's TSVs read (the real files where they are here), labels and scores
checked with file and line named; the task metrics against values worked out by hand."""
import os

import numpy as np
import pytest

from tests.helpers import ROOT
from tfprune import TfpruneError
from tfprune.tasks import metrics
from tfprune.tasks.glue_tasks import TASKS, get_task, load_task, read_task_tsv

SHARED = os.path.join(ROOT, "..", "shared", "data", "glue")
SIZES = {"mrpc": (3668, 408), "rte": (2490, 277), "wnli": (635, 71), "stsb": (5749, 1500), "sst2": (67349, 872),
         "cola": (8551, 1043)}
SAMPLES = {  # one line of each task's train.tsv layout, and its parsed row
    "mrpc": ("1\t1\t2\tA b .\tB a .", ("A b .", "B a .", 1)),
    "rte": ("0\tA b .\tB a .\tnot_entailment", ("A b .", "B a .", 1)),
    "wnli": ("0\tA b .\tB a .\t1", ("A b .", "B a .", 1)),
    "stsb": ("0\tmain\tf\t2012\t0\tnone\tnone\tA b .\tB a .\t3.800", ("A b .", "B a .", 3.8)),
    "sst2": ("a fine film . \t1", ("a fine film . ", None, 1)),
    "cola": ("gj04\t0\t*\tThe sailors rode .", ("The sailors rode .", None, 0)),
}


def test_every_task_is_in_the_table():
    assert sorted(TASKS) == sorted(SAMPLES) == sorted(SIZES)
    assert get_task("STS-B") is TASKS["stsb"] and TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1
    with pytest.raises(TfpruneError, match="task must be one of"):
        get_task("qqp")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_layout_parses_and_bad_rows_name_file_and_line(name, tmp_path):
    task = TASKS[name]
    line, row = SAMPLES[name]
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" if name == "mrpc" else "header\n" if task.header else ""
    path = tmp_path / "train.tsv"
    path.write_text(header + line + "\n\n" + line + "\n")
    assert read_task_tsv(str(path), task) == [row, row]
    fields = line.split("\t")
    fields[task.label] = "7.5" if task.is_regression else "maybe"
    path.write_text(header + line + "\n" + "\t".join(fields) + "\n")
    number = 3 if task.header else 2
    with pytest.raises(TfpruneError, match=rf"train.tsv:{number}: malformed row: (score|label) must be"):
        read_task_tsv(str(path), task)
    path.write_text(header + "only one field\n")
    with pytest.raises(TfpruneError, match=r"malformed row: expected \d+ tab-separated fields, found 1"):
        read_task_tsv(str(path), task)
    path.write_text(header + line + "\n")
    assert read_task_tsv(str(path), task, labelled=False) == [(*row[:2], None)]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_the_real_files_where_they_are_here(name):
    task = TASKS[name]
    folder = os.path.join(SHARED, task.folder)
    if not os.path.isdir(folder):
        pytest.skip("the GLUE folder beside the checkout is not here")
    data, source = load_task(task, folder)
    train, dev = SIZES[name]
    assert (len(data["train"]), len(data["dev"])) == (train - (name == "mrpc"), dev)  # MRPC: 3,667 pairs
    labels = {row[2] for row in data["dev"]}
    if task.is_regression:
        assert min(labels) >= 0 and max(labels) <= 5
    else:
        assert labels == set(range(task.num_labels))
    assert all(isinstance(row[0], str) and row[0] for row in data["dev"])
    assert all((row[1] is None) == (task.sentence2 is None) for row in data["dev"])


def test_missing_task_folder(tmp_path):
    with pytest.raises(TfpruneError, match="RTE not found"):
        load_task(TASKS["rte"], str(tmp_path / "nowhere"))


def test_metrics_against_values_worked_out_by_hand():
    labels, predictions = [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1]  # tp 2, tn 2, fp 1, fn 1
    assert metrics.matthews(labels, predictions) == pytest.approx((2 * 2 - 1 * 1) / np.sqrt(3 * 3 * 3 * 3))
    assert metrics.matthews([1, 1], [1, 1]) == 0.0  # an empty margin
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.spearman([1, 2, 3, 4], [10, 100, 1000, 10_000]) == pytest.approx(1.0)
    # ties take their mean rank: x ranks (0, 1.5, 1.5, 3), y ranks (0, 2, 1, 3)
    x_ranks, y_ranks = np.array([0, 1.5, 1.5, 3]), np.array([0, 2, 1, 3])
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(np.corrcoef(x_ranks, y_ranks)[0, 1])
    assert metrics.task_metrics(("f1", "accuracy"), labels, predictions) == {
        "f1": pytest.approx(2 / 3), "accuracy": pytest.approx(4 / 6)}
