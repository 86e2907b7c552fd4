"""tfprune: magnitude and structured pruning for tf-keras and Hugging Face TF models.

Importing tfprune makes tf-keras the Keras in use (`tfprune._keras`): transformers' TF models are tf-keras
models, and a wrapper must be built on the same Keras as the layer it wraps. Import tfprune before anything
that touches `tf.keras`; it also registers its layers with Keras, so saved models load. This module is the
public API.
"""
from tfprune import _keras  # noqa: F401  (first: picks tf-keras before TensorFlow resolves tf.keras)
from tfprune.callbacks import GradualPruningCallback
from tfprune.criteria import Pattern, compute_global_masks, compute_mask
from tfprune.errors import TfpruneError
from tfprune.layers import PrunableDense, PrunableLayer, prunable_layers, prune, reapply_masks
from tfprune.pruner import PruningStep
from tfprune.registry import register as register_layer
from tfprune.report import sparsity_report
from tfprune.schedules import ConstantSparsity, OneShot, PolynomialDecay
from tfprune.strip import strip_model
from tfprune.structure import CoupledGroup, Member, unit_groups

__all__ = [
    "ConstantSparsity", "CoupledGroup", "GradualPruningCallback", "Member", "OneShot", "Pattern",
    "PolynomialDecay", "PrunableDense", "PrunableLayer", "PruningStep", "TfpruneError", "compute_global_masks",
    "compute_mask", "prunable_layers", "prune", "reapply_masks", "register_layer", "sparsity_report",
    "strip_model", "unit_groups",
]
__version__ = "0.8.0"
