"""Stripping wrappers: plain layers with the zeros baked in, loadable without tfprune."""
from __future__ import annotations

from tfprune._keras import keras
from tfprune.errors import TfpruneError


def _replace_attribute(parent, old, new) -> bool:
    """Put `new` where `parent` holds `old`: an attribute, else an item of a public list attribute (Keras'
    own tracking lists follow the attribute)."""
    for attr, value in list(vars(parent).items()):
        if value is old:
            setattr(parent, attr, new)
            return True
    for attr, value in list(vars(parent).items()):
        if not attr.startswith("_") and isinstance(value, (list, tuple)) and any(item is old for item in value):
            value[next(i for i, item in enumerate(value) if item is old)] = new
            return True
    return False


def strip_model(model):
    """Replace every wrapper by its layer with weight * mask baked in, and return the model.

    Functional and Sequential models are rebuilt around the same layer objects (weights shared, nothing
    copied), nested models included; subclassed models such as HF's are changed in place: their wrappers
    live as attributes of a parent layer and the layer is put back there, with its original variables, so
    weight names and `save_pretrained` are as before wrapping.

    Raises:
        TfpruneError: a wrapper whose owner cannot be found (held somewhere other than an attribute or list).
    """
    from tfprune.layers import PrunableLayer, prunable_layers

    if isinstance(model, PrunableLayer):
        return model.bake()
    if isinstance(model, keras.Model) and (model._is_graph_network or isinstance(model, keras.Sequential)):
        def reuse(layer):  # every level strips its own wrappers
            if isinstance(layer, PrunableLayer) or (isinstance(layer, keras.Model) and prunable_layers(layer)):
                return strip_model(layer)
            return layer

        return keras.models.clone_model(model, clone_function=reuse)
    for wrapper in prunable_layers(model):
        wrapper.bake()
        for parent in (model, *model.submodules):  # the owner may be the model itself
            if parent is not wrapper and _replace_attribute(parent, wrapper, wrapper.layer):
                break
        else:
            raise TfpruneError(f"could not find the layer that owns {wrapper.name}; strip it with its bake()")
    return model
