"""Shared test set-up. Two logical CPUs are made before TensorFlow initialises, for MirroredStrategy tests."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tfprune  # noqa: E402,F401  (tf-keras before TensorFlow)
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402


def mrpc_source_dir():
    """The real MRPC (GLUE_DIR or the shared folder beside the checkout), or None."""
    for candidate in (os.path.join(os.environ.get("GLUE_DIR", ""), "MRPC"),
                      os.path.join(ROOT, "..", "shared", "data", "glue", "MRPC")):
        if os.path.isfile(os.path.join(candidate, "train.tsv")):
            return candidate
    return None


HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


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
            handle.write(HEADER + "".join(lines))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, mrpc_dir):
    """A random 2-layer, hidden-32 BERT classifier in Hugging Face layout (tf_model.h5 + a word vocab)."""
    import tf_keras as keras
    from transformers import BertConfig, BertTokenizerFast, TFBertForSequenceClassification

    from tfprune.data.glue import read_mrpc_tsv

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = sorted({w.lower() for s1, s2, _ in read_mrpc_tsv(os.path.join(mrpc_dir, "train.tsv")) for w in (s1 + " " + s2).split()})
    with open(folder / "vocab.txt", "w") as handle:
        handle.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    keras.utils.set_random_seed(0)
    config = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2)
    model = TFBertForSequenceClassification(config)
    model(model.dummy_inputs)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
