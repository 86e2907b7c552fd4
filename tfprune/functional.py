"""Wrapping layers of a functional or Sequential model in place: the graph is rewired to call the wrapper.

A functional model's graph names its layers in nodes and in the history of every symbolic tensor; a
wrapper put in a layer's place must take over all of them, so that calling the model, `get_config`,
`clone_model` and saving see the wrapper exactly as if the model had been built with it. (The only module
that touches tf-keras's functional internals.)
"""
from __future__ import annotations

import tensorflow as tf
from tf_keras.src.engine import functional as keras_functional
from tf_keras.src.engine import node as keras_node
from tf_keras.src.utils import tf_inspect

from tfprune import registry
from tfprune._keras import keras


def is_graph_model(model) -> bool:
    return isinstance(model, keras_functional.Functional) and getattr(model, "_is_graph_network", False)


def _rewire(model, old, new) -> None:
    """Let `new` take `old`'s place in `model`'s graph: nodes, tensor histories, layer lists."""
    new._inbound_nodes_value = list(old._inbound_nodes)
    new._outbound_nodes_value = list(old._outbound_nodes)
    for index, node in enumerate(new._inbound_nodes):
        node.layer = new
        for position, tensor in enumerate(tf.nest.flatten(node.outputs)):
            tensor._keras_history = keras_node.KerasHistory(new, index, position)
    old._inbound_nodes_value, old._outbound_nodes_value = [], []
    layers = model._self_tracked_trackables
    layers[layers.index(old)] = new
    model._layer_call_argspecs.pop(old, None)
    model._layer_call_argspecs[new] = tf_inspect.getfullargspec(new.call)
    for attribute in ("_output_layers", "_input_layers"):
        listed = getattr(model, attribute)
        if old in listed:
            listed[listed.index(old)] = new
    in_graph = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}
    model._network_nodes = {  # keyed by layer name, which changed
        keras_functional._make_node_key(layer.name, index)
        for layer in model._self_tracked_trackables for index, node in enumerate(layer._inbound_nodes)
        if id(node) in in_graph}


def wrap_in_graph(model, wrap, selected, prefix: str = "") -> list:
    """Wrap every registered layer of `model` (and of models nested in it) whose path `selected` accepts;
    `wrap(layer)` makes the wrapper. Returns the wrappers."""
    from tfprune.layers import PrunableLayer

    wrappers = []
    for layer in list(model.layers):
        path = f"{prefix}{layer.name}"
        if is_graph_model(layer):
            wrappers += wrap_in_graph(layer, wrap, selected, prefix=f"{path}/")
        elif isinstance(layer, keras.Model) or isinstance(layer, PrunableLayer):
            continue
        elif registry.is_prunable(layer) and selected(path):
            wrapper = wrap(layer)
            wrapper.label = path
            if not wrapper.built:
                wrapper.build(None)
            _rewire(model, layer, wrapper)
            wrappers.append(wrapper)
    return wrappers
