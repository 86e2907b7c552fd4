"""Token (sequence) pruning for TF BERT: after every encoder layer with a non-zero rate, only the most
significant tokens go on, so later layers run on shorter sequences (PoWER-BERT's hard extract).

A token's significance is the attention it receives in that layer: the attention probabilities averaged over
heads and summed over the real queries, its attention to itself left out. [CLS] is always kept (the pooler
reads it), [SEP] too when asked; padding ranks last. Each example keeps ceil((1 - rate) x its current number
of real tokens); the batch is cut to the longest of those, the kept tokens gathered in their original order
(real ones first, then padding), and the attention mask carried along.

The encoder of a built TFBert* model is switched, in place, to `TokenPruningEncoder` (same layers, same
weights, same names), so fine-tuning, `fit`, weight pruning, `save_pretrained` and ONNX export work unchanged.
The schedule is stored in the config (`tfprune_token_pruning`), and tfprune's loaders apply it again; plain
`from_pretrained` would load the same weights without the pruner.
"""
from __future__ import annotations

from tfprune.errors import TfpruneError
from tfprune.tokens import kept_count, select

TOKEN_PRUNING_KEY = "tfprune_token_pruning"


def parse_rates(text: str) -> list[float]:
    """'0,0,0.1,0.2' -> [0.0, 0.0, 0.1, 0.2] (raises TfpruneError on anything else)."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise TfpruneError(f"a token pruning schedule is a comma-separated list of rates, one per layer, "
                           f"e.g. 0,0,0.1,0.2,0.3,0.3; got {text!r}") from None


def check_rates(rates, num_layers: int) -> list[float]:
    """The rates as floats, checked: one per layer, each in [0, 1) (raises TfpruneError naming both)."""
    rates = [float(rate) for rate in rates]
    if len(rates) != num_layers:
        raise TfpruneError(f"the token pruning schedule lists {len(rates)} rates; the model has {num_layers} "
                           f"layers (one rate per layer, 0 for none)")
    for layer, rate in enumerate(rates):
        if not 0.0 <= rate < 1.0:  # NaN fails too
            raise TfpruneError(f"token pruning rate {rate:g} for layer {layer} is outside [0, 1) (schedule "
                               f"{','.join(f'{r:g}' for r in rates)})")
    return rates


def kept_tokens(rates, length: int) -> list[int]:
    """Tokens each layer runs on for one example of `length` real tokens (the first layer sees them all)."""
    lengths = [length]
    for rate in rates[:-1]:
        lengths.append(kept_count(rate, lengths[-1]))
    return lengths


def layer_flops(layer, tokens: int) -> int:
    """Floating-point operations of one TFBertLayer on `tokens` tokens: its six matrix products and the two
    of attention (scores, weighted values); the small element-wise rest left out."""
    hidden = layer.attention.dense_output.dense.units
    width = layer.attention.self_attention.all_head_size
    ffn = layer.intermediate.dense.units
    return 2 * tokens * (4 * hidden * width + 2 * hidden * ffn) + 4 * tokens * tokens * width


def flops_speedup(model, rates, lengths) -> float:
    """Encoder FLOPs of `model` unpruned over those with `rates`, summed over examples of `lengths` real
    tokens (each example on its own length: the dynamic-padding baseline)."""
    from tfprune.models.bert.targets import encoder_layers

    layers = encoder_layers(model)
    dense = pruned = 0
    for length in lengths:
        dense += sum(layer_flops(layer, length) for layer in layers)
        pruned += sum(layer_flops(layer, n) for layer, n in zip(layers, kept_tokens(rates, length)))
    return dense / pruned


def token_report(model, lengths) -> dict:
    """The schedule of a token-pruned model, its mean tokens per layer over examples of `lengths` real
    tokens, and its encoder FLOPs speed-up on them."""
    schedule = schedule_of(model)
    rates = schedule["rates"] if schedule else [0.0] * len(_main_layer(model).encoder.layer)
    per_layer = [kept_tokens(rates, length) for length in lengths]
    return {**(schedule or {"rates": rates}), "examples": len(lengths),
            "mean_tokens_per_layer": [round(sum(column) / len(column), 1) for column in zip(*per_layer)],
            "flops_speedup": flops_speedup(model, rates, lengths)}


def significance(probs, mask):
    """(batch, length) attention each key receives: probs (batch, heads, queries, keys) averaged over heads,
    summed over the real queries (mask (batch, length), 1.0 for real tokens), its attention to itself left
    out (the diagonal is removed with a comparison of ranges: ops every exporter knows)."""
    import tensorflow as tf

    received = tf.reduce_mean(probs, axis=1) * mask[:, :, None]
    positions = tf.range(tf.shape(mask)[1])
    off_diagonal = tf.cast(tf.not_equal(positions[:, None], positions[None, :]), received.dtype)
    return tf.reduce_sum(received * off_diagonal, axis=1)


def additive_mask(mask):
    """(batch, 1, 1, length) mask added to attention scores, as Hugging Face's BERT builds it."""
    return (1.0 - mask)[:, None, None, :] * -10000.0


def _encoder_class():
    from transformers.modeling_tf_outputs import TFBaseModelOutputWithPastAndCrossAttentions
    from transformers.models.bert.modeling_tf_bert import TFBertEncoder

    class TokenPruningEncoder(TFBertEncoder):
        """TFBertEncoder that drops tokens after the layers with a rate (`token_pruning_rates`)."""

        def call(self, hidden_states, attention_mask, head_mask, encoder_hidden_states, encoder_attention_mask,
                 past_key_values, use_cache, output_attentions, output_hidden_states, return_dict, training=False):
            import tensorflow as tf

            if encoder_hidden_states is not None or use_cache or any(p is not None for p in past_key_values or ()):
                raise NotImplementedError("token pruning is for encoders: no cross-attention, no cache")
            mask = tf.cast(attention_mask[:, 0, 0, :] > -1.0, hidden_states.dtype)  # 0 real, -10000 padding
            sep = getattr(self, "sep_positions", None)
            protected = sep.mask if sep is not None else None
            hidden_all, attentions = (), ()
            for i, layer in enumerate(self.layer):
                rate = self.token_pruning_rates[i]
                if output_hidden_states:
                    hidden_all += (hidden_states,)
                outputs = layer(hidden_states=hidden_states, attention_mask=attention_mask, head_mask=head_mask[i],
                                encoder_hidden_states=None, encoder_attention_mask=None, past_key_value=None,
                                output_attentions=output_attentions or rate > 0, training=training)
                hidden_states = outputs[0]
                if output_attentions:
                    attentions += (outputs[1],)
                if rate > 0:
                    scores = significance(outputs[1], mask)
                    hidden_states, mask, order = select(hidden_states, mask, scores, rate, protected)
                    if protected is not None:
                        protected = tf.gather(protected, order, batch_dims=1)
                    attention_mask = additive_mask(mask)
            if output_hidden_states:
                hidden_all += (hidden_states,)
            if not return_dict:
                return tuple(v for v in (hidden_states, hidden_all or None, attentions or None) if v is not None)
            return TFBaseModelOutputWithPastAndCrossAttentions(
                last_hidden_state=hidden_states, hidden_states=hidden_all or None, attentions=attentions or None)

    return TokenPruningEncoder


def _embeddings_class():
    from transformers.models.bert.modeling_tf_bert import TFBertEmbeddings

    class SepMarkingEmbeddings(TFBertEmbeddings):
        """TFBertEmbeddings that tell the encoder where the [SEP] tokens are (kept by the token pruner)."""

        def call(self, input_ids=None, position_ids=None, token_type_ids=None, inputs_embeds=None,
                 past_key_values_length=0, training=False):
            import tensorflow as tf

            self.sep_positions.mask = (None if input_ids is None else
                                       tf.cast(tf.equal(input_ids, self.sep_positions.token_id), tf.float32))
            return super().call(input_ids, position_ids, token_type_ids, inputs_embeds, past_key_values_length,
                                training)

    return SepMarkingEmbeddings


class _SepPositions:
    """Where the [SEP] tokens of the batch being computed are: set by the embeddings, read by the encoder
    in the same call (a plain object, so Keras tracks nothing through it)."""

    def __init__(self, token_id: int):
        self.token_id, self.mask = token_id, None


def _main_layer(model):
    main = getattr(model, "bert", model)
    if not hasattr(main, "encoder") or not hasattr(main.encoder, "layer"):
        raise TfpruneError(f"token pruning needs a TF BERT model, got {type(model).__name__}")
    return main


def apply(model, rates, keep_sep: bool = False, sep_token_id: int | None = None):
    """Prune tokens after every layer of `model` (a built TFBert* model) with a rate > 0, in place; the
    schedule goes into model.config. All-zero rates put the plain encoder back. Returns the checked rates.
    `keep_sep`: [SEP] tokens (`sep_token_id`, default the config's or BERT's 102) are kept like [CLS].

    Raises:
        TfpruneError: a schedule whose length is not the number of layers, or a rate outside [0, 1).
    """
    main = _main_layer(model)
    encoder = main.encoder
    rates = check_rates(rates, len(encoder.layer))
    from transformers.models.bert.modeling_tf_bert import TFBertEmbeddings, TFBertEncoder

    pruning = any(rate > 0 for rate in rates)
    encoder.__class__ = _encoder_class() if pruning else TFBertEncoder
    encoder.token_pruning_rates = tuple(rates)
    embeddings = main.embeddings
    sep_token_id = sep_token_id or getattr(model.config, "sep_token_id", None) or 102
    sep = _SepPositions(sep_token_id) if pruning and keep_sep else None
    encoder.sep_positions = embeddings.sep_positions = sep
    embeddings.__class__ = _embeddings_class() if sep else TFBertEmbeddings
    schedule = {"rates": rates, "keep_sep": bool(keep_sep), "sep_token_id": int(sep_token_id)}
    setattr(model.config, TOKEN_PRUNING_KEY, schedule if pruning else None)
    from tfprune.training import forget_compiled_functions

    forget_compiled_functions(model)  # traced with the old schedule
    return rates


def schedule_of(model) -> dict | None:
    """{"rates": [...], "keep_sep": bool, "sep_token_id": int} of a token-pruned model (from its config), else
    None."""
    return getattr(model.config, TOKEN_PRUNING_KEY, None) or None


def apply_from_config(model) -> None:
    """Apply the schedule stored in model.config (a model saved token-pruned), if any."""
    schedule = schedule_of(model)
    if schedule:
        apply(model, schedule["rates"], schedule.get("keep_sep", False), schedule.get("sep_token_id"))
