"""Search for a token pruning schedule: the per-layer rates that keep the dev metric highest at a target
speed-up (encoder FLOPs on the dev set's real lengths).

Greedy, on a fine-tuned model with the pruner at inference only: from no pruning, every step tries raising
each layer's rate by `step` and takes the move that loses the least metric per unit of speed-up gained (a
move that loses nothing: the one that gains most), until the target is reached. The last layer gets no
pruner (only [CLS] goes on to the pooler, so it would save nothing). Simpler than PoWER-BERT's learned soft
extract; the found schedule is then fine-tuned with (`train_glue.py --init-from ... --token-pruning ...`).
"""
from __future__ import annotations

from tfprune.errors import TfpruneError


def greedy_schedule(evaluate, speedup, num_layers: int, target: float, step: float = 0.1,
                    max_rate: float = 0.9, log=None) -> dict:
    """The schedule found, its metric and speed-up, and every step taken.

    Args:
        evaluate: rates -> the dev metric (higher is better).
        speedup: rates -> the speed-up over no pruning.
        target: the speed-up to reach (> 1).
        step: how much a move raises one layer's rate.
        max_rate: no layer's rate goes above it.
        log: called with each step's record (progress).
    Raises:
        TfpruneError: a target the largest rates cannot reach.
    """
    if not target > 1.0:
        raise TfpruneError(f"the target speed-up must be > 1, got {target:g}")
    if not 0.0 < step < 1.0 or not 0.0 < max_rate < 1.0:
        raise TfpruneError(f"step and max_rate must lie in (0, 1), got {step:g} and {max_rate:g}")
    ceiling = [max_rate] * (num_layers - 1) + [0.0]
    if speedup(ceiling) < target:
        raise TfpruneError(f"a speed-up of {target:g}x is out of reach: rates of {max_rate:g} after every layer but "
                           f"the last give {speedup(ceiling):.2f}x")
    rates = [0.0] * num_layers
    metric, gained = evaluate(rates), 1.0
    steps = [{"rates": list(rates), "metric": metric, "speedup": gained}]
    if log:
        log(steps[-1])
    while gained < target:
        best = None
        for layer in range(num_layers - 1):
            if rates[layer] + step > max_rate + 1e-9:
                continue
            candidate = list(rates)
            candidate[layer] = round(candidate[layer] + step, 6)
            faster = speedup(candidate)
            if faster <= gained:
                continue
            value = evaluate(candidate)
            cost = (max(0.0, metric - value) / (faster - gained), -faster)  # metric lost per speed-up gained
            if best is None or cost < best[0]:
                best = (cost, candidate, value, faster)
        if best is None:  # unreachable after the check above; a guard against an endless loop
            raise TfpruneError(f"no move raises the speed-up above {gained:.2f}x")
        _, rates, metric, gained = best
        steps.append({"rates": list(rates), "metric": metric, "speedup": gained})
        if log:
            log(steps[-1])
    return {"rates": rates, "metric": metric, "speedup": gained, "steps": steps}
