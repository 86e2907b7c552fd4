"""Shared fixtures. Two logical CPUs are made before TensorFlow initialises, for MirroredStrategy tests."""
import os
import zlib

import numpy as np
import pytest
import tensorflow as tf

import tfprune  # noqa: F401  (tf-keras as the Keras in use)
from tests.helpers import MRPC_HEADER, mrpc_source_dir

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture
def rng(request):
    """A numpy Generator of the test's own, seeded from its id: reproducible, whatever runs before it."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def mrpc_dir(tmp_path_factory):
    """A GLUE MRPC folder of 40 train / 24 dev rows: the first rows of the real files when they are here,
    else synthetic pairs in the same format (the data is never committed)."""
    folder = tmp_path_factory.mktemp("MRPC")
    source = mrpc_source_dir()
    for split, count in (("train", 40), ("dev", 24)):
        if source:
            with open(os.path.join(source, f"{split}.tsv"), encoding="utf-8-sig") as handle:
                lines = handle.readlines()[1:count + 1]
        else:
            lines = [f"{i % 2}\t{i}\t{i + 1}\tthe company said profit rose {i} percent .\t"
                     f"{'profit rose ' + str(i) + ' percent , the company said .' if i % 2 else 'shares fell sharply today .'}\n"
                     for i in range(count)]
        with open(folder / f"{split}.tsv", "w", encoding="utf-8") as handle:
            handle.write(MRPC_HEADER + "".join(lines))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, mrpc_dir):
    """A random 2-layer, hidden-32 BERT classifier in Hugging Face layout (tf_model.h5 + a word vocab)."""
    return _tiny_bert(tmp_path_factory, mrpc_dir, "tiny_bert")


@pytest.fixture(scope="session")
def tiny_regression_bert_dir(tmp_path_factory, mrpc_dir):
    """The tiny BERT with one output: a regressor, as STS-B's models are."""
    return _tiny_bert(tmp_path_factory, mrpc_dir, "tiny_bert_regression", num_labels=1)


def _tiny_bert(tmp_path_factory, mrpc_dir, name, **config):
    from transformers import BertConfig, BertTokenizerFast, TFBertForSequenceClassification

    from tfprune._keras import keras
    from tfprune.tasks.glue import read_mrpc_tsv

    folder = tmp_path_factory.mktemp(name)
    words = sorted({w.lower() for s1, s2, _ in read_mrpc_tsv(os.path.join(mrpc_dir, "train.tsv")) for w in (s1 + " " + s2).split()})
    with open(folder / "vocab.txt", "w") as handle:
        handle.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    keras.utils.set_random_seed(0)
    config = BertConfig(**{"vocab_size": len(words) + 5, "hidden_size": 32, "num_hidden_layers": 2,
                           "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
                           "num_labels": 2, **config})
    model = TFBertForSequenceClassification(config)
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
