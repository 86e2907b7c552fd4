"""Coupled groups: one decision over several tensors (MLP units, BERT FFN neurons and attention heads)."""
import numpy as np
import pytest

from tfprune import (
    CoupledGroup,
    GradualPruningCallback,
    Member,
    PolynomialDecay,
    PrunableDense,
    PruningStep,
    TfpruneError,
    unit_groups,
)
from tfprune._keras import keras
from tfprune.models import bert
from tfprune.report import format_report, sparsity_report
from tfprune.structure import group_report


def mlp(rng, sizes=(10, 16, 12, 6)):
    keras.utils.set_random_seed(int(rng.integers(2**31)))  # Keras' initializers: seeded by the test's rng
    inputs = keras.Input((sizes[0],))
    x, wrappers = inputs, []
    for i, units in enumerate(sizes[1:]):
        wrapper = PrunableDense(keras.layers.Dense(units, activation="relu" if i < len(sizes) - 2 else None,
                                                   bias_initializer="ones", name=f"d{i}"))
        x = wrapper(x)
        wrappers.append(wrapper)
    return keras.Model(inputs, x), wrappers


def test_unit_groups_prune_whole_units_and_they_stay_zero_through_adam(rng, tmp_path):
    model, wrappers = mlp(rng)
    groups = unit_groups(wrappers)
    assert [g.units for g in groups] == [16, 12] and [g.name for g in groups] == ["d0/units", "d1/units"]
    x = rng.standard_normal((64, 10)).astype(np.float32)
    y = rng.standard_normal((64, 6)).astype(np.float32)
    model.compile(keras.optimizers.Adam(0.05), "mse")
    callback = GradualPruningCallback(PolynomialDecay(0.0, 0.5, 0, 8, 2), log_dir=str(tmp_path), groups=groups)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    inputs_kept = np.ones(10, bool)  # the rows of a kernel that the previous group keeps
    for group, (layer, following) in zip(groups, zip(wrappers, wrappers[1:])):
        pruned = ~group.kept
        assert pruned.sum() == round(0.5 * group.units)  # exact unit counts
        kernel, bias, down = layer.kernel.numpy(), layer.layer.bias.numpy(), following.kernel.numpy()
        assert (kernel[:, pruned] == 0).all() and (bias[pruned] == 0).all() and (down[pruned, :] == 0).all()
        assert (kernel[np.ix_(inputs_kept, ~pruned)] != 0).all() and (bias[~pruned] != 0).all()
        assert (kernel[~inputs_kept] == 0).all()
        assert (group.kept_in_weights() == group.kept).all()
        inputs_kept = group.kept
    # the last layer's columns are untouched: it is a member only through its rows
    assert (wrappers[2].kernel.numpy()[group.kept] != 0).all()
    assert callback.history[-1]["units_kept_pct"] == {"d0/units": 50.0, "d1/units": 50.0}
    report = group_report(groups)
    assert [(r["units"], r["kept"], r["alive_in_weights"]) for r in report] == [(16, 8, 8), (12, 6, 6)]
    assert "| d0/units | 16 | 8 | 8 |" in format_report(sparsity_report(model, only_pruned=True), report)
    saved = str(tmp_path / "model.keras")  # the bias masks are part of the saved model
    model.save(saved)
    reloaded = keras.models.load_model(saved)
    np.testing.assert_array_equal(reloaded.layers[1].bias_mask.numpy(), wrappers[0].bias_mask.numpy())
    np.testing.assert_allclose(reloaded(x).numpy(), model(x).numpy(), atol=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    assert "pruning/units_kept_pct/d0/units" in events.Tags()["tensors"]


def test_scores_sum_over_every_member_and_global_ranking(rng):
    model, wrappers = mlp(rng, (4, 3, 2))
    up, down = wrappers
    up.kernel.assign(np.array([[1, 1, 5]] * 4, np.float32))
    up.layer.bias.assign(np.zeros(3, np.float32))
    down.kernel.assign(np.array([[9, 9], [0, 0], [0, 0]], np.float32))  # unit 0 is strong through its row
    (group,) = unit_groups(wrappers)
    np.testing.assert_allclose(group.scores(), np.sqrt([4 + 162, 4, 100]))
    PruningStep([], PolynomialDecay(0.0, 0.34, 0, 1, 1), groups=[group]).update(1)
    assert group.kept.tolist() == [True, False, True]

    _, more = mlp(rng, (4, 6, 5, 2))
    groups = unit_groups(more)
    more[0].kernel.assign(more[0].kernel * 0.01)  # the first layer's units are weak through their columns
    scores = [g.scores() for g in groups]
    PruningStep([], PolynomialDecay(0.0, 0.5, 0, 1, 1), global_ranking=True, groups=groups).update(1)
    assert sum(int((~g.kept).sum()) for g in groups) == 3 + 3  # the groups' counts, added up
    pruned = np.concatenate([s[~g.kept] for s, g in zip(scores, groups)])
    # the lowest scores went, except a group's last unit, which stays whatever its score
    kept = np.concatenate([s[g.kept] for s, g in zip(scores, groups) if g.kept.sum() > 1])
    assert pruned.max() <= kept.min() and all(g.kept.any() for g in groups)


def test_group_validation(rng):
    _, (a, b) = mlp(rng, (4, 3, 2))
    with pytest.raises(TfpruneError, match="disagree on the number of units"):
        CoupledGroup("g", [Member(a, "kernel", 1, np.arange(3)), Member(b, "kernel", 0, np.arange(2))])
    with pytest.raises(TfpruneError, match=r"lie in \[0, 3\)"):
        Member(a, "kernel", 1, np.arange(4))
    with pytest.raises(TfpruneError, match="part must be"):
        Member(a, "weights", 1, np.arange(3))
    with pytest.raises(TfpruneError, match="at least two wrapped layers"):
        unit_groups([a])
    with pytest.raises(TfpruneError, match="both pruned by their own pattern and members"):
        PruningStep([a], PolynomialDecay(0.0, 0.5, 0, 1, 1), groups=unit_groups([a, b]))


def test_bert_ffn_neurons_and_heads_exact_and_zero_after_optimizer_steps(tiny_bert_dir):
    from transformers import create_optimizer

    model, tokenizer, _ = bert.load_classifier(tiny_bert_dir)
    neurons, heads = bert.ffn_neuron_groups(model), bert.attention_head_groups(model)
    assert [g.units for g in neurons] == [64, 64] and [g.units for g in heads] == [2, 2]
    encoded = tokenizer(["the company said profit rose"] * 8, ["shares fell sharply today ."] * 8, padding=True,
                        return_tensors="np")
    x = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    optimizer, _ = create_optimizer(1e-2, 10, 0)  # HF's AdamWeightDecay: a legacy optimizer (the constraint)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = GradualPruningCallback(PolynomialDecay(0.0, 0.75, 0, 4, 2), groups=neurons + heads)
    model.fit(x, np.array([0, 1] * 4), batch_size=4, epochs=4, verbose=0, callbacks=[callback])
    for index, layer in enumerate(bert.encoder_layers(model)):
        gone = ~neurons[index].kept
        assert gone.sum() == 48
        up, down = layer.intermediate.dense, layer.bert_output.dense
        assert (up.kernel.numpy()[:, gone] == 0).all() and (up.layer.bias.numpy()[gone] == 0).all()
        assert (down.kernel.numpy()[gone] == 0).all() and (down.kernel.numpy()[~gone] != 0).any(axis=1).all()
        head_gone = ~heads[index].kept
        assert head_gone.sum() == 1  # 2 heads at 75 %: one pruned, at least one kept
        columns = np.flatnonzero(np.repeat(head_gone, 16))
        attention = layer.attention.self_attention
        for dense in (attention.query, attention.key, attention.value):
            assert (dense.kernel.numpy()[:, columns] == 0).all() and (dense.layer.bias.numpy()[columns] == 0).all()
            assert (np.delete(dense.kernel.numpy(), columns, axis=1) != 0).all()
        assert (layer.attention.dense_output.dense.kernel.numpy()[columns] == 0).all()
