"""Fine-tuning plumbing for sequence classifiers: evaluation on a dev set, step scalars, checkpoints that
resume bitwise, early stopping on the dev metric."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from tfprune._keras import keras
from tfprune.errors import TfpruneError, first_line
from tfprune.tasks.glue import FEATURES
from tfprune.tasks.metrics import accuracy_and_f1


def logits_function(model):
    """features -> logits of a classifier (a Hugging Face model's `.logits`, or a Keras model's output), one
    tf.function kept on the model and traced once for every batch size and length (int32 PairBatches
    features), so evaluation after every epoch, the ONNX parity checks, timing and a schedule search (after
    `forget_compiled_functions`) each trace it once."""
    forward = getattr(model, "_tfprune_forward", None)
    if forward is None:
        def logits(features):
            outputs = model(features, training=False)
            return getattr(outputs, "logits", outputs)

        signature = [{key: tf.TensorSpec((None, None), tf.int32, name=key) for key in FEATURES}]
        forward = tf.function(logits, input_signature=signature)
        model._tfprune_forward = forward
    return forward


def forget_compiled_functions(model) -> None:
    """Drop the traced forward passes kept on `model` (logits_function's and Keras'), after a change that
    tracing fixes in the graph, such as a new token pruning schedule."""
    model.__dict__.pop("_tfprune_forward", None)
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def predict_logits(model, batches) -> np.ndarray:
    """Logits for every example of a PairBatches, in order."""
    forward = logits_function(model)
    return np.concatenate([forward(batches.batch(i)[0]).numpy() for i in range(len(batches))])


def evaluate(model, batches, metrics=accuracy_and_f1, regression: bool = False) -> dict:
    """`metrics(labels, predictions)` over every example of a PairBatches: predicted classes, or the single
    output's scores when `regression`."""
    logits = predict_logits(model, batches)
    return metrics(batches.labels, logits[:, 0] if regression else logits.argmax(axis=1))


def checkpointable_dropout() -> None:
    """Make Keras layers built from now on draw dropout from a tf.random.Generator, whose state is a variable
    a checkpoint can save, instead of TF1 stateful random ops, whose state lives in the op kernels and dies
    with the process. Call before the model is built."""
    keras.backend.experimental.enable_tf_random_generator()


def random_generators(model) -> dict[str, tf.random.Generator]:
    """The tf.random.Generator of every layer of `model` that draws random numbers (dropout), keyed by
    position. Created here (tf-keras would create them at the first training trace) from Python's `random`
    in layer order, so a fresh run and a resumed one build the same generators before the checkpoint
    overwrites their state. Layers built before `checkpointable_dropout` have none and are left out."""
    found = {}
    for layer in model._flatten_layers(include_self=True):
        generator = getattr(layer, "_random_generator", None)
        if generator is None or not hasattr(generator, "_maybe_init"):
            continue
        generator._maybe_init()
        if isinstance(getattr(generator, "_generator", None), tf.random.Generator):
            found[str(len(found))] = generator._generator
    return found


class EvalAndLog(keras.callbacks.Callback):
    """Every `log_every` steps: loss and learning rate; after each epoch: the dev metrics (`metrics`, as in
    `evaluate`), as `eval/<name>`. All at the optimizer's step, in the same TensorBoard run as the pruning
    scalars."""

    def __init__(self, writer, eval_batches, log_every: int = 10, metrics=accuracy_and_f1, regression: bool = False):
        super().__init__()
        self._supports_tf_logs = True
        self.writer, self.eval_batches, self.log_every, self.metrics = writer, eval_batches, log_every, metrics
        self.regression = regression
        self.evaluations: list[dict] = []

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.log_every and step % self.log_every == 0 and logs and "loss" in logs:
            lr = self.model.optimizer.learning_rate
            lr = lr(self.model.optimizer.iterations) if callable(lr) else lr
            with self.writer.as_default(step=step):
                tf.summary.scalar("train/loss", logs["loss"])
                tf.summary.scalar("train/learning_rate", lr)

    def on_epoch_end(self, epoch, logs=None):
        metrics = evaluate(self.model, self.eval_batches, self.metrics, self.regression)
        step = self._step()
        self.evaluations.append({"epoch": epoch + 1, "step": step, **metrics})
        with self.writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(f"eval/{name}", value)
        self.writer.flush()
        print(f"\nepoch {epoch + 1}: dev {format_metrics(metrics)}")


def format_metrics(metrics: dict) -> str:
    """`accuracy 84.31, f1 88.90` (GLUE's scale: x 100)."""
    return ", ".join(f"{name} {100 * value:.2f}" for name, value in metrics.items())


class BestEpoch(keras.callbacks.Callback):
    """Early stopping on a dev metric that keeps the best epoch's weights: after each epoch (placed after
    `logger`, the EvalAndLog whose evaluations it reads), the weights are written to `directory` when
    `metric` improved, and training stops after `patience` epochs without improvement. `restore()` loads the
    best weights back. Its state is a function of the evaluations and the file, so a resumed run (its
    evaluations from the checkpoint) continues it exactly.
    """

    def __init__(self, logger: EvalAndLog, metric: str, patience: int, directory: str):
        super().__init__()
        self.logger, self.metric, self.patience, self.directory = logger, metric, patience, directory

    @property
    def evaluations(self) -> list[dict]:
        return self.logger.evaluations

    def best(self) -> dict | None:
        """The first evaluation with the highest `metric` (None before any)."""
        return max(self.evaluations, key=lambda row: row[self.metric], default=None)

    def done(self) -> bool:
        """`patience` epochs have passed since the best one."""
        best = self.best()
        return best is not None and self.evaluations[-1]["epoch"] - best["epoch"] >= self.patience

    def _checkpoint(self, model):
        return tf.train.Checkpoint(model=model)

    def on_epoch_end(self, epoch, logs=None):
        if self.evaluations and self.best() is self.evaluations[-1]:
            self._checkpoint(self.model).write(os.path.join(self.directory, "best"))
        if self.done():
            self.model.stop_training = True

    def restore(self, model) -> dict | None:
        """Load the best epoch's weights into `model`; its evaluation row (None: nothing was saved)."""
        best = self.best()
        if best is not None:
            self._checkpoint(model).read(os.path.join(self.directory, "best")).expect_partial()
        return best


class RunCheckpoint(keras.callbacks.Callback):
    """Everything a resumed run needs to continue as if it had never stopped: the model (masks included),
    the optimizer (its step is the schedule's step), the position in the data (epoch, batches done in it),
    the run's history (`history_source()`: dev evaluations, the sparsity log) and the settings it ran with.
    Saved after every epoch and every `every` optimizer steps (0: epochs only); the last one is kept.

    Data order and RNG: the caller replays the data order from the seed and the epochs done; dropout's
    state is saved when the model's layers draw from tf.random.Generator (`checkpointable_dropout` before
    the model is built, then `generators=random_generators(model)`). `state`: other variables the run
    keeps outside the model (e.g. ADMM's Z, U and rho), a dict of variables or lists of them.
    """

    def __init__(self, directory: str, settings: dict, every: int = 0, history_source=None, generators=None,
                 state: dict | None = None):
        super().__init__()
        self.directory, self.every, self.history_source = directory, every, history_source
        self.generators, self.state = dict(generators or {}), dict(state or {})
        self.settings = dict(settings)
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.batch = tf.Variable(0, dtype=tf.int64, trainable=False)  # batches of `epoch` done
        self._history = tf.Variable("{}", dtype=tf.string, trainable=False)
        self._settings = tf.Variable(json.dumps(self.settings, sort_keys=True), dtype=tf.string, trainable=False)
        self._manager, self._current_epoch = None, 0
        self.offset = 0  # batches of the current epoch done before this fit (a resumed run's first epoch)

    def manager(self, model):
        if self._manager is None:
            checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch,
                                             batch=self.batch, history=self._history, settings=self._settings,
                                             rng=self.generators, state=self.state)
            self._manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=1)
        return self._manager

    def restore(self, model) -> tuple[int, int, dict]:
        """Restore the latest checkpoint into `model` (optimizer built first): (epochs done, batches done in
        the next epoch, the history saved with it).

        Raises:
            TfpruneError: no checkpoint, one that cannot be read (truncated, another model), or one written
                with other settings (the message names them).
        """
        manager = self.manager(model)
        latest = manager.latest_checkpoint
        if latest is None:
            raise TfpruneError(f"no checkpoint to resume from in {self.directory}")
        if isinstance(model.optimizer, keras.optimizers.Optimizer):  # the new optimizers create slots in build
            model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations  # noqa: B018  (legacy optimizers create it on first access)
        try:
            manager.checkpoint.restore(latest).assert_existing_objects_matched()
        # TensorFlow's reader raises IndexError on a truncated data file, OpError and the rest otherwise
        except (tf.errors.OpError, AssertionError, ValueError, IndexError, KeyError) as error:
            raise TfpruneError(f"checkpoint {latest} cannot be restored (truncated, or written for another "
                               f"model): {first_line(error, 160)}") from None
        saved = json.loads(self._settings.numpy().decode())
        differ = sorted(k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k))
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} then, {self.settings.get(k)!r} now" for k in differ[:4])
            raise TfpruneError(f"checkpoint {latest} was written with other settings ({shown}); resume with the "
                               "same settings or start a new run")
        return int(self.epoch.numpy()), int(self.batch.numpy()), json.loads(self._history.numpy().decode())

    def save(self, epoch: int, batch: int) -> None:
        self.epoch.assign(epoch)
        self.batch.assign(batch)
        if self.history_source is not None:
            self._history.assign(json.dumps(self.history_source(), default=_plain))
        try:
            self.manager(self.model).save(checkpoint_number=int(self.model.optimizer.iterations.numpy()))
        except tf.errors.OpError as error:  # a full or read-only disk, as TensorFlow reports it
            raise TfpruneError(f"cannot write a checkpoint in {self.directory}: {first_line(error, 160)}") from None

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.every and int(self.model.optimizer.iterations.numpy()) % self.every == 0:
            self.save(self._current_epoch, self.offset + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.offset = 0
        self.save(epoch + 1, 0)

    def clear(self):
        if os.path.isdir(self.directory):
            shutil.rmtree(self.directory)


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)
