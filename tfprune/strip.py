"""Stripping wrappers (zeros baked into plain Dense layers) and sparsity reports."""
from __future__ import annotations

import numpy as np
import tf_keras as keras


def tensor_label(wrapper) -> str:
    """A readable name for a wrapped kernel in logs and plots: the wrapper's `label` if the injector set one
    (bert.py uses "layer_0/ffn_up"), else the kernel's variable path without the wrapper's own scope,
    "/kernel" and ":0", else the wrapper's name."""
    if getattr(wrapper, "label", None):
        return wrapper.label
    parts = [p for p in wrapper.kernel.name.split(":")[0].split("/") if p != wrapper.name]
    if parts and parts[-1] == "kernel":
        parts.pop()
    return "/".join(parts) or wrapper.name


def _replace_attribute(parent, old, new) -> bool:
    for attr, value in list(vars(parent).items()):
        if value is old:
            setattr(parent, attr, new)
            return True
    return False


def strip_model(model):
    """Replace every PrunableDense by its Dense with kernel * mask baked in, and return the model.

    Functional and Sequential models are rebuilt around the same layer objects (weights shared, nothing
    copied), nested models included; subclassed models such as HF's are changed in place: their wrappers
    live as attributes of a parent layer and the Dense is put back there, with its original variables, so
    weight names and `save_pretrained` are as before wrapping.
    """
    from tfprune.layers import PrunableDense, prunable_layers

    if isinstance(model, PrunableDense):
        return model.bake()
    if isinstance(model, keras.Model) and (model._is_graph_network or isinstance(model, keras.Sequential)):
        def reuse(layer):  # every level strips its own wrappers
            if isinstance(layer, PrunableDense) or (isinstance(layer, keras.Model) and prunable_layers(layer)):
                return strip_model(layer)
            return layer

        return keras.models.clone_model(model, clone_function=reuse)
    for wrapper in prunable_layers(model):
        wrapper.bake()
        for parent in (model, *model.submodules):  # the owner may be the model itself
            if parent is not wrapper and _replace_attribute(parent, wrapper, wrapper.layer):
                break
        else:
            raise ValueError(f"could not find the layer that owns {wrapper.name}; strip it by hand")
    return model


def zero_fraction(variables) -> float:
    """Fraction of zeros over `variables` taken together, read from the values (not from masks)."""
    zeros = sum(int(np.prod(v.shape)) - int(np.count_nonzero(np.asarray(v))) for v in variables)
    return zeros / sum(int(np.prod(v.shape)) for v in variables)


def sparsity_report(model, only_pruned: bool = False) -> dict:
    """Per 2-D kernel: shape, zeros, % non-zero; and totals. `only_pruned` limits it to wrapped kernels.

    Reads the kernels themselves, not the masks, so it reports what a checkpoint or export really holds.
    """
    from tfprune.layers import prunable_layers

    if only_pruned:
        kernels = [layer.kernel for layer in prunable_layers(model)]
    else:
        kernels = [w for w in model.weights if len(w.shape) == 2 and "embeddings" not in w.name]
    rows, zeros_total, size_total = [], 0, 0
    for kernel in kernels:
        values = kernel.numpy()
        zeros = int(values.size - np.count_nonzero(values))
        rows.append({"name": kernel.name.split(":")[0], "shape": list(values.shape), "size": int(values.size),
                     "zeros": zeros, "nonzero_pct": 100.0 * (values.size - zeros) / values.size})
        zeros_total += zeros
        size_total += values.size
    total = {"size": int(size_total), "zeros": int(zeros_total),
             "nonzero_pct": 100.0 * (size_total - zeros_total) / size_total if size_total else 100.0}
    return {"tensors": rows, "total": total}


def format_report(report: dict) -> str:
    """The report as a markdown table."""
    from tfprune.cli import markdown_table

    rows = [[r["name"], "x".join(map(str, r["shape"])), f"{r['zeros']:,}", f"{r['nonzero_pct']:.2f}"] for r in report["tensors"]]
    total = report["total"]
    rows.append(["**total**", f"{total['size']:,} weights", f"{total['zeros']:,}", f"{total['nonzero_pct']:.2f}"])
    return markdown_table(["tensor", "shape", "zeros>", "% non-zero>"], rows)
