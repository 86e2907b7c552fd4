"""Reports as data: per-tensor zero counts read from the weights, names for logs, markdown tables, JSON."""
from __future__ import annotations

import json

import numpy as np

from tfprune import registry


def tensor_label(wrapper) -> str:
    """A readable name for a wrapped weight in logs and plots: the wrapper's `label` if the code that wrapped
    it set one ("layer_0/ffn_up", a path), else the weight's variable path without the wrapper's own scope,
    "/kernel" and ":0", else the wrapper's name."""
    if getattr(wrapper, "label", None):
        return wrapper.label
    parts = [p for p in wrapper.kernel.name.split(":")[0].split("/") if p != wrapper.name]
    if parts and parts[-1] in ("kernel", "depthwise_kernel"):
        parts.pop()
    return "/".join(parts) or wrapper.name


def zero_fraction(variables) -> float:
    """Fraction of zeros over `variables` taken together, read from the values (not from masks)."""
    zeros = sum(int(np.prod(v.shape)) - int(np.count_nonzero(np.asarray(v))) for v in variables)
    return zeros / sum(int(np.prod(v.shape)) for v in variables)


def prunable_weights(model) -> list:
    """The prunable weight of every layer of a registered type under `model`, wrapped or not, in the order
    of `model.weights`."""
    from tfprune.layers import PrunableLayer

    registered = set()
    for module in [model, *getattr(model, "submodules", ())]:
        if registry.is_prunable(module) and not isinstance(module, PrunableLayer):
            weight = getattr(module, registry.entry_for(module).weight, None)
            if weight is not None:
                registered.add(id(weight))
    return [w for w in model.weights if id(w) in registered]


def sparsity_report(model, only_pruned: bool = False) -> dict:
    """Zeros per prunable weight and in total, read from the weights themselves (what a checkpoint or an
    export really holds), not from the masks.

    Args:
        model: any model or layer.
        only_pruned: only the wrapped weights; else every layer of a registered type (Dense, convolutions,
            ...), wrapped or not: embeddings, norms and biases are not counted.
    Returns:
        {"tensors": [{"name", "shape", "size", "zeros", "nonzero_pct"}], "total": {"size", "zeros",
        "nonzero_pct"}}.
    """
    from tfprune.layers import prunable_layers

    kernels = [layer.kernel for layer in prunable_layers(model)] if only_pruned else prunable_weights(model)
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


def markdown_table(columns: list[str], rows: list[list]) -> str:
    """A markdown table; columns whose title ends in ">" are right-aligned (numbers), the ">" dropped."""
    titles = [c.rstrip(">") for c in columns]
    rule = ["---:" if c.endswith(">") else "---" for c in columns]
    lines = ["| " + " | ".join(titles) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def format_report(report: dict, groups: list[dict] | None = None) -> str:
    """`sparsity_report` as a markdown table; with `structure.group_report` rows, a units table after it."""
    rows = [[r["name"], "x".join(map(str, r["shape"])), f"{r['zeros']:,}", f"{r['nonzero_pct']:.2f}"] for r in report["tensors"]]
    total = report["total"]
    rows.append(["**total**", f"{total['size']:,} weights", f"{total['zeros']:,}", f"{total['nonzero_pct']:.2f}"])
    text = markdown_table(["tensor", "shape", "zeros>", "% non-zero>"], rows)
    if groups:
        text += "\n\n" + markdown_table(["group", "units>", "kept>", "alive in weights>"],
                                        [[g["name"], g["units"], g["kept"], g["alive_in_weights"]] for g in groups])
    return text


def write_json(path: str, payload: dict) -> None:
    """`payload` as indented JSON; numpy scalars and arrays become numbers and lists."""
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False, default=_jsonable)
        handle.write("\n")


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
