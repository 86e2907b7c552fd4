"""tfprune: magnitude and structured pruning for tf-keras and Hugging Face TF models.

Importing tfprune makes tf-keras the Keras in use (TF_USE_LEGACY_KERAS=1): transformers' TF models are
tf-keras models, and a wrapper must be built on the same Keras as the layer it wraps. Import tfprune before
anything that touches `tf.keras`. This module is the public API. Its names load on first use, so importing
tfprune costs nothing until then (and the command-line programs can quiet TensorFlow's start-up first).
"""
import importlib
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"

_PUBLIC = {
    "ConstantSparsity": "tfprune.schedules", "OneShot": "tfprune.schedules", "PolynomialDecay": "tfprune.schedules",
    "CoupledGroup": "tfprune.structure", "Member": "tfprune.structure", "unit_groups": "tfprune.structure",
    "GradualPruningCallback": "tfprune.callbacks", "PruningStep": "tfprune.pruner",
    "Pattern": "tfprune.criteria", "compute_global_masks": "tfprune.criteria", "compute_mask": "tfprune.criteria",
    "PrunableDense": "tfprune.layers", "PrunableLayer": "tfprune.layers", "prunable_layers": "tfprune.layers",
    "prune": "tfprune.layers", "reapply_masks": "tfprune.layers",
    "TfpruneError": "tfprune.errors", "sparsity_report": "tfprune.report", "strip_model": "tfprune.strip",
    "register_layer": ("tfprune.registry", "register"),
}
__all__ = sorted(_PUBLIC)
__version__ = "0.2.0"


def __getattr__(name):
    target = _PUBLIC.get(name)
    if target is None:
        raise AttributeError(f"module 'tfprune' has no attribute {name!r}")
    module, attribute = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
