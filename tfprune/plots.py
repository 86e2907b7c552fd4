"""The PNGs: sparsity against accuracy (MNIST challenge) and % non-zero against step (gradual pruning)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def sparsity_vs_accuracy(rows: list[dict], path: str, title: str) -> None:
    """One curve per (method, fine_tuned): accuracy (%) against measured sparsity of the prunable kernels."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {("weight", False): ("tab:blue", "-o"), ("unit", False): ("tab:orange", "-s"),
              ("weight", True): ("tab:blue", "--o"), ("unit", True): ("tab:orange", "--s")}
    for (method, tuned), (color, style) in styles.items():
        curve = [r for r in rows if r["method"] == method and r["fine_tuned"] == tuned]
        if curve:
            label = f"{method} pruning, {'fine-tuned' if tuned else 'one-shot'}"
            ax.plot([100 * r["sparsity_prunable"] for r in curve], [100 * r["accuracy"] for r in curve],
                    style, color=color, label=label, markersize=4, markerfacecolor="white" if tuned else color)
    ax.set_xlabel("sparsity of the prunable kernels (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def lenet_sparsity_vs_accuracy(rows: list[dict], path: str, title: str) -> None:
    """One curve per (method, pattern) of the LeNet sweep: accuracy (%) against the measured sparsity of the
    five kernels; the dense model as a horizontal line."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        if row["method"] == "dense":
            ax.axhline(100 * row["accuracy"], color="grey", linestyle=":", label="dense")
    curves = dict.fromkeys((r["method"], r["pattern"]) for r in rows if r["method"] != "dense")
    for method, pattern in curves:
        curve = sorted((r for r in rows if r["method"] == method and r["pattern"] == pattern),
                       key=lambda r: r["measured_sparsity"])
        ax.plot([100 * r["measured_sparsity"] for r in curve], [100 * r["accuracy"] for r in curve],
                "-o" if pattern == "irregular" else "--s", label=f"{method}, {pattern}", markersize=4)
    ax.set_xlabel("sparsity of the five kernels (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def nonzero_vs_step(history: list[dict], path: str, title: str) -> None:
    """One line per pruned tensor (% non-zero of its kernel) and the overall line, against the global step."""
    steps = [row["step"] for row in history]
    fig, ax = plt.subplots(figsize=(8, 5))
    labels = list(history[0]["nonzero_pct"]) if history else []
    cmap = plt.get_cmap("viridis", max(1, len(labels)))
    for i, label in enumerate(labels):
        ax.plot(steps, [row["nonzero_pct"][label] for row in history], color=cmap(i), linewidth=1, alpha=0.8,
                label=label if len(labels) <= 12 else None)
    ax.plot(steps, [row["nonzero_pct_all"] for row in history], color="black", linewidth=2, label="all pruned tensors")
    ax.plot(steps, [100 * (1 - row["target_sparsity"]) for row in history], color="red", linestyle=":", label="schedule target")
    ax.set_xlabel("training step")
    ax.set_ylabel("% non-zero weights")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
