"""tfprune: magnitude and structured pruning for tf-keras and Hugging Face TF models.

Importing tfprune makes tf-keras the Keras in use: transformers' TF models are tf-keras models, and a
wrapper must be built on the same Keras as the layer it wraps. The variable must be set before TensorFlow
first resolves `tf.keras`, so import tfprune before anything that touches it.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfprune.criteria import Pattern, compute_global_masks, compute_mask  # noqa: E402
from tfprune.schedules import ConstantSparsity, OneShot, PolynomialDecay  # noqa: E402
from tfprune.layers import PrunableDense, prunable_layers, reapply_masks  # noqa: E402
from tfprune.callbacks import GradualPruningCallback, PruningStep  # noqa: E402
from tfprune.strip import sparsity_report, strip_model  # noqa: E402

__all__ = [
    "ConstantSparsity", "GradualPruningCallback", "OneShot", "Pattern", "PolynomialDecay", "PrunableDense",
    "PruningStep", "compute_global_masks", "compute_mask", "prunable_layers", "reapply_masks",
    "sparsity_report", "strip_model",
]
__version__ = "0.1.0"
