"""The wrapper over any layer with a registered prunable weight (`registry`), and `prune` to place it.

The weight variable itself is kept equal to weight * mask, so the forward pass is the wrapped layer's own and
costs nothing extra. Every write the package makes keeps it so: optimizer steps through `kernel_mask` (a
constraint after each step, masked increments that make it free), installing a mask zeros the weights it
prunes, and the pruner re-applies the masks when training starts, after any writes of the user's own.
Checkpoints therefore hold weights exactly as sparse as their masks, whatever Adam's moments say.

Multiplying by the mask in the forward pass as well (tfmot's way) would be a second pass over every kernel at
every step for no change in the result.
The gradient is the dense one, as tfmot's straight-through gradient; the masked update discards what it
does to pruned weights (masking the gradient instead let Adam's moments of pruned weights decay into
denormal floats, which halved the MLP's training speed on a CPU).
"""
from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from tfprune import kernel_mask, registry
from tfprune._keras import keras
from tfprune.criteria import Pattern, as_pattern, choose_pattern, compute_mask, parse_spec
from tfprune.errors import TfpruneError


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableLayer(keras.layers.Wrapper):
    """Wraps a layer of a registered type (Dense, EinsumDense, Conv1D/2D/3D, DepthwiseConv2D, ...), built or
    not, and prunes its weight with `pattern` on the weight's 2-D view (rows x units, `registry`).

    The mask is a non-trainable variable in the weight's shape, written in cross-replica context so every
    replica holds the same one. It changes only through `set_mask` / `prune_to`, or the `PruningStep` that
    `GradualPruningCallback` drives on its schedule. Coupled structures (`structure`) may also mask the bias.

    Args:
        layer: the layer to wrap.
        pattern: a `Pattern`, its dict, or a pattern name ("unstructured", "unit", "row", "block", "nm").
        mask_bias: give the bias a mask too (coupled groups that remove units ask for it; saved in the config
            so a reloaded model has the same variables).
    Raises:
        TfpruneError: the layer's type is not registered, or the pattern is unknown.
    """

    def __init__(self, layer, pattern: Pattern | dict | str = "unstructured", mask_bias: bool = False, **kwargs):
        if not isinstance(layer, keras.layers.Layer) or not registry.is_prunable(layer):
            raise TfpruneError(f"{type(self).__name__} wraps a tf_keras layer of a registered type "
                               f"({', '.join(sorted(t.__name__ for t in registry.registered_types()))}), got "
                               f"{type(layer).__module__}.{type(layer).__name__}")
        kwargs.setdefault("name", f"prunable_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pattern = as_pattern(pattern)
        self.mask = None
        self.sparsity = None
        self.bias_mask = None
        self.pattern_choice = None
        self._mask_bias = bool(mask_bias)
        if layer.built:
            self._create_mask()

    def build(self, input_shape=None):
        if not self.layer.built:
            with tf.name_scope(self.layer.name):
                self.layer.build(input_shape)
        if self.mask is None:
            self._create_mask()
        super().build(input_shape)

    def _mask_variable(self, name: str, like: tf.Variable) -> tf.Variable:
        return self.add_weight(
            name=name, shape=like.shape, dtype=like.dtype, initializer="ones", trainable=False,
            aggregation=tf.VariableAggregation.MEAN, synchronization=tf.VariableSynchronization.ON_WRITE)

    def _create_mask(self):
        self.mask = self._mask_variable("mask", self.kernel)
        self.sparsity = self.add_weight(
            name="target_sparsity", shape=(), dtype=tf.float32, initializer="zeros", trainable=False,
            aggregation=tf.VariableAggregation.MEAN,
        )
        kernel_mask.install(self.kernel, self.mask)
        if self._mask_bias:
            self.ensure_bias_mask()
        if self.pattern.name == "set":  # a variable: checkpoints and resumed runs keep the choice
            self.pattern_choice = self.add_weight(name="pattern_choice", shape=(), dtype=tf.int32,
                                                  initializer=keras.initializers.Constant(-1), trainable=False)

    def ensure_bias_mask(self) -> tf.Variable:
        """A mask for the bias too (created once, all ones), kept by the same optimizer hooks as the kernel:
        a coupled structure that removes a unit zeros its bias."""
        if self.bias_mask is None:
            bias = getattr(self.layer, "bias", None)
            if bias is None:
                raise TfpruneError(f"{self.name} has no bias to mask")
            self.bias_mask = self._mask_variable("bias_mask", bias)
            kernel_mask.install(bias, self.bias_mask)
            self._mask_bias = True
        return self.bias_mask

    # HF's layers call sublayers as `self.dense(inputs=hidden_states)`: keep the argument named `inputs`.
    def call(self, inputs, training=None):
        return self.layer.call(inputs)  # the weight already is weight * mask (module docstring)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    @property
    def kernel(self) -> tf.Variable:
        """The pruned weight (`kernel`, or `depthwise_kernel` for DepthwiseConv2D), in its own shape."""
        return getattr(self.layer, registry.entry_for(self.layer).weight)

    @property
    def view(self) -> registry.View:
        """How the weight maps to rows x units, the shape criteria rank."""
        return registry.view(self.layer)

    def set_mask(self, mask, sparsity: float | None = None) -> None:
        """Install a 0/1 (or boolean) mask, in the weight's shape or its 2-D view, and zero the pruned weights
        now (not only after the next optimizer step). `sparsity` is recorded as the target.

        Raises:
            TfpruneError: the mask has neither shape.
        """
        mask = np.asarray(mask)
        view = self.view
        if mask.shape == view.shape_2d and mask.shape != view.shape:
            mask = view.from_2d(mask)
        if mask.shape != view.shape:
            raise TfpruneError(f"mask shape {mask.shape} matches neither the weight {view.shape} nor its 2-D view "
                               f"{view.shape_2d} of {self.name}")
        self._install_mask(tf.constant(mask), float(self.sparsity.numpy() if sparsity is None else sparsity))

    def _install_mask(self, mask, sparsity):
        """Mask (bool or 0/1) into the mask variable, pruned weights zeroed at once. PruningStep runs it
        for all layers inside one tf.function."""
        mask = tf.cast(mask, self.mask.dtype)
        self.mask.assign(mask)
        self.kernel.assign(self.kernel * mask)
        self.sparsity.assign(sparsity)

    def _install_bias_mask(self, mask):
        mask = tf.cast(mask, self.bias_mask.dtype)
        self.bias_mask.assign(mask)
        self.layer.bias.assign(self.layer.bias * mask)

    def resolved_pattern(self, sparsity: float) -> Pattern:
        """The pattern this layer prunes with. For a pattern set, the candidate chosen at the first non-zero
        sparsity (`choose_pattern` on the weights then) and kept from then on: a choice that changed during
        gradual pruning would throw away what the earlier pattern had already zeroed."""
        if self.pattern.name != "set":
            return self.pattern
        choice = int(self.pattern_choice.numpy())
        if choice < 0:
            if sparsity <= 0:
                return Pattern("unstructured")  # nothing pruned yet: any pattern gives the all-ones mask
            choice = choose_pattern(self.view.to_2d(self.kernel.numpy()), sparsity, self.pattern.candidates,
                                    self.view.spatial)[0]
            self.pattern_choice.assign(choice)
        return parse_spec(self.pattern.candidates[choice])

    @property
    def chosen_pattern(self) -> str | None:
        """The spec of the pattern in use ("block:8"); None while a pattern set has not chosen yet."""
        if self.pattern.name != "set":
            return self.pattern.spec
        choice = int(self.pattern_choice.numpy())
        return None if choice < 0 else self.pattern.candidates[choice]

    def mask_at(self, sparsity: float) -> np.ndarray:
        """The layer-wise mask at `sparsity` of the current weights, in the weight's shape."""
        view = self.view
        pattern = self.resolved_pattern(sparsity)
        return view.from_2d(compute_mask(view.to_2d(self.kernel.numpy()), sparsity, pattern, view.spatial))

    def prune_to(self, sparsity: float) -> None:
        """Layer-wise mask at `sparsity` with this layer's pattern, installed at once."""
        self.set_mask(self.mask_at(sparsity), sparsity)

    def apply_mask(self) -> None:
        """weight *= mask (and bias *= bias mask): restores the invariant after writes that bypass it (your
        own assign or set_weights, an optimizer that ignores constraints)."""
        self.kernel.assign(self.kernel * tf.cast(self.mask, self.kernel.dtype))
        if self.bias_mask is not None:
            self.layer.bias.assign(self.layer.bias * tf.cast(self.bias_mask, self.layer.bias.dtype))

    def bake(self):
        """Write weight * mask into the wrapped layer, give it back its own constraints, and return it."""
        self.apply_mask()
        kernel_mask.uninstall(self.kernel)
        if self.bias_mask is not None:
            kernel_mask.uninstall(self.layer.bias)
        return self.layer

    def get_config(self):
        config = {**super().get_config(), "pattern": self.pattern.to_dict()}
        if self._mask_bias:  # only then: configs saved before bias masks existed stay as they were
            config["mask_bias"] = True
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)


@keras.utils.register_keras_serializable(package="tfprune")
class PrunableDense(PrunableLayer):
    """`PrunableLayer` for a `Dense` only: the name and saved-config format of tfprune's first wrapper."""

    def __init__(self, layer, pattern: Pattern | dict | str = "unstructured", mask_bias: bool = False, **kwargs):
        if not isinstance(layer, keras.layers.Dense):
            raise TfpruneError(
                f"PrunableDense wraps a tf_keras.layers.Dense, got {type(layer).__module__}.{type(layer).__name__}")
        super().__init__(layer, pattern, mask_bias, **kwargs)


def wrap(layer, pattern: Pattern | dict | str = "unstructured", **kwargs) -> PrunableLayer:
    """The wrapper for `layer`: a PrunableDense for a Dense (its saved-config name), else a PrunableLayer."""
    cls = PrunableDense if isinstance(layer, keras.layers.Dense) else PrunableLayer
    return cls(layer, pattern, **kwargs)


def prunable_layers(model: tf.Module) -> list[PrunableLayer]:
    """Every wrapper anywhere under `model`, also inside plain Layers such as HF's TFBertMainLayer (tfmot
    only looks inside keras.Model instances and misses them). Order is stable: attribute order."""
    found = [m for m in getattr(model, "submodules", ()) if isinstance(m, PrunableLayer)]
    if isinstance(model, PrunableLayer):
        found.insert(0, model)
    seen, unique = set(), []
    for layer in found:
        if id(layer) not in seen:
            seen.add(id(layer))
            unique.append(layer)
    return unique


def reapply_masks(model: tf.Module | list[PrunableLayer]) -> None:
    """weight *= mask for every wrapper in `model` (or in a list of wrappers): after writing weights
    yourself, or after each step with an optimizer that ignores variable constraints."""
    for layer in model if isinstance(model, list) else prunable_layers(model):
        layer.apply_mask()


def layer_paths(model) -> list[tuple[str, object, tuple, object]]:
    """(path, parent, attribute, layer) for every registered layer reachable through attributes of `model`'s
    layers, depth first: the path joins attribute names with "/" (e.g. "bert/encoder/layer/0/intermediate/
    dense"); list items get their index. Wrapped layers are listed as their wrapper and not entered."""
    found, seen = [], set()

    def visit(obj, path):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        # Public attributes first (their names make the paths), then Keras' own list of tracked layers, for
        # containers that hold layers nowhere else (a Sequential built without an input).
        attributes = [(name, value) for name, value in vars(obj).items() if not name.startswith("_")]
        attributes += [("", item) for item in getattr(obj, "_self_tracked_trackables", ())]
        for name, value in attributes:
            items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
            for index, item in items:
                if not isinstance(item, keras.layers.Layer) or item is obj or id(item) in seen:
                    continue
                local = item.name if name == "" else name if index is None else f"{name}/{index}"
                child = f"{path}/{local}" if path else local
                if isinstance(item, PrunableLayer) or registry.is_prunable(item):
                    seen.add(id(item))
                    found.append((child, obj, (name, index), item))
                else:
                    visit(item, child)

    visit(model, "")
    return found


def prune(target, pattern: Pattern | dict | str = "unstructured", include: str | None = None) -> list[PrunableLayer]:
    """Wrap a layer, or every matching layer of a model in place, for pruning with `pattern`.

    Args:
        target: a layer of a registered type (its wrapper is returned, to use in its place), or a model or
            layer that holds such layers as attributes, at any depth: subclassed models, HF's TFBert* and its
            plain TFBertMainLayer, functional and Sequential models (whose graph is rewired to call the
            wrappers; `get_config` and saving follow).
        pattern: the pattern of every new wrapper.
        include: a regular expression searched in each layer's path (attribute names joined by "/", e.g.
            "bert/encoder/layer/3/intermediate/dense", or a functional model's layer names); None: every
            registered layer. Layers wrapped already are left as they are.
    Returns:
        The new wrappers, in attribute order.
    Raises:
        TfpruneError: no registered layer matches, the expression is invalid, or the pattern is unknown.
    """
    pattern = as_pattern(pattern)
    if registry.is_prunable(target) and not isinstance(target, PrunableLayer):
        return [wrap(target, pattern)]
    try:
        selected = re.compile(include) if include is not None else None
    except re.error as error:
        raise TfpruneError(f"include is not a valid regular expression ({error}): {include!r}") from None
    from tfprune import functional  # only functional / Sequential models need it

    if functional.is_graph_model(target):
        return functional.wrap_in_graph(target, lambda layer: wrap(layer, pattern),
                                        lambda path: selected is None or bool(selected.search(path)))
    wrappers = []
    for path, parent, (attribute, index), layer in layer_paths(target):
        if isinstance(layer, PrunableLayer) or (selected is not None and not selected.search(path)):
            continue
        if attribute == "":
            raise TfpruneError(f"{path} is held only in Keras' layer list of {parent.name}, not as an attribute: "
                               "wrap it where the model is built (PrunableLayer) instead")
        wrapper = wrap(layer, pattern)
        wrapper.label = path
        if index is None:
            setattr(parent, attribute, wrapper)
        else:
            container = getattr(parent, attribute)
            container[index] = wrapper
        wrappers.append(wrapper)
    if not wrappers:
        raise TfpruneError(f"no unwrapped layer of a registered type matches include={include!r} in "
                           f"{getattr(target, 'name', type(target).__name__)}")
    return wrappers
