"""How a pruned kernel stays equal to kernel * mask through training without a pass of its own each step.

Two mechanisms keep the invariant; the second makes the first free where it is redundant.
- The mask constraint: tf-keras optimizers run `kernel.assign(constraint(kernel))` after every step. It
  catches every optimizer, those that write through raw ops (the legacy ones) included, but it is a pass of
  its own: kernel and mask read, kernel written (its cost: docs/results/overhead.md).
- Masked increments: the kernel's own `assign_add` / `assign_sub` (what Adam, SGD, RMSprop, AdamW's weight
  decay... call) write (kernel ± delta) where the mask keeps, 0 elsewhere, in the update's own pass (the
  compiled `TfpruneMaskedUpdate` on CPU; plain TensorFlow ops under XLA, which fuses them). Elsewhere (op
  not built, GPU without XLA) increments stay plain: two plain ops would cost more than the constraint. When
  the last op that may write the kernel in the traced step is such an increment, the constraint's assignment
  would write back what the kernel already holds: it is left out of the graph. Anything else after the
  increment (a raw-op update, an Identity of the handle, a nested function) keeps it in.
`assign` itself is not masked: loading weights (`set_weights`, h5) writes them as they are, as before; the
pruning callback re-applies the masks when training starts.
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow.python.ops import control_flow_util
from tensorflow.python.ops.resource_variable_ops import BaseResourceVariable

from tfprune import native

# Traced as written, not through autograph: its branches are Python decisions at trace time.
_plain_python = tf.autograph.experimental.do_not_convert
_READ_ONLY = frozenset({"ReadVariableOp", "VarIsInitializedOp", "VariableShape"})
_METHODS = ("assign", "assign_add", "assign_sub")


class MaskedKernel:
    """The kernel's constraint (kernel * mask, after any constraint it had), and its masked increments."""

    def __init__(self, kernel: tf.Variable, mask: tf.Variable, inner=None):
        self.kernel, self.mask, self.inner = kernel, mask, inner
        self._last_increment = None  # the op of the latest masked increment traced
        self._elidable = None  # (constraint output, that op) when the output equals the kernel as it is

    @_plain_python
    def __call__(self, kernel):
        masked = (self.inner(kernel) if self.inner is not None else kernel) * tf.cast(self.mask, kernel.dtype)
        if kernel is self.kernel and self.inner is None and self._last_increment is not None:
            self._elidable = (masked, self._last_increment)  # assign checks that nothing wrote since
        return masked

    @_plain_python
    def assign(self, value, use_locking=None, name=None, read_value=True):
        elidable, self._elidable = self._elidable, None
        if elidable is not None and value is elidable[0] and self._last_writer() is elidable[1]:
            return self.kernel if read_value else tf.no_op()
        return type(self.kernel).assign(self.kernel, value, use_locking, name, read_value)

    @_plain_python
    def assign_add(self, delta, use_locking=None, name=None, read_value=True):
        return self._increment(delta, False, name, read_value)

    @_plain_python
    def assign_sub(self, delta, use_locking=None, name=None, read_value=True):
        return self._increment(delta, True, name, read_value)

    def _increment(self, delta, subtract: bool, name, read_value: bool):
        """Masked where that costs nothing: the compiled op on CPU, or plain ops that XLA fuses; elsewhere
        the plain update, and the constraint masks after the step (two plain ops here would cost more)."""
        kernel = self.kernel
        delta = tf.convert_to_tensor(delta, dtype=kernel.dtype)
        compiled, xla = native.ops(), _in_xla()
        if compiled is not None and not xla and self._compiled_applies(delta):
            op = compiled.tfprune_masked_update(kernel.handle, self.mask.handle, delta, subtract=subtract, name=name)
        elif xla:
            updated = kernel - delta if subtract else kernel + delta
            kept = tf.not_equal(self.mask, tf.zeros([], self.mask.dtype))  # exact zeros, as the op: inf * 0 is NaN
            op = type(kernel).assign(kernel, tf.where(kept, updated, tf.zeros_like(updated)), name=name, read_value=False)
        else:
            self._last_increment = None
            plain = type(kernel).assign_sub if subtract else type(kernel).assign_add
            return plain(kernel, delta, name=name, read_value=read_value)
        self._last_increment = None if tf.executing_eagerly() else op
        return kernel._lazy_read(op) if read_value else op

    def _compiled_applies(self, delta) -> bool:
        return (self.kernel.dtype == tf.float32 and self.mask.dtype == tf.float32
                and delta.shape == self.kernel.shape
                and tf.DeviceSpec.from_string(self.kernel.device).device_type in (None, "CPU"))

    def _last_writer(self):
        """The latest op of the current graph, from the last increment on, that may write the kernel."""
        increment = self._last_increment
        if tf.executing_eagerly() or increment is None or increment.graph is not tf.compat.v1.get_default_graph():
            return None
        handle = increment.inputs[0]
        for op in reversed(increment.graph.get_operations()):
            if op is increment:
                return op
            if op.type not in _READ_ONLY and any(t.op is handle.op and t.value_index == handle.value_index
                                                 for t in op.inputs):
                return op
        return None


def _in_xla() -> bool:
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def install(kernel: tf.Variable, mask: tf.Variable) -> MaskedKernel:
    """Constrain `kernel` to kernel * mask (after its own constraint), and mask its increments where it is
    a plain resource variable (distributed and autocast variables keep the constraint alone)."""
    masked = MaskedKernel(mask=mask, kernel=kernel, inner=getattr(kernel, "constraint", None))
    _set_variable_constraint(kernel, masked)
    if isinstance(kernel, BaseResourceVariable):
        for method in _METHODS:
            setattr(kernel, method, getattr(masked, method))
    return masked


def uninstall(kernel: tf.Variable) -> None:
    """Give `kernel` back its own constraint and write methods."""
    constraint = getattr(kernel, "_primary", kernel)._constraint
    _set_variable_constraint(kernel, constraint.inner if isinstance(constraint, MaskedKernel) else constraint)
    for method in _METHODS:
        kernel.__dict__.pop(method, None)


def set_constraint(variable: tf.Variable, constraint) -> None:
    """Give a built variable a constraint (None: none), which optimizers apply after every step."""
    _set_variable_constraint(variable, constraint)


def _set_variable_constraint(variable: tf.Variable, constraint) -> None:
    # A built variable's constraint is read-only in the public API; distributed variables read it from
    # their primary component, so that is where it is set.
    target = getattr(variable, "_primary", variable)
    target._constraint = constraint
