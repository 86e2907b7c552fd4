"""(Fashion-)MNIST from IDX files: a folder given by the user, Debian's dataset-fashion-mnist, or Keras;
CIFAR-10 from its python batches in a folder given by the user."""
from __future__ import annotations

import gzip
import os
import pickle
import zlib

import numpy as np

from tfprune.errors import TfpruneError

DEBIAN_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
DATASETS = ("fashion_mnist", "mnist")
CLASSES = 10
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str) -> np.ndarray:
    """One IDX file (gzip or not) as a numpy array, checked against the shape its header declares."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise TfpruneError(f"{path} is not a readable gzip file ({error or type(error).__name__})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise TfpruneError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise TfpruneError(f"{path} is truncated: header says {shape}, found {body.size} bytes")
    return body.reshape(shape)


def _find(folder: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_idx_folder(folder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not os.path.isdir(folder):
        raise TfpruneError(f"data dir {folder} does not exist")
    splits = {}
    for split, stems in FILES.items():
        paths = [_find(folder, stem) for stem in stems]
        if None in paths:
            missing = [stem for stem, path in zip(stems, paths) if path is None]
            raise TfpruneError(f"data dir {folder} has no {', '.join(missing)}[.gz] (IDX files of (Fashion-)MNIST)")
        images, labels = (read_idx(p) for p in paths)
        if len(images) != len(labels):
            raise TfpruneError(f"{folder}: {len(images)} {split} images but {len(labels)} labels")
        if images.ndim != 3 or labels.ndim != 1:
            raise TfpruneError(f"{folder}: {split} images must be N x rows x columns and labels N, got shapes "
                               f"{images.shape} and {labels.shape}")
        if labels.size and labels.max() >= CLASSES:
            raise TfpruneError(f"{paths[1]}: label {int(labels.max())} at index {int(labels.argmax())} is outside "
                               f"0..{CLASSES - 1}")
        splits[split] = (images, labels)
    return splits


def load_images(dataset: str = "fashion_mnist", data_dir: str | None = None) -> tuple[dict, str]:
    """({"train": (x, y), "test": (x, y)} with x float32 in [0, 1] flattened to 784, where it came from)."""
    if dataset not in DATASETS:
        raise TfpruneError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}")
    if data_dir:
        splits, source = load_idx_folder(data_dir), data_dir
    elif dataset in DEBIAN_DIRS and os.path.isdir(DEBIAN_DIRS[dataset]):
        splits, source = load_idx_folder(DEBIAN_DIRS[dataset]), DEBIAN_DIRS[dataset]
    else:
        splits, source = _keras_download(dataset), f"keras.datasets.{dataset}"
    return {split: (x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64))
            for split, (x, y) in splits.items()}, source


def load_train_test(dataset: str, data_dir: str | None, max_train: int | None = None,
                    max_test: int | None = None) -> tuple[tuple, tuple, str]:
    """((x, y), (x_test, y_test), where they came from): `load_images`, each split cut to its first N images."""
    data, source = load_images(dataset, data_dir)
    (x, y), (x_test, y_test) = data["train"], data["test"]
    return (x[:max_train], y[:max_train]), (x_test[:max_test], y_test[:max_test]), source


def _keras_download(dataset: str) -> dict:
    from tfprune._keras import keras

    hint = ("apt-get install dataset-fashion-mnist" if dataset == "fashion_mnist"
            else "put the four IDX files in a folder and give it as the data directory")
    try:
        (xtr, ytr), (xte, yte) = getattr(keras.datasets, dataset).load_data()
    except Exception as error:  # no network: urllib errors of many kinds
        raise TfpruneError(f"{dataset} not found locally and the download failed ({type(error).__name__}); {hint}") from None
    return {"train": (xtr, ytr), "test": (xte, yte)}


CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data, labels = np.asarray(batch[b"data"], np.uint8), np.asarray(batch[b"labels"], np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise TfpruneError(f"{path} is not a CIFAR-10 python batch ({type(error).__name__})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise TfpruneError(f"{path}: expected N x 3072 images and N labels, got {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= CLASSES):
        raise TfpruneError(f"{path}: labels must lie in 0..{CLASSES - 1}")
    return data, labels


def load_cifar10(data_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (x, y), "test": (x, y)} from CIFAR-10's python version (`cifar-10-batches-py`: data_batch_1..5,
    test_batch): x float32 in [0, 1], N x 32 x 32 x 3 (the files store each image channel-major)."""
    if not os.path.isdir(data_dir):
        raise TfpruneError(f"data dir {data_dir} does not exist")
    missing = [n for names in CIFAR_FILES.values() for n in names if not os.path.isfile(os.path.join(data_dir, n))]
    if missing:
        raise TfpruneError(f"data dir {data_dir} has no {', '.join(missing)} (CIFAR-10's python batches)")
    splits = {}
    for split, names in CIFAR_FILES.items():
        parts = [_cifar_batch(os.path.join(data_dir, n)) for n in names]
        data = np.concatenate([p[0] for p in parts])
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
        splits[split] = (images, np.concatenate([p[1] for p in parts]))
    return splits
