"""An embedding + LSTM text classifier whose token pruner keeps the (1 - rate) most significant tokens
before the recurrent layer, so the LSTM runs over fewer steps.

Significance is learned with the classifier: a Dense layer scores every embedded token, and the embedding
is scaled by sigmoid(score) before the selection, so the loss reaches the scorer through the kept tokens.
Rate 0 builds no pruner (no scorer, no gate): the plain LSTM the pruned ones are compared with.
"""
from __future__ import annotations

from tfprune._keras import keras
from tfprune.errors import TfpruneError


class TokenSelector(keras.layers.Layer):
    """(embedded, mask) -> the (1 - rate) highest-scored tokens of each example, in order, gated by
    sigmoid(score), with their mask."""

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < rate < 1.0:
            raise TfpruneError(f"a token selector's rate must lie in (0, 1), got {rate:g}")
        self.rate = float(rate)
        self.score = keras.layers.Dense(1, name="score")

    def call(self, embedded, mask):
        import tensorflow as tf

        from tfprune.tokens import select

        scores = tf.squeeze(self.score(embedded), -1)
        gated = embedded * tf.sigmoid(scores)[..., None]
        kept, mask, _ = select(gated, mask, scores, self.rate, keep_first=False)
        return kept, mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class LSTMClassifier(keras.Model):
    """input_ids (and attention_mask; 0 marks padding) -> logits (`num_labels`; 1 for regression)."""

    def __init__(self, vocab_size: int, num_labels: int, rate: float = 0.0, embedding_dim: int = 128,
                 units: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.rate, self.vocab_size, self.num_labels = float(rate), vocab_size, num_labels
        self.embedding_dim, self.units = embedding_dim, units
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.selector = TokenSelector(rate, name="selector") if rate > 0 else None
        self.lstm = keras.layers.LSTM(units, name="lstm")
        self.head = keras.layers.Dense(num_labels, name="head")

    def call(self, inputs, training=False):
        import tensorflow as tf

        mask = tf.cast(inputs["attention_mask"], tf.float32)
        x = self.embedding(inputs["input_ids"])
        if self.selector is not None:
            x, mask = self.selector(x, mask)
        return self.head(self.lstm(x, mask=tf.cast(mask, tf.bool), training=training))

    def get_config(self):
        return {"vocab_size": self.vocab_size, "num_labels": self.num_labels, "rate": self.rate,
                "embedding_dim": self.embedding_dim, "units": self.units}
