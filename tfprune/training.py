"""Fine-tuning plumbing for sequence classifiers: evaluation on a dev set, step scalars, epoch checkpoints."""
from __future__ import annotations

import os
import shutil

import numpy as np
import tensorflow as tf

from tfprune._keras import keras
from tfprune.errors import TfpruneError
from tfprune.tasks.metrics import accuracy_and_f1


def logits_function(model):
    """features -> logits of a HF classifier, as one retrace-tolerant tf.function kept on the model, so
    evaluation after every epoch and the ONNX parity checks do not trace it again."""
    forward = getattr(model, "_tfprune_forward", None)
    if forward is None:
        forward = tf.function(lambda features: model(features, training=False).logits, reduce_retracing=True)
        model._tfprune_forward = forward
    return forward


def predict_logits(model, batches) -> np.ndarray:
    """Logits for every example of a PairBatches, in order."""
    forward = logits_function(model)
    return np.concatenate([forward(batches.batch(i)[0]).numpy() for i in range(len(batches))])


def evaluate(model, batches, metrics=accuracy_and_f1) -> dict:
    """`metrics(labels, predicted classes)` over every example of a PairBatches."""
    return metrics(batches.labels, predict_logits(model, batches).argmax(axis=1))


class EvalAndLog(keras.callbacks.Callback):
    """Every `log_every` steps: loss and learning rate; after each epoch: the dev metrics (`metrics`, as in
    `evaluate`), as `eval/<name>`. All at the optimizer's step, in the same TensorBoard run as the pruning
    scalars."""

    def __init__(self, writer, eval_batches, log_every: int = 10, metrics=accuracy_and_f1):
        super().__init__()
        self._supports_tf_logs = True
        self.writer, self.eval_batches, self.log_every, self.metrics = writer, eval_batches, log_every, metrics
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
        metrics = evaluate(self.model, self.eval_batches, self.metrics)
        step = self._step()
        self.evaluations.append({"epoch": epoch + 1, "step": step, **metrics})
        with self.writer.as_default(step=step):
            for name, value in metrics.items():
                tf.summary.scalar(f"eval/{name}", value)
        self.writer.flush()
        print(f"\nepoch {epoch + 1}: dev " + ", ".join(f"{name} {100 * value:.2f} %" for name, value in metrics.items()))


class EpochCheckpoint(keras.callbacks.Callback):
    """Model (masks included), optimizer (its step is the schedule's step) and epoch, after every epoch."""

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._manager = None

    def manager(self, model):
        if self._manager is None:
            checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch)
            self._manager = tf.train.CheckpointManager(checkpoint, self.directory, max_to_keep=1)
        return self._manager

    def restore(self, model) -> int:
        """Restore the latest checkpoint into `model` (optimizer built first); returns the epochs done."""
        manager = self.manager(model)
        if manager.latest_checkpoint is None:
            raise TfpruneError(f"no checkpoint to resume from in {self.directory}")
        if isinstance(model.optimizer, keras.optimizers.Optimizer):  # the new optimizers create slots in build
            model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations  # noqa: B018  (legacy optimizers create it on first access)
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager(self.model).save()

    def clear(self):
        if os.path.isdir(self.directory):
            shutil.rmtree(self.directory)
