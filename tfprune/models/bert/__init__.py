"""TF BERT (transformers' TFBert*): offline loading, pruning targets and coupled groups, token pruning, weight
summary."""
from tfprune.models.bert.loading import DEFAULT_MODEL, has_minilm_shape, head_size, load_classifier, packaged_minilm_dir
from tfprune.models.bert.summary import format_summary, weight_summary
from tfprune.models.bert.targets import (
                                         SCOPES,
                                         attention_head_groups,
                                         check_scope,
                                         encoder_layers,
                                         ffn_kernels,
                                         ffn_neuron_groups,
                                         inject,
)
from tfprune.models.bert.token_pruning import apply as apply_token_pruning

__all__ = ["DEFAULT_MODEL", "SCOPES", "apply_token_pruning", "attention_head_groups", "check_scope", "encoder_layers", "ffn_kernels",
           "ffn_neuron_groups", "format_summary", "has_minilm_shape", "head_size", "inject", "load_classifier", "packaged_minilm_dir",
           "weight_summary"]
