"""Compaction of TF BERT: the FFN neurons and attention heads that compute nothing are cut out, and the
narrower model is built, saved and loaded.

Exactness decides what goes, read from the weights (not the masks), so any model with zeros can be compacted:
- a neuron adds nothing when its up-projection column and bias are zero (act(0) = 0 for BERT's activations,
  checked) or its down-projection row is zero;
- a head adds nothing when its value columns and bias are zero (its context is a weighted mean of zero
  vectors) or its rows of the attention output are zero; its query and key only shape the weights.
Every layer keeps at least one neuron and one head, so every shape stays valid (ONNX Runtime included).

Hugging Face's TF BERT has one `intermediate_size` and one head count for all layers, and `prune_heads` is
not implemented for TensorFlow. A model whose layers all keep the same number of neurons and every head is
saved as a plain Hugging Face checkpoint (a smaller `intermediate_size`; `from_pretrained` loads it without
tfprune). Otherwise the per-layer sizes go into config.json (`tfprune_layer_sizes`) and `load_pretrained` (or
`load_classifier`) rebuilds the layers to those sizes before reading the weights. Weight names are those
of the full model, so the checkpoint is an ordinary tf_model.h5.
"""
from __future__ import annotations

import os

import numpy as np

from tfprune.errors import TfpruneError
from tfprune.models.bert.targets import encoder_layers, layer_targets

LAYER_SIZES_KEY = "tfprune_layer_sizes"
COMPACT_TOLERANCE = 1e-5  # max |logit difference| between the masked model and its compacted one


class CompactionError(RuntimeError):
    """A compacted model that does not compute what the masked model computes: a bug, never the user's."""


def _nonzero(array: np.ndarray, axis) -> np.ndarray:
    return np.any(array != 0, axis=axis)


def kept_structure(model) -> list[dict]:
    """Per encoder layer, the indices of the FFN neurons and attention heads that contribute to the output:
    {"neurons": array, "heads": array} (at least one of each)."""
    import tensorflow as tf

    layers = []
    for layer in encoder_layers(model):
        up, down = layer.intermediate.dense, layer.bert_output.dense
        up_alive = _nonzero(up.kernel.numpy(), 0)
        if up.bias is not None:
            up_alive |= up.bias.numpy() != 0
        if float(tf.reduce_max(tf.abs(layer.intermediate.intermediate_act_fn(tf.zeros(1))))) != 0.0:
            up_alive[:] = True  # act(0) != 0: a neuron with a zero input still outputs a constant
        neurons = up_alive & _nonzero(down.kernel.numpy(), 1)
        attention = layer.attention.self_attention
        heads, size = attention.num_attention_heads, attention.attention_head_size
        value = attention.value
        value_alive = _nonzero(value.kernel.numpy().reshape(-1, heads, size), (0, 2))
        if value.bias is not None:
            value_alive |= _nonzero(value.bias.numpy().reshape(heads, size), 1)
        output_alive = _nonzero(layer.attention.dense_output.dense.kernel.numpy().reshape(heads, size, -1), (1, 2))
        layers.append({"neurons": _at_least_one(np.flatnonzero(neurons)),
                       "heads": _at_least_one(np.flatnonzero(value_alive & output_alive))})
    return layers


def _at_least_one(indices: np.ndarray) -> np.ndarray:
    return indices if indices.size else np.array([0])


def layer_sizes(structure: list[dict]) -> list[dict]:
    """The per-layer sizes stored with a compact model."""
    return [{"intermediate_size": int(s["neurons"].size), "num_attention_heads": int(s["heads"].size)}
            for s in structure]


def is_uniform(config, sizes: list[dict]) -> bool:
    """Every layer keeps every head and the same number of neurons: a plain Hugging Face BERT."""
    return (len({s["intermediate_size"] for s in sizes}) == 1
            and all(s["num_attention_heads"] == config.num_attention_heads for s in sizes))


def _replace_dense(parent, attribute: str, inputs: int, units: int):
    """A new Dense of `units` outputs on `inputs` inputs at parent.attribute, its variables named as the old
    one's (so checkpoints keep their names)."""
    import tensorflow as tf

    from tfprune._keras import keras

    old = getattr(parent, attribute)
    scope = old.kernel.name.rsplit("/", 1)[0] + "/"  # absolute: ".../intermediate/dense/"
    new = keras.layers.Dense(units, activation=old.activation, use_bias=old.use_bias,
                             kernel_initializer=old.kernel_initializer, name=old.name)
    with tf.name_scope(scope):
        new.build(tf.TensorShape([None, None, inputs]))
    setattr(parent, attribute, new)
    return new


def narrow(model, sizes: list[dict]) -> None:
    """Rebuild every encoder layer of a built TFBert* model to `sizes` (its FFN width and head count), in
    place; the new weights are freshly initialised."""
    layers = encoder_layers(model)
    if len(sizes) != len(layers):
        raise TfpruneError(f"{LAYER_SIZES_KEY} lists {len(sizes)} layers; the model has {len(layers)}")
    hidden = model.config.hidden_size
    for layer, size in zip(layers, sizes):
        attention = layer.attention.self_attention
        heads, neurons = int(size["num_attention_heads"]), int(size["intermediate_size"])
        if not 1 <= heads <= model.config.num_attention_heads or neurons < 1:
            raise TfpruneError(f"{LAYER_SIZES_KEY}: a layer needs 1 to {model.config.num_attention_heads} heads "
                               f"and at least one neuron, got {size}")
        width = heads * attention.attention_head_size
        shapes = [(hidden, width)] * 3 + [(width, hidden), (hidden, neurons), (neurons, hidden)]  # (in, out)
        for (parent, attribute, _), (inputs, units) in zip(layer_targets(layer, "all"), shapes):
            _replace_dense(parent, attribute, inputs, units)
        attention.num_attention_heads, attention.all_head_size = heads, width
        if heads == 1:
            attention.transpose_for_scores = _one_head_scores


def _one_head_scores(tensor, batch_size):
    """(batch, length, d) -> (batch, 1, length, d): HF's reshape to one head and transpose, written as one
    expand_dims. tf2onnx's optimizer merges the reshape-transpose pair of a one-head layer into a Reshape
    that copies the wrong dimension (ONNX Runtime then fails with a broadcast error)."""
    import tensorflow as tf

    return tf.expand_dims(tensor, 1)


def build(config, sizes: list[dict] | None = None):
    """A TFBertForSequenceClassification of `config`, its layers narrowed to `sizes` when given, pruning
    tokens when the config holds a token pruning schedule (a compacted token-pruned model keeps its pruner)."""
    from transformers import TFBertForSequenceClassification

    from tfprune.models.bert.token_pruning import apply_from_config

    model = TFBertForSequenceClassification(config)
    model(model.dummy_inputs, training=False)
    if sizes:
        narrow(model, sizes)
    apply_from_config(model)
    return model


def compact(model):
    """(compact model, per-layer sizes): a new TFBertForSequenceClassification without the neurons and
    heads of `model` (stripped: plain Dense layers) that compute nothing. Check it with `check_same_logits`."""
    import copy

    structure = kept_structure(model)
    sizes = layer_sizes(structure)
    config = copy.deepcopy(model.config)
    uniform = is_uniform(config, sizes)
    if uniform:
        config.intermediate_size = sizes[0]["intermediate_size"]
    if hasattr(config, LAYER_SIZES_KEY):
        delattr(config, LAYER_SIZES_KEY)
    result = build(config, None if uniform else sizes)
    if not uniform:
        setattr(result.config, LAYER_SIZES_KEY, sizes)
    # every weight outside the encoder's six matrices is copied whole (embeddings, layer norms, pooler, head)
    # (matched by name without the model's own scope, which Keras numbers per instance)
    narrowed = {id(w) for layer in encoder_layers(result) for dense in _six(layer) for w in dense.weights}
    sources = {_unscoped(w.name): w for w in model.weights}
    for target in result.weights:
        if id(target) not in narrowed:
            target.assign(sources[_unscoped(target.name)])
    for full, small, kept in zip(encoder_layers(model), encoder_layers(result), structure):
        size = full.attention.self_attention.attention_head_size
        columns = (kept["heads"][:, None] * size + np.arange(size)).ravel()
        kept_rows_columns = [(None, columns)] * 3 + [(columns, None), (None, kept["neurons"]), (kept["neurons"], None)]
        for source, target, (rows, cols) in zip(_six(full), _six(small), kept_rows_columns):
            kernel = source.kernel.numpy()
            kernel = kernel if rows is None else kernel[rows]
            target.kernel.assign(kernel if cols is None else kernel[:, cols])
            if source.bias is not None:
                bias = source.bias.numpy()
                target.bias.assign(bias if cols is None else bias[cols])
    return result, sizes


def _unscoped(name: str) -> str:
    return name.split("/", 1)[1]


def _six(layer) -> list:
    """The layer's six Dense layers, in `layer_targets` order."""
    return [getattr(parent, attribute) for parent, attribute, _ in layer_targets(layer, "all")]


def check_same_logits(full, small, batches) -> dict:
    """Logits of both models on every batch of `batches` ((features, labels) pairs): max |difference| and
    the share of identical predictions. Raises CompactionError beyond COMPACT_TOLERANCE."""
    from tfprune.training import predict_logits

    expected, got = predict_logits(full, batches), predict_logits(small, batches)
    max_diff = float(np.abs(expected - got).max())
    if max_diff > COMPACT_TOLERANCE:
        raise CompactionError(f"compacted model differs from the masked one: max |logit difference| {max_diff:.2e} "
                              f"> {COMPACT_TOLERANCE:g}")
    same = (float(np.mean(expected.argmax(1) == got.argmax(1))) if expected.shape[-1] > 1 else None)
    return {"max_abs_logit_diff": max_diff, "identical_predictions": same, "examples": int(len(expected))}


def save(model, tokenizer, folder: str) -> str:
    """save_pretrained for a compacted model and its tokenizer; returns 'huggingface' for a plain checkpoint,
    'tfprune' for one with per-layer sizes."""
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return "tfprune" if getattr(model.config, LAYER_SIZES_KEY, None) else "huggingface"


def load_pretrained(folder: str, config=None):
    """The TFBertForSequenceClassification saved in `folder` (tf_model.h5) by `save` or `save_pretrained`,
    per-layer sizes and a token pruning schedule applied where config.json has them (errors: those of reading
    config.json, or a checkpoint that does not fit its sizes)."""
    from transformers.modeling_tf_utils import load_tf_weights

    from tfprune.errors import first_line
    from tfprune.models.bert.loading import read_config

    config = config or read_config(folder)
    model = build(config, getattr(config, LAYER_SIZES_KEY, None))
    weights = os.path.join(folder, "tf_model.h5")
    try:
        missing, unexpected, mismatched = load_tf_weights(model, weights)
    except (OSError, ValueError, KeyError) as error:
        raise TfpruneError(f"{weights} is not a readable compact BERT checkpoint ({first_line(error)})") from None
    with_weights = {layer.name for layer in model.layers if layer.weights}
    missing = [name for name in missing if name in with_weights]  # dropout layers are numbered per instance
    unexpected = [name for name in unexpected if not name.startswith("dropout")]
    if missing or unexpected or mismatched:
        raise TfpruneError(f"{weights} does not fit the sizes in its config.json (layers missing: {missing}, "
                           f"unexpected: {unexpected}, mismatched weights: {len(mismatched)})")
    return model
