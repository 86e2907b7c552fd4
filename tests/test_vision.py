"""Convolution patterns (channel, connectivity, kernel shapes, pattern sets), ADMM, nested masks, LeNet-5
compaction and the lenet_pruning command."""
import json

import numpy as np
import pytest
import tensorflow as tf

from tfprune import GradualPruningCallback, Pattern, PolynomialDecay, PrunableLayer, TfpruneError, compute_mask, prune
from tfprune._keras import keras
from tfprune.admm import ADMM
from tfprune.criteria import choose_pattern, kernel_library, parse_spec
from tfprune.models.lenet import WEIGHT_LAYERS, build_lenet5, compact_lenet
from tfprune.nested import NestedMasks
from tfprune.structure import unit_groups

KH, KW, IN, OUT = 3, 3, 4, 5


def conv_view_kernel(rng):
    """A Conv2D kernel (3, 3, 4, 5) and its 2-D view (36 x 5: rows are position-major, channel fastest)."""
    kernel = rng.standard_normal((KH, KW, IN, OUT)).astype(np.float32)
    return kernel, kernel.reshape(KH * KW * IN, OUT)


def as_4d(mask2d):
    return mask2d.reshape(KH, KW, IN, OUT)


def test_channel_and_connectivity_prune_whole_channels_and_whole_kernels(rng):
    kernel, flat = conv_view_kernel(rng)
    channel = as_4d(compute_mask(flat, 0.5, "channel", (KH, KW)))
    assert all(channel[:, :, c, :].all() or not channel[:, :, c, :].any() for c in range(IN))
    assert (~channel).sum() == 2 * KH * KW * OUT  # two of four channels, every position, every filter
    norms = np.sqrt(np.square(kernel).sum(axis=(0, 1, 3)))
    assert set(np.flatnonzero(~channel[0, 0, :, 0])) == set(np.argsort(norms)[:2])
    connectivity = as_4d(compute_mask(flat, 0.5, "connectivity", (KH, KW)))
    kept_kernels = connectivity.reshape(KH * KW, IN * OUT)
    assert all(col.all() or not col.any() for col in kept_kernels.T)
    assert (~kept_kernels[0]).sum() == 10  # 10 of the 20 (channel, filter) kernels


def _connected_with_centre(kh, kw, entries):
    """Brute force: every `entries`-subset of the window that holds the centre and is 4-connected."""
    import itertools

    centre, found = (kh // 2) * kw + kw // 2, set()
    for subset in itertools.combinations(range(kh * kw), entries):
        if centre not in subset:
            continue
        seen, todo = {centre}, [centre]
        while todo:
            r, c = divmod(todo.pop(), kw)
            for n in ((r + 1) * kw + c, (r - 1) * kw + c, r * kw + c + 1, r * kw + c - 1):
                near = abs(divmod(n, kw)[0] - r) + abs(divmod(n, kw)[1] - c) == 1
                if n in subset and n not in seen and near:
                    seen.add(n)
                    todo.append(n)
        if len(seen) == entries:
            found.add(subset)
    return found


def test_kernel_library_shapes_are_connected_hold_the_centre_and_count_right():
    library = kernel_library(3, 3, 4)
    assert library.shape[1] == 9 and (library.sum(axis=1) == 4).all() and library[:, 4].all()
    assert len({row.tobytes() for row in library}) == len(library)
    # PatDNN's shapes: the centre and three of its four neighbours, and the 2x2 squares holding the centre
    assert {(1, 3, 4, 5), (0, 1, 3, 4)} <= {tuple(np.flatnonzero(row)) for row in library}
    assert {tuple(np.flatnonzero(row)) for row in library} == _connected_with_centre(3, 3, 4)
    with pytest.raises(TfpruneError, match="keeps 1 to 8"):
        kernel_library(3, 3, 9)


def test_kernel_pattern_keeps_a_library_shape_per_kernel_then_removes_whole_kernels(rng):
    kernel, flat = conv_view_kernel(rng)
    library = {row.tobytes() for row in kernel_library(3, 3, 4)}
    full = as_4d(compute_mask(flat, 5 / 9, Pattern("kernel", entries=4), (KH, KW)))
    for c in range(IN):
        for o in range(OUT):
            shape = full[:, :, c, o].ravel()
            assert shape.tobytes() in library
            energy = np.square(kernel[:, :, c, o].ravel())
            assert energy[shape].sum() == pytest.approx(max(energy[np.frombuffer(s, bool)].sum() for s in library))
    part = as_4d(compute_mask(flat, 5 / 18, Pattern("kernel"), (KH, KW)))  # half the kernels patterned
    patterned = [(~part[:, :, c, o]).any() for c in range(IN) for o in range(OUT)]
    assert sum(patterned) == 10 and (~part).sum() == 50
    more = as_4d(compute_mask(flat, 0.8, Pattern("kernel"), (KH, KW)))  # 144 = 20 kernels x 5 + 11 x 4
    per_kernel = more.reshape(9, IN * OUT).sum(axis=0)
    assert sorted(per_kernel) == [0] * 11 + [4] * 9 and (~more).sum() == 144


def test_pattern_set_takes_the_candidate_that_keeps_most_norm_and_keeps_its_choice(rng):
    kernel = 0.01 * rng.standard_normal((16, 8)).astype(np.float32)
    kernel[:8] *= 100  # strong rows: row pruning keeps nearly everything that matters
    index, mask = choose_pattern(kernel, 0.5, ("unit", "row", "block:4"))
    assert index == 1 and (mask[:8].all() and not mask[8:].any())
    assert choose_pattern(kernel, 0.5, ("row", "unstructured"))[0] == 1  # irregular always wins
    with pytest.raises(TfpruneError, match="no pattern"):
        choose_pattern(kernel, 0.5, ("kernel:4",))  # a Dense has no kernel window
    assert parse_spec("block:8") == Pattern("block", block_size=8)
    with pytest.raises(TfpruneError, match="sizes after"):
        parse_spec("block:x")

    inputs = keras.Input((16,))
    wrapper = PrunableLayer(keras.layers.Dense(8), Pattern("set", candidates=("unit", "row")))
    model = keras.Model(inputs, wrapper(inputs))
    wrapper.kernel.assign(kernel)
    assert wrapper.chosen_pattern is None
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = rng.standard_normal((64, 16)).astype(np.float32), rng.standard_normal((64, 8)).astype(np.float32)
    model.fit(x, y, epochs=3, batch_size=8, verbose=0,
              callbacks=[GradualPruningCallback(PolynomialDecay(0.0, 0.5, 0, 20, 5))])
    assert wrapper.chosen_pattern == "row"
    kept_rows = wrapper.kernel.numpy().any(axis=1)
    assert kept_rows.sum() == 8 and (wrapper.kernel.numpy()[kept_rows] != 0).all()
    config = wrapper.get_config()
    assert config["pattern"]["candidates"] == ["unit", "row"]
    assert PrunableLayer.from_config(config).pattern == wrapper.pattern


def _tiny_conv_net(rng, pattern="unstructured"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    dense = keras.layers.Dense(3)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(conv(inputs))))
    wrappers = prune(model, pattern)
    x = rng.standard_normal((64, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    return model, wrappers, x, y


def test_admm_projects_exactly_pulls_weights_to_z_and_hard_prunes_to_stay(rng):
    model, wrappers, x, y = _tiny_conv_net(rng)
    admm = ADMM(wrappers, 0.75, rho=1e-2, rho_growth=2.0, rho_max=1.0, steps_per_iteration=4, iterations=6)
    for z in admm.z:  # Z = projection of W before training: exactly 75 % zeros
        assert np.count_nonzero(z.numpy() == 0) == round(0.75 * np.prod(z.shape))
    admm.attach(model)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[admm])
    assert admm.done == 6  # capped
    assert [h["rho"] for h in admm.history[1:]] == pytest.approx([1e-2 * 2 ** i for i in range(6)])
    assert admm.history[-1]["distance"] < admm.history[0]["distance"]
    sparsities = admm.hard_prune()
    assert sparsities == pytest.approx([0.75, 0.75], abs=1e-2)
    pruned = [w.kernel.numpy() == 0 for w in wrappers]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert float(admm.penalty()) == 0.0
    for was, w in zip(pruned, wrappers):
        assert (w.kernel.numpy()[was] == 0).all()


def test_admm_on_coupled_groups_projects_and_prunes_whole_filters(rng):
    """Filters coupled with their bias and the next layer's rows: Z removes whole units from every tensor they
    span, the hard prune installs the groups' masks, and the units stay removed through retraining."""
    model, wrappers, x, y = _tiny_conv_net(rng, "unit")
    conv, dense = wrappers
    conv.layer.bias.assign(rng.standard_normal(4).astype(np.float32))  # no zero bias to hide a miss
    groups = unit_groups(wrappers)
    admm = ADMM([], 0.5, rho=0.5, rho_growth=2.0, rho_max=100.0, steps_per_iteration=4, iterations=6, groups=groups)
    assert [(w.name, part) for w, part in admm.parts] == [(conv.name, "kernel"), (conv.name, "bias"),
                                                           (dense.name, "kernel")]
    z_kernel, z_bias, z_dense = (z.numpy() for z in admm.z)
    gone = np.all(z_kernel.reshape(-1, 4) == 0, axis=0)
    assert gone.sum() == 2 and (z_bias[gone] == 0).all() and (z_bias[~gone] != 0).all()
    rows = z_dense.reshape(64, 4, 3)  # Flatten's order: position, then channel
    assert (rows[:, gone] == 0).all() and (rows[:, ~gone] != 0).all()
    admm.attach(model)
    # plain SGD: Adam's steps are bounded by its learning rate whatever rho asks (a unit spans many weights)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[admm])
    assert admm.done == 6 and admm.history[-1]["distance"] < 0.05 < admm.history[0]["distance"]
    assert admm.hard_prune() == pytest.approx([0.5, 0.5, 0.5])
    gone = ~groups[0].kept
    assert gone.sum() == 2
    groups[0].kept = np.ones(4, bool)  # as a resumed run's fresh groups would start
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[admm])  # past the prune: reads them back
    assert (groups[0].kept == ~gone).all()
    kernel, bias, following = conv.kernel.numpy().reshape(-1, 4), conv.layer.bias.numpy(), dense.kernel.numpy()
    assert (kernel[:, gone] == 0).all() and (bias[gone] == 0).all()
    assert (following.reshape(64, 4, 3)[:, gone] == 0).all()
    assert np.count_nonzero(kernel[:, ~gone]) == kernel[:, ~gone].size and (bias[~gone] != 0).all()


def test_admm_refuses_a_layer_both_alone_and_in_a_group(rng):
    model, wrappers, _, _ = _tiny_conv_net(rng, "unit")
    with pytest.raises(TfpruneError, match="both pruned weight by weight and members of coupled groups"):
        ADMM(wrappers[:1], 0.5, groups=unit_groups(wrappers))


@pytest.mark.parametrize("kwargs, message", [
    ({"rho": 0.0}, "rho must be a finite number > 0"),
    ({"rho": float("nan")}, "rho must be a finite number > 0"),
    ({"rho_growth": 0.5}, "rho_growth must be a finite number >= 1"),
    ({"rho": 2.0, "rho_max": 1.0}, "must not exceed rho_max"),
    ({"steps_per_iteration": 0}, "steps_per_iteration must be a positive integer"),
    ({"iterations": 1.5}, "iterations must be a positive integer"),
])
def test_admm_knobs_are_checked(rng, kwargs, message):
    _, wrappers, _, _ = _tiny_conv_net(rng)
    with pytest.raises(TfpruneError, match=message):
        ADMM(wrappers, 0.5, **kwargs)
    with pytest.raises(TfpruneError, match="sparsity must be in"):
        ADMM(wrappers, 1.0)


def test_admm_without_attach_refuses_to_train(rng):
    model, wrappers, x, y = _tiny_conv_net(rng)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(TfpruneError, match="attach"):
        model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[ADMM(wrappers, 0.5)])


def test_nested_levels_nest_freeze_the_sparser_weights_and_switch_with_their_biases(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    first, second = keras.layers.Dense(10, activation="relu"), keras.layers.Dense(3)
    model = keras.Model(inputs, second(first(inputs)))
    x, y = rng.standard_normal((64, 12)).astype(np.float32), rng.integers(0, 3, 64)
    reference = [first.kernel.numpy(), second.kernel.numpy()]
    nested = NestedMasks([first, second], [0.5, 0.9])
    total = reference[0].size + reference[1].size
    trained, biases = {}, {}
    for i, level in enumerate(nested.levels):
        nested.grow(reference)
        nested.start_training(level, reference)
        if i > 0:  # a denser level starts from the sparser level's biases
            assert np.array_equal(first.bias.numpy(), biases[0.9][0])
        model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        nested.finish_training(level)
        trained[level] = [first.kernel.numpy().copy(), second.kernel.numpy().copy()]
        biases[level] = [first.bias.numpy().copy(), second.bias.numpy().copy()]
        if i > 0:  # the sparser level's weights did not move; its biases are its own
            for sparse_mask, before, after in zip(nested.mask(0.9), trained[0.9], trained[level]):
                assert np.array_equal(before[sparse_mask], after[sparse_mask])
            assert not np.array_equal(biases[0.9][1], biases[level][1])
    sparse, dense = nested.mask(0.9), nested.mask(0.5)
    assert all((s <= d).all() for s, d in zip(sparse, dense))
    assert sum(int(m.sum()) for m in sparse) == total - round(0.9 * total)
    assert sum(int(m.sum()) for m in dense) == total - round(0.5 * total)
    nested.set_level(0.9)
    assert np.array_equal(first.kernel.numpy(), np.where(sparse[0], trained[0.9][0], 0))
    assert np.array_equal(second.bias.numpy(), biases[0.9][1])
    nested.set_level(0.5)
    assert np.array_equal(second.kernel.numpy(), trained[0.5][1])
    assert np.array_equal(second.bias.numpy(), biases[0.5][1])
    assert np.array_equal(nested.state()["biases"][0][1], biases[0.9][1])
    with pytest.raises(TfpruneError, match="no nested level 0.7"):
        nested.set_level(0.7)
    with pytest.raises(TfpruneError, match="distinct sparsities"):
        NestedMasks([first], [0.5, 0.5])


def test_filter_pruned_lenet_compacts_to_exact_widths_with_the_same_logits(rng):
    model = build_lenet5(seed=1)
    wrappers = {w.layer.name: w for w in prune(model, "unit")}
    groups = unit_groups([wrappers[name] for name in WEIGHT_LAYERS])
    callback = GradualPruningCallback(PolynomialDecay(0.0, 0.5, 0, 1, 1), groups=groups)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = rng.random((64, 784)).astype(np.float32), rng.integers(0, 10, 64)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])
    from tfprune.lenet_sweep import plain_copy

    plain = plain_copy(model)
    compact, widths = compact_lenet(plain)
    assert widths == [3, 8, 60, 42]
    assert compact.get_layer("fc1").kernel.shape == (5 * 5 * 8, 60)
    assert np.abs(compact.predict(x, verbose=0) - plain.predict(x, verbose=0)).max() <= 1e-5
    assert compact.count_params() == (25 * 3 + 3) + (25 * 3 * 8 + 8) + (200 * 60 + 60) + (60 * 42 + 42) + (42 * 10 + 10)


def _idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny_idx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 256), ("t10k", 64)):
        labels = rng.integers(0, 10, n)
        images = (rng.random((n, 28, 28)) * 60 + labels[:, None, None] * 19).astype(np.uint8)
        _idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def test_lenet_pruning_cli_writes_one_row_per_run(tiny_idx, tmp_path, capsys):
    from tfprune import cli
    from tfprune.cli import lenet_pruning

    out = tmp_path / "lenet"
    code = cli.run(lenet_pruning.main, ["--data-dir", str(tiny_idx), "--epochs", "1", "--prune-epochs", "2",
                                        "--sparsities", "0.9", "--filter-sparsities", "0.5",
                                        "--nested-levels", "0.5,0.9", "--speed-iterations", "3",
                                        "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    runs = {(r["method"], r["pattern"], r["sparsity"]) for r in results["rows"]}
    assert runs == {("dense", "none", 0.0), ("oneshot", "irregular", 0.9), ("gradual", "irregular", 0.9),
                    ("admm", "irregular", 0.9), ("oneshot", "filter", 0.5), ("gradual", "filter", 0.5),
                    ("admm", "filter", 0.5), ("nested", "irregular", 0.5), ("nested", "irregular", 0.9)}
    for row in results["rows"]:
        assert {"method", "pattern", "sparsity", "accuracy"} <= set(row)
        if row["pattern"] == "irregular":
            assert row["measured_sparsity"] == pytest.approx(row["sparsity"], abs=1e-4)
    nested = {r["sparsity"]: r for r in results["rows"] if r["method"] == "nested"}
    assert nested[0.9]["accuracy"] == nested[0.9]["alone_accuracy"]  # the sparsest level is that run itself
    assert sorted(row["method"] for row in results["compaction"]) == ["admm", "gradual", "oneshot"]
    for row in results["compaction"]:
        assert row["widths"] == [3, 8, 60, 42] and row["max_abs_logit_diff"] <= 1e-5
    assert (out / "sparsity_vs_accuracy.png").stat().st_size > 0 and (out / "nested_model.npz").exists()


def test_lenet_distillation_with_alpha_one_is_plain_training_and_the_cli_records_it(tiny_idx, tmp_path, capsys):
    """The targets carry the labels in column 0: with the soft term weighted 0 the pruned run ends where the
    cross-entropy run ends; with it, elsewhere."""
    from tfprune import cli
    from tfprune import lenet_sweep as sweep
    from tfprune.cli import lenet_pruning
    from tfprune.distillation import distillation_loss, teacher_targets
    from tfprune.tasks.images import load_train_test

    (x, y), _, _ = load_train_test("fashion_mnist", str(tiny_idx), 128, None)
    dense = sweep.train_dense(x, y, 1, 32, 1e-3, seed=0)
    targets = teacher_targets(y, dense.predict(x, verbose=0))
    kernels = {}
    for name, labels, loss in (("plain", y, None), ("alpha 1", targets, distillation_loss(1.0, 2.0)),
                               ("alpha 0.5", targets, distillation_loss(0.5, 2.0))):
        model, record = sweep.prune_run(dense, "gradual", "irregular", 0.5, x, labels, 2, 32, 1e-2, 0, loss=loss)
        assert record["measured_sparsity"] == pytest.approx(0.5, abs=1e-4)
        kernels[name] = np.concatenate([layer.kernel.numpy().ravel() for layer in sweep.weight_layers(model)])
    np.testing.assert_allclose(kernels["alpha 1"], kernels["plain"], atol=1e-5)
    assert np.abs(kernels["alpha 0.5"] - kernels["plain"]).max() > 1e-3

    out = tmp_path / "lenet"
    code = cli.run(lenet_pruning.main, ["--data-dir", str(tiny_idx), "--epochs", "1", "--prune-epochs", "2",
                                        "--methods", "oneshot,admm", "--patterns", "irregular", "--sparsities",
                                        "0.9", "--nested-levels", "0.5,0.9", "--distill", "--temperature", "3",
                                        "--output-dir", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["distillation"] == {"teacher": "the dense model", "alpha": 0.5, "temperature": 3.0}
    runs = {(r["method"], r["sparsity"]) for r in results["rows"]}
    assert runs == {("dense", 0.0), ("oneshot", 0.9), ("admm", 0.9), ("nested", 0.5), ("nested", 0.9)}


@pytest.mark.parametrize("extra, message", [
    (["--distill-alpha", "1.5"], "--distill-alpha must be in [0, 1], got 1.5"),
    (["--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
])
def test_lenet_distillation_flags_are_checked_before_loading(extra, message, tmp_path, capsys):
    from tfprune import cli
    from tfprune.cli import lenet_pruning

    out = tmp_path / "lenet"
    assert cli.run(lenet_pruning.main, ["--data-dir", str(tmp_path / "missing"), "--distill", *extra,
                                        "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and not out.exists()


def test_lenet_dense_from_reuses_an_earlier_runs_dense_model(tiny_idx, tmp_path, capsys):
    """Every run saves its dense weights; --dense-from takes them instead of training: the same dense model
    (the same test accuracy, the same saved weights) with no dense epochs run."""
    from tfprune import cli
    from tfprune.cli import lenet_pruning

    common = ["--data-dir", str(tiny_idx), "--epochs", "1", "--prune-epochs", "1", "--methods", "oneshot",
              "--patterns", "irregular", "--sparsities", "0.9", "--nested-levels", ""]
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.run(lenet_pruning.main, [*common, "--output-dir", str(first)]) == 0
    assert cli.run(lenet_pruning.main, [*common, "--epochs", "5", "--dense-from", str(first),
                                        "--output-dir", str(second)]) == 0
    assert f"(from {first})" in capsys.readouterr().out
    results = [json.loads((folder / "results.json").read_text()) for folder in (first, second)]
    assert results[1]["dense_accuracy"] == results[0]["dense_accuracy"]
    assert [r["epochs"] for r in results[1]["rows"] if r["method"] == "dense"] == [None]
    saved = [np.load(folder / lenet_pruning.DENSE_FILE) for folder in (first, second)]
    assert len(saved[0].files) == 10
    for name in saved[0].files:
        np.testing.assert_array_equal(saved[0][name], saved[1][name])


@pytest.mark.parametrize("content, message", [
    (None, "no dense_weights.npz there"),
    (b"not an npz", "dense_weights.npz is not a LeNet-5's weights"),
    ("wrong shapes", "dense_weights.npz is not a LeNet-5's weights"),
])
def test_lenet_dense_from_refuses_a_folder_without_a_lenet(content, message, tiny_idx, tmp_path, capsys):
    from tfprune import cli
    from tfprune.cli import lenet_pruning

    folder, out = tmp_path / "earlier", tmp_path / "lenet"
    folder.mkdir()
    if content == "wrong shapes":
        np.savez(folder / lenet_pruning.DENSE_FILE, np.zeros((3, 3)))
    elif content is not None:
        (folder / lenet_pruning.DENSE_FILE).write_bytes(content)
    assert cli.run(lenet_pruning.main, ["--data-dir", str(tiny_idx), "--dense-from", str(folder),
                                        "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err and not out.exists()


def test_kernel_pattern_refused_on_a_dense_before_training():
    inputs = keras.Input((6,))
    wrapper = PrunableLayer(keras.layers.Dense(4), Pattern("kernel"))
    keras.Model(inputs, wrapper(inputs))
    with pytest.raises(TfpruneError, match="kernel patterns need a convolution"):
        GradualPruningCallback(PolynomialDecay(0.0, 0.5, 0, 10, 1), layers=[wrapper])
    assert tf.reduce_all(wrapper.mask == 1)


def test_cifar10_batches_load_channel_major_images_and_refuse_bad_files(tmp_path):
    import pickle

    from tfprune.tasks.images import load_cifar10

    rng = np.random.default_rng(0)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, 3))
        (tmp_path / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}))
        expected[name] = (data, labels)
    splits = load_cifar10(str(tmp_path))
    assert splits["train"][0].shape == (15, 32, 32, 3) and splits["test"][0].shape == (3, 32, 32, 3)
    data, labels = expected["test_batch"]
    # pixel (row 2, column 5) of the first test image: red at 2*32+5, green 1024 further, blue 2048 further
    assert splits["test"][0][0, 2, 5].tolist() == pytest.approx([data[0, 69] / 255, data[0, 1093] / 255, data[0, 2117] / 255])
    assert splits["test"][1].tolist() == labels
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(TfpruneError, match="data_batch_3 is not a CIFAR-10 python batch"):
        load_cifar10(str(tmp_path))
    (tmp_path / "test_batch").unlink()
    with pytest.raises(TfpruneError, match="has no test_batch"):
        load_cifar10(str(tmp_path))


def test_resnet18_cifar_has_its_parameter_count_and_prunes_with_kernel_patterns(rng):
    from tfprune.models.resnet import build_resnet18

    model = build_resnet18(seed=0)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 11_173_962 and model.count_params() - trainable == 2 * 4800  # BN moving mean/variance
    wrappers = prune(model, "connectivity")
    assert len(wrappers) == 21  # the stem and 16 block convolutions (3x3), 3 projections (1x1), the logits
    stem = next(w for w in wrappers if w.layer.name == "stem_conv")
    stem.prune_to(0.5)
    kernels = stem.kernel.numpy().reshape(9, 3 * 64)
    assert all(col.all() or not col.any() for col in (kernels != 0).T) and (~kernels.any(axis=0)).sum() == 96
    assert model(rng.random((2, 32, 32, 3)).astype(np.float32)).shape == (2, 10)
