"""Where to prune in TF BERT: the six matrices of every encoder layer by scope, and the coupled groups
(FFN neurons, attention heads) that structured pruning removes whole."""
from __future__ import annotations

import numpy as np

from tfprune.criteria import Pattern
from tfprune.errors import TfpruneError
from tfprune.layers import PrunableLayer, wrap
from tfprune.structure import CoupledGroup, Member

SCOPES = ("ffn", "attention", "all")


def encoder_layers(model) -> list:
    """The TFBertLayer list of a TFBert* model (or of its main layer)."""
    main = getattr(model, "bert", model)
    return list(main.encoder.layer)


def ffn_kernels(model) -> list:
    """The 2 x L feed-forward kernels (up, down per layer), wrapped or not."""
    return [dense.kernel for layer in encoder_layers(model) for dense in (layer.intermediate.dense, layer.bert_output.dense)]


def layer_targets(layer, scope: str) -> list[tuple[object, str, str]]:
    """(parent, attribute, short name) of every Dense of `scope` in one encoder layer; for "all": query,
    key, value, attention output, FFN up, FFN down."""
    ffn = [(layer.intermediate, "dense", "ffn_up"), (layer.bert_output, "dense", "ffn_down")]
    attention = [(layer.attention.self_attention, "query", "query"), (layer.attention.self_attention, "key", "key"),
                 (layer.attention.self_attention, "value", "value"), (layer.attention.dense_output, "dense", "attn_out")]
    return {"ffn": ffn, "attention": attention, "all": attention + ffn}[scope]


def check_scope(scope: str) -> None:
    """Raises TfpruneError unless `scope` is one of SCOPES."""
    if scope not in SCOPES:
        raise TfpruneError(f"scope must be one of {list(SCOPES)}, got {scope!r}")


def inject(model, scope: str = "ffn", pattern: Pattern | str = "unstructured") -> list[PrunableLayer]:
    """Wrap the Dense layers of `scope` in every encoder layer, in place; return the wrappers in order.

    ffn: intermediate.dense (up-projection H -> 4H) and bert_output.dense (down-projection 4H -> H) only.
    attention: query, key, value and the attention output. all: both. Nothing else is touched.

    Raises:
        TfpruneError: an unknown scope, or a layer of the scope wrapped already.
    """
    check_scope(scope)
    wrappers = []
    for index, layer in enumerate(encoder_layers(model)):
        for parent, attribute, short in layer_targets(layer, scope):
            dense = getattr(parent, attribute)
            if isinstance(dense, PrunableLayer):
                raise TfpruneError(f"layer_{index}/{short} is wrapped already")
            wrappers.append(_wrap(parent, attribute, f"layer_{index}/{short}", pattern))
    return wrappers


def _wrap(parent, attribute: str, label: str, pattern="unstructured") -> PrunableLayer:
    """The wrapper at parent.attribute, made (and put there) if the Dense is not wrapped yet."""
    dense = getattr(parent, attribute)
    if isinstance(dense, PrunableLayer):
        return dense
    wrapper = wrap(dense, pattern, name=f"prunable_{label.split('/')[-1]}")
    wrapper.label = label
    setattr(parent, attribute, wrapper)
    return wrapper


def ffn_neuron_groups(model) -> list[CoupledGroup]:
    """One group per encoder layer: neuron j = column j of intermediate.dense, its bias j, and row j of
    output.dense. Wraps those layers where they are not wrapped yet."""
    groups = []
    for index, layer in enumerate(encoder_layers(model)):
        up = _wrap(layer.intermediate, "dense", f"layer_{index}/ffn_up")
        down = _wrap(layer.bert_output, "dense", f"layer_{index}/ffn_down")
        neurons = np.arange(up.view.shape_2d[1])
        groups.append(CoupledGroup(f"layer_{index}/ffn_neurons", [
            Member(up, "kernel", 1, neurons), Member(up, "bias", 0, neurons), Member(down, "kernel", 0, neurons)]))
    return groups


def attention_head_groups(model) -> list[CoupledGroup]:
    """One group per encoder layer: head h = columns [h*d, (h+1)*d) of query, key and value with their
    biases, and the same rows of the attention output (d = hidden / heads). Wraps those layers where they
    are not wrapped yet."""
    groups = []
    for index, layer in enumerate(encoder_layers(model)):
        attention = layer.attention.self_attention
        heads, size = attention.num_attention_heads, attention.attention_head_size
        per_head = np.arange(heads * size).reshape(heads, size)
        members = []
        for attribute in ("query", "key", "value"):
            wrapper = _wrap(attention, attribute, f"layer_{index}/{attribute}")
            members += [Member(wrapper, "kernel", 1, per_head), Member(wrapper, "bias", 0, per_head)]
        output = _wrap(layer.attention.dense_output, "dense", f"layer_{index}/attn_out")
        members.append(Member(output, "kernel", 0, per_head))
        groups.append(CoupledGroup(f"layer_{index}/heads", members))
    return groups


