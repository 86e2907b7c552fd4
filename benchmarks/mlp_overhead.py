"""Training-time overhead of PrunableDense + GradualPruningCallback on the FOR.ai MLP, against plain Dense.

Same run, same data, same batches. The load of a shared machine drifts over seconds, which swamps a few
per cent when whole epochs are compared, so the models take turns step by step: each batch goes through
a train step of the dense MLP, of the wrapped MLP without the callback ("wrapper alone") and of the pruned
MLP with the callback, in an order that rotates, and each model's epoch time is the sum of its steps. The
pruned model runs what `fit` would run around its steps: the callback's hooks at every batch (mask updates
every `--frequency` steps on the Zhu & Gupta schedule to 90 %, through all timed epochs) and at epoch end.
Keras' own per-step bookkeeping, the same for every model, is left out, so the ratios are if anything
higher than under `fit`.

    python benchmarks/mlp_overhead.py            # ~2 minutes on 2 cores
    TFPRUNE_NATIVE=0 python benchmarks/mlp_overhead.py    # without the compiled ops (mask updates, masked steps)
"""
import argparse
import statistics
import sys
import time

# isort: off
from tfprune import cli  # first: it quiets TensorFlow's start-up
import numpy as np
import tensorflow as tf

from tfprune import GradualPruningCallback, PolynomialDecay, native
from tfprune._keras import keras
from tfprune.models.mlp import build_mlp
# isort: on


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=60000, help="images per epoch (random data, MNIST-sized)")
    parser.add_argument("--batch-size", type=int, default=256, help="mnist_challenge.py's training batch")
    parser.add_argument("--frequency", type=int, default=10, help="mask update every N steps")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per model")
    args = parser.parse_args(argv)
    cli.require_positive(args, "samples", "batch_size", "frequency", "epochs")

    rng = np.random.default_rng(0)
    steps_per_epoch = -(-args.samples // args.batch_size)
    batches = [(tf.constant(rng.random((min(args.batch_size, args.samples - i * args.batch_size), 784), np.float32)),
                tf.constant(rng.integers(0, 10, min(args.batch_size, args.samples - i * args.batch_size))))
               for i in range(steps_per_epoch)]
    total_steps = steps_per_epoch * (args.epochs + 1)

    steps, callbacks = {}, {}
    for name, prunable in (("dense", False), ("wrapped", True), ("pruned", True)):
        model = build_mlp(prunable=prunable, seed=0)
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        steps[name] = tf.function(model.train_step, reduce_retracing=True)  # what fit's train_function runs
        callbacks[name] = keras.callbacks.CallbackList(
            [GradualPruningCallback(PolynomialDecay(0.0, 0.9, 0, total_steps, args.frequency))] if name == "pruned"
            else [], model=model)
        callbacks[name].on_train_begin()
    pruning = callbacks["pruned"].callbacks[0]

    names, times = list(steps), {name: [] for name in steps}
    for epoch in range(args.epochs + 1):  # the first epoch warms up (tracing) and is not timed
        spent = dict.fromkeys(names, 0.0)
        for name in names:
            start = time.perf_counter()
            callbacks[name].on_epoch_begin(epoch)
            spent[name] += time.perf_counter() - start
        for index, batch in enumerate(batches):
            for name in names[index % 3:] + names[:index % 3]:
                start = time.perf_counter()
                callbacks[name].on_train_batch_begin(index)
                steps[name](batch)["loss"].numpy()
                spent[name] += time.perf_counter() - start
        for name in names:
            start = time.perf_counter()
            callbacks[name].on_epoch_end(epoch)
            spent[name] += time.perf_counter() - start
            if epoch:
                times[name].append(spent[name])
        if not epoch:
            warm_up_seconds = pruning.seconds

    def ratio(name):
        per_epoch = [t / d for t, d in zip(times[name], times["dense"])]
        return f"{statistics.median(per_epoch):.3f}x median (epochs: " + ", ".join(f"{r:.3f}" for r in per_epoch) + ")"

    updates = sum(1 for s in range(steps_per_epoch, total_steps) if pruning.schedule.should_update(s))
    print(f"epoch of {args.samples} images, batch {args.batch_size}, mask update every {args.frequency} steps "
          f"({updates // args.epochs} updates an epoch)")
    for name in names:
        print(f"  {name:7s} epoch s: " + ", ".join(f"{t:.2f}" for t in times[name]))
    print(f"ratio pruned/dense: {ratio('pruned')}")
    print(f"  of which the wrapper alone (kernels kept masked through each step, tfprune/kernel_mask.py): {ratio('wrapped')}")
    callback_s = statistics.median(p - w for p, w in zip(times["pruned"], times["wrapped"]))
    print(f"  and the callback: {callback_s:.2f} s an epoch more than the wrapper alone, "
          f"{1e3 * callback_s / max(1, updates // args.epochs):.1f} ms per mask update")
    own = (pruning.seconds - warm_up_seconds) / args.epochs
    print(f"  the callback's own time (its hooks at every batch included): {own:.3f} s an epoch, "
          f"{1e3 * own / max(1, updates // args.epochs):.1f} ms per "
          "mask update; updates by " + ("the compiled op (tfprune/csrc)" if native.ops() is not None else
                                        "numpy + XLA (the op is not built, or TFPRUNE_NATIVE=0)"))
    print(f"final sparsity of the pruned MLP: {pruning.history[-1]['nonzero_pct_all']:.2f} % non-zero")


if __name__ == "__main__":
    sys.exit(cli.run(main))
