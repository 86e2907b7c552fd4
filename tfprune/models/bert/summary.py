"""Where BERT's parameters are: counts per part, computed from the model's variables (not its config)."""
from __future__ import annotations

import numpy as np

from tfprune.report import markdown_table


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
    """The summary as text: a markdown table and where pruning pays."""
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
