"""ONNX Runtime's BERT fusions, fitted to what tf2onnx makes of Hugging Face's TF BERT.

Dynamic INT8 quantization speeds up MatMuls only. In the graph tf2onnx writes, the small ops around them
(layer-norm arithmetic, bias adds, attention reshapes, Tensordot's shape plumbing) take about half of a
batch-1 run of MiniLM, stay float, and cap INT8 at ~1.7x. ORT's transformer optimizer fuses them into a few
big kernels (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization), which the quantizer then
turns into integer ones (QAttention). Its TF matcher was written for older graphs, so four exact rewrites
come first:

- tf2onnx turns LayerNorm's mean into GlobalAveragePool; ORT matches ReduceMean: undo it.
- Tensordot's Reshape -> MatMul -> Reshape: one MatMul, which broadcasts over batch and sequence.
- TF's exact GELU, 0.5 x erfc(-x/sqrt 2) (Erfc written 1 - Erf by export's handler): one Gelu node.
- the attention mask: drop the +1e-9 of transformers' stable_softmax (softmax ignores a shift), and cast
  before reshaping, as ORT's pattern has it.

After fusing, each Attention's packed weights get query and key back in place: ORT's TF path packs them
the other way round (it assumes the older graphs' operand order). Then every SkipLayerNormalization goes back
to Add (+ bias Add) + the standard LayerNormalization: ORT's CPU kernel for the former is a scalar loop, the
latter's is vectorized (on a 2-core Xeon, a batch-1 MiniLM's twelve layer norms: 2.2 ms -> 0.9 ms; see
docs/results/structured.md). On a token-pruned graph ORT's attention fusion leaves a cycle; the other fusions
are then made without it. The caller checks parity after all this.
"""
from __future__ import annotations

import numpy as np


class _Graph:
    """Producer / consumer lookups over an onnx GraphProto, rebuilt after each rewrite."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.refresh()

    def refresh(self):
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def parent(self, node, index: int, op_type: str):
        found = self.producer.get(node.input[index]) if index < len(node.input) else None
        return found if found is not None and found.op_type == op_type else None

    def only_child(self, node, op_type: str):
        children = self.consumers.get(node.output[0], [])
        return children[0] if len(children) == 1 and children[0].op_type == op_type else None

    def scalar(self, name: str):
        value = self.constants.get(name)
        return float(value.reshape(())) if value is not None and value.size == 1 else None  # (1,) too: a regressor's bias

    def rename_input(self, old: str, new: str):
        for node in self.consumers.get(old, []):
            node.input[:] = [new if name == old else name for name in node.input]

    def remove(self, *nodes):
        for node in nodes:
            self.graph.node.remove(node)


def _ranks(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in inferred.graph.value_info
            if v.type.tensor_type.HasField("shape")}


def restore_reduce_mean(g: _Graph) -> int:
    from onnx import helper

    ranks, count = _ranks(g.model), 0
    for index, node in enumerate(list(g.graph.node)):
        rank = ranks.get(node.input[0]) if node.op_type == "GlobalAveragePool" else None
        if rank:
            g.graph.node.remove(node)
            g.graph.node.insert(index, helper.make_node("ReduceMean", list(node.input), list(node.output),
                                                        name=node.name, axes=list(range(2, rank)), keepdims=1))
            count += 1
    g.refresh()
    return count


def collapse_tensordot(g: _Graph) -> int:
    """Reshape(x, [-1, k]) -> MatMul(., W) -> Reshape(., x.shape[:-1] + [n]) is MatMul(x, W)."""
    count = 0
    for matmul in [n for n in g.graph.node if n.op_type == "MatMul" and n.name.endswith("Tensordot/MatMul")]:
        flatten, unflatten = g.parent(matmul, 0, "Reshape"), g.only_child(matmul, "Reshape")
        weight = g.constants.get(matmul.input[1])
        # Only TF's own closing reshape (named ".../Tensordot") restores x.shape[:-1]: tf2onnx merges it
        # with a following reshape when nothing sits between them (a zero bias add is dropped), and then
        # it is not one to remove.
        if flatten is None or unflatten is None or weight is None or weight.ndim != 2 or \
                not unflatten.name.endswith("/Tensordot"):
            continue
        matmul.input[0], matmul.output[0] = flatten.input[0], unflatten.output[0]
        g.remove(unflatten)
        count += 1
    g.refresh()
    outputs = {o.name for o in g.graph.output}
    g.remove(*[n for n in g.graph.node if n.op_type == "Reshape" and not g.consumers.get(n.output[0])
               and n.output[0] not in outputs])
    g.refresh()
    return count


def fuse_exact_gelu(g: _Graph) -> int:
    """Mul(Mul(x, 0.5), Sub(1, Erf(Mul(Neg(x), 1/sqrt 2)))) -> Gelu(x)."""
    from onnx import helper

    count = 0
    for erf in [n for n in g.graph.node if n.op_type == "Erf"]:
        scale = g.parent(erf, 0, "Mul")
        neg = scale and next((g.producer.get(i) for i in scale.input if g.scalar(i) is None), None)
        factor = scale and next((g.scalar(i) for i in scale.input if g.scalar(i) is not None), None)
        one_minus = g.only_child(erf, "Sub")
        product = one_minus and g.only_child(one_minus, "Mul")
        if neg is None or neg.op_type != "Neg" or factor is None or abs(factor - 0.5 ** 0.5) > 1e-6 or \
                product is None or g.scalar(one_minus.input[0]) != 1.0:
            continue
        x = neg.input[0]
        half = next((g.producer.get(i) for i in product.input if i != one_minus.output[0]), None)
        if half is None or half.op_type != "Mul" or x not in half.input or \
                next((g.scalar(i) for i in half.input if i != x), None) != 0.5:
            continue
        if any(len(g.consumers.get(n.output[0], [])) != 1 for n in (neg, scale, half)):
            continue
        index = list(g.graph.node).index(product)
        g.remove(neg, scale, erf, one_minus, half, product)
        g.graph.node.insert(min(index, len(g.graph.node)), helper.make_node(
            "Gelu", [x], [product.output[0]], name=product.name + "/Gelu", domain="com.microsoft"))
        g.refresh()
        count += 1
    return count


def simplify_attention_mask(g: _Graph) -> int:
    """Drop x + c with |c| < 1e-6 before a softmax's mask Add; Cast(Reshape(mask)) -> Reshape(Cast(mask))."""
    count = 0
    for add in [n for n in g.graph.node if n.op_type == "Add"]:
        tiny = [i for i in add.input if g.scalar(i) is not None and abs(g.scalar(i)) < 1e-6]
        children = g.consumers.get(add.output[0], [])
        if len(tiny) != 1 or not children or not all(
                c.op_type == "Add" and g.only_child(c, "Softmax") is not None for c in children):
            continue
        g.rename_input(add.output[0], next(i for i in add.input if i != tiny[0]))
        g.remove(add)
        g.refresh()
        count += 1
    graph_inputs = {i.name for i in g.graph.input}
    for cast in [n for n in g.graph.node if n.op_type == "Cast"]:
        reshape = g.parent(cast, 0, "Reshape")
        if reshape is None or reshape.input[0] not in graph_inputs or len(g.consumers[reshape.output[0]]) != 1:
            continue
        cast_out, reshape_out = cast.output[0], reshape.output[0]
        cast.input[0], cast.output[0] = reshape.input[0], reshape_out + "/cast"
        reshape.input[0], reshape.output[0] = cast.output[0], cast_out
        g.remove(cast)
        g.graph.node.insert(list(g.graph.node).index(reshape), cast)
        g.refresh()
        count += 1
    return count


def _unswap_query_key(model) -> int:
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    attentions = [n for n in model.graph.node if n.op_type == "Attention"]
    for node in attentions:
        for name in node.input[1:3]:  # packed weight (hidden, 3 hidden) and bias (3 hidden)
            packed = numpy_helper.to_array(initializers[name])
            third = packed.shape[-1] // 3
            swapped = np.concatenate([packed[..., third:2 * third], packed[..., :third], packed[..., 2 * third:]], -1)
            initializers[name].CopyFrom(numpy_helper.from_array(swapped, name))
    return len(attentions)


def split_skip_layer_norm(model) -> int:
    """Each SkipLayerNormalization whose statistics outputs go unused -> Add(input, skip) [+ Add bias] ->
    LayerNormalization (opset 17's), its sum output kept where used; the count. Needs opset >= 17."""
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        return 0
    nodes, count = [], 0
    for node in model.graph.node:
        outputs = list(node.output) + [""] * 4
        if node.op_type != "SkipLayerNormalization" or outputs[1] or outputs[2]:
            nodes.append(node)
            continue
        x, skip, gamma, beta, bias = (list(node.input) + [""] * 5)[:5]
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        total = outputs[3] or node.name + "/sum"
        summed = total if not bias else node.name + "/sum_no_bias"
        nodes.append(helper.make_node("Add", [x, skip], [summed], name=node.name + "/add"))
        if bias:
            nodes.append(helper.make_node("Add", [summed, bias], [total], name=node.name + "/add_bias"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma] + ([beta] if beta else []),
                                      [outputs[0]], name=node.name + "/layer_norm", axis=-1, epsilon=epsilon))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def optimize_bert(src: str, dst: str, num_heads: int, hidden_size: int) -> dict:
    """Fused copy of a tf2onnx BERT export, for ONNX Runtime on CPU; returns the fused-op counts."""
    import logging

    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model_bert_tf import BertOnnxModelTF

    model = onnx.load(src)
    g = _Graph(model)
    rewrites = {"reduce_mean": restore_reduce_mean(g), "tensordot": collapse_tensordot(g),
                "gelu": fuse_exact_gelu(g), "mask": simplify_attention_mask(g)}
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    rewritten = model.SerializeToString()
    logging.disable(logging.WARNING)  # ORT warns of each mask node shared by several layers, harmlessly
    try:
        try:
            fused = BertOnnxModelTF(model, num_heads, hidden_size)
            fused.optimize(FusionOptions("bert"))
            fused.topological_sort()  # raises on a cycle, which saving would meet
        except RuntimeError:  # a token-pruned graph: its attention fusion leaves a cycle ("not a DAG")
            options = FusionOptions("bert")
            options.enable_attention = False
            fused = BertOnnxModelTF(onnx.load_from_string(rewritten), num_heads, hidden_size)
            fused.optimize(options)
            rewrites["attention_unfused"] = True
    finally:
        logging.disable(logging.NOTSET)
    _unswap_query_key(fused.model)
    counts = {name: n for name, n in fused.get_fused_operator_statistics().items() if n}
    rewrites["skip_layer_norm_split"] = split_skip_layer_norm(fused.model)
    fused.save_model_to_file(dst)
    return {"rewrites": rewrites, "fused": counts}
