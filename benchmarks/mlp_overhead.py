"""Training-time overhead of PrunableDense + GradualPruningCallback on the FOR.ai MLP, against plain Dense.

Same run, same data, same batch: epochs of the two models alternate (dense, pruned, dense, ...) so drift in
machine speed hits both. The headline ratio compares the fastest epoch of each (the least disturbed by other
load on a shared machine); the ratio of medians is printed beside it. Pruning runs throughout the timed
epochs (Zhu & Gupta schedule to 90 %, a mask update every `--frequency` steps).

    python benchmarks/mlp_overhead.py            # ~3 minutes on 2 cores
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tfprune  # noqa: E402,F401  (tf-keras before TensorFlow)
import tf_keras as keras  # noqa: E402

from tfprune import GradualPruningCallback, PolynomialDecay  # noqa: E402
from tfprune.mlp import build_mlp  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=60000, help="images per epoch (random data, MNIST-sized)")
    parser.add_argument("--batch-size", type=int, default=256, help="mnist_challenge.py's training batch")
    parser.add_argument("--frequency", type=int, default=10, help="mask update every N steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per model")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.samples)
    steps_per_epoch = -(-args.samples // args.batch_size)
    total_steps = steps_per_epoch * (args.repeats + 1)

    models = {}  # "wrapped": PrunableDense without the callback, to split the overhead in two
    for name, prunable in (("dense", False), ("wrapped", True), ("pruned", True)):
        model = build_mlp(prunable=prunable, seed=0)
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        models[name] = model
    callback = GradualPruningCallback(PolynomialDecay(0.0, 0.9, 0, total_steps, args.frequency))

    times = {name: [] for name in models}
    for repeat in range(args.repeats + 1):  # the first epoch of each warms up (tracing) and is not timed
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0,
                      callbacks=[callback] if name == "pruned" else [])
            if repeat:
                times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"epoch of {args.samples} images, batch {args.batch_size}, mask update every {args.frequency} steps "
          f"({steps_per_epoch // args.frequency} updates an epoch)")
    for name in times:
        print(f"  {name:6s} epochs: " + ", ".join(f"{t:.2f}" for t in times[name]) + " s")
    print(f"ratio pruned/dense, fastest epochs: {best['pruned'] / best['dense']:.3f}x  "
          f"(medians: {median['pruned'] / median['dense']:.3f}x)")
    print(f"  of which the wrapper alone (masked forward, masked gradient, mask constraint): "
          f"{best['wrapped'] / best['dense']:.3f}x fastest, {median['wrapped'] / median['dense']:.3f}x median")
    updates = sum(1 for s in range(total_steps) if callback.schedule.should_update(s))
    print(f"  and the callback itself: {callback.seconds:.2f} s over {total_steps} steps, "
          f"{1e3 * callback.seconds / max(1, updates):.1f} ms per mask update (logging included)")


if __name__ == "__main__":
    main()
