"""--init: Keras MobileNetV2 .h5 files, previous runs, scratch; clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_trash.models.config import get_preset
from edge_trash.models.init_weights import (InitError, initialise, keras_weights_name,
                                            resolve_init)

CONFIG = get_preset("demo").replace(width_multiplier=0.35, input_size=128, num_classes=2)


def _keras_mobilenet_h5(path: Path, alpha: float) -> Path:
    import tf_keras as keras

    keras.utils.set_random_seed(1)
    app = keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=alpha,
                                         include_top=False, weights=None)
    app.save_weights(str(path))  # the legacy .h5 layout Keras' downloads use
    return path


def test_resolve_init_sources_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_init("scratch", CONFIG).kind == "scratch"
    with pytest.raises(InitError, match=r"--init imagenet: .*\.keras/models/"
                                        r"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0\.35_224"
                                        r"_no_top\.h5 not found \(nothing is downloaded\)"):
        resolve_init("imagenet", CONFIG)
    with pytest.raises(InitError, match=r"--init nope\.h5: no such file or directory"):
        resolve_init("nope.h5", CONFIG)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InitError, match=r"expected a Keras MobileNetV2 \.h5 weights file"):
        resolve_init(str(tmp_path / "notes.txt"), CONFIG)
    with pytest.raises(InitError, match=r"directory without config\.json"):
        resolve_init(str(tmp_path), CONFIG)
    # A bare file name is looked up in ~/.keras/models.
    cache = tmp_path / ".keras" / "models"
    cache.mkdir(parents=True)
    (cache / keras_weights_name(0.35)).write_bytes(b"")
    assert resolve_init("imagenet", CONFIG).path == cache / keras_weights_name(0.35)
    assert resolve_init(keras_weights_name(0.35), CONFIG).path == cache / keras_weights_name(0.35)


@pytest.mark.slow
def test_keras_h5_loads_into_backbone_and_mismatch_is_clear(tmp_path):
    from edge_trash.models.ssd import BACKBONE_NAME, build_ssd

    good = _keras_mobilenet_h5(tmp_path / "mnv2_035.h5", 0.35)
    model = build_ssd(CONFIG)
    note = initialise(model, resolve_init(str(good), CONFIG), CONFIG)
    assert note.startswith(f"backbone from {good}")
    import tf_keras as keras

    reference = keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=0.35,
                                               include_top=False, weights=None)
    reference.load_weights(str(good))
    backbone = model.get_layer(BACKBONE_NAME)
    for name in ("Conv1", "block_13_expand", "Conv_1_bn"):
        for got, want in zip(backbone.get_layer(name).get_weights(),
                             reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)

    wrong_width = _keras_mobilenet_h5(tmp_path / "mnv2_050.h5", 0.5)
    with pytest.raises(InitError, match=r"mnv2_050\.h5: shapes do not match MobileNetV2 width 0\.35"):
        initialise(build_ssd(CONFIG), resolve_init(str(wrong_width), CONFIG), CONFIG)

    other = tmp_path / "dense.h5"
    dense = keras.Sequential([keras.layers.Dense(3, input_shape=(4,), name="dense_x")])
    dense.save_weights(str(other))
    with pytest.raises(InitError, match=r"dense\.h5: \d+ of \d+ MobileNetV2 layers missing"):
        initialise(build_ssd(CONFIG), resolve_init(str(other), CONFIG), CONFIG)


@pytest.mark.slow
def test_previous_run_carries_backbone_and_box_head_rebuilds_class_head(tmp_path):
    from edge_trash.models import run_dir as rd
    from edge_trash.models.ssd import build_ssd

    old_cfg = CONFIG.replace(num_classes=2)
    old = build_ssd(old_cfg)
    run = tmp_path / "run"
    run.mkdir()
    rd.write_json_atomic(run / rd.CONFIG_JSON, {"model": old_cfg.to_dict(), "train": {}})
    old.save_weights(str(run / rd.WEIGHTS_H5))

    new_cfg = CONFIG.replace(num_classes=5)
    new = build_ssd(new_cfg)
    note = initialise(new, resolve_init(str(run), new_cfg), new_cfg)
    assert "rebuilt for the new classes: class_head_0" in note
    for name in ("backbone", "extra_0_3x3", "box_head_0", "box_head_5", "class_head_0_depthwise"):
        for got, want in zip(new.get_layer(name).get_weights(), old.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert new.get_layer("class_head_0").get_weights()[0].shape[-1] == 3 * 6

    other_width = CONFIG.replace(width_multiplier=0.5)
    with pytest.raises(InitError, match=r"model\.width_multiplier is 0\.35 there but 0\.5 here"):
        initialise(build_ssd(other_width), resolve_init(str(run), other_width), other_width)


def _run_dir(tmp_path, cfg, labels):
    """A run directory as `train` writes it: config.json, labels.txt and the weights of a fresh model."""
    from edge_trash.models import run_dir as rd
    from edge_trash.models.ssd import build_ssd

    model = build_ssd(cfg)
    run = tmp_path / "run"
    run.mkdir()
    rd.write_json_atomic(run / rd.CONFIG_JSON, {"model": cfg.to_dict(), "train": {}})
    rd.write_text_atomic(run / rd.LABELS_TXT, "\n".join(labels) + "\n")
    model.save_weights(str(run / rd.WEIGHTS_H5))
    return run, model


@pytest.mark.slow
def test_previous_run_with_as_many_classes_but_other_names_rebuilds_or_reorders_the_class_head(tmp_path):
    from edge_trash.models.ssd import build_ssd

    cfg = CONFIG.replace(num_classes=3)
    run, old = _run_dir(tmp_path, cfg, ["bottle", "can", "carton"])
    heads = [layer.name for layer in old.layers if layer.name.startswith("class_head_") and
             layer.name[len("class_head_"):].isdigit()]
    assert heads == [f"class_head_{level}" for level in range(6)]

    # Same count, other classes: the classes both have (and the background) keep their channels, the new one
    # starts afresh (the whole class head did), everything else carries over.
    image = np.random.default_rng(0).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
    old_logits = old(image, training=False)[1].numpy()
    new = build_ssd(cfg)
    fresh = [w.copy() for w in new.get_layer("class_head_2").get_weights()]
    assert not np.array_equal(fresh[0], old.get_layer("class_head_2").get_weights()[0])
    note = initialise(new, resolve_init(str(run), cfg), cfg, ["bottle", "glass", "carton"])
    assert note == (f"weights from run {run}; the data's classes differ from the run's labels.txt (new 'glass'; "
                    "gone 'can'): class heads keep the classes both have and start afresh for the new ones: "
                    + ", ".join(heads))
    kernel, bias = new.get_layer("class_head_2").get_weights()
    anchors = bias.shape[0] // 4
    glass = [a * 4 + 2 for a in range(anchors)]
    np.testing.assert_array_equal(kernel[..., glass], fresh[0][..., glass])
    np.testing.assert_array_equal(bias[glass], fresh[1][glass])
    new_logits = new(image, training=False)[1].numpy()
    np.testing.assert_allclose(new_logits[..., [0, 1, 3]], old_logits[..., [0, 1, 3]], rtol=0, atol=1e-5)
    for name in ("backbone", "box_head_3", "class_head_2_depthwise"):
        for got, want in zip(new.get_layer(name).get_weights(), old.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    # A class added (4 of them now, in another order): the three the run knows carry over to their new places.
    more = cfg.replace(num_classes=4)
    new = build_ssd(more)
    note = initialise(new, resolve_init(str(run), more), more, ["lid", "carton", "bottle", "can"])
    assert "(new 'lid'): class heads keep the classes both have and start afresh for the new ones" in note
    np.testing.assert_allclose(new(image, training=False)[1].numpy()[..., [0, 2, 3, 4]],
                               old_logits[..., [0, 3, 1, 2]], rtol=0, atol=1e-5)
    # No class in common: the class heads start afresh.
    new = build_ssd(cfg)
    fresh = [w.copy() for w in new.get_layer("class_head_2").get_weights()]
    note = initialise(new, resolve_init(str(run), cfg), cfg, ["glass", "lid", "straw"])
    assert note.startswith(f"weights from run {run}; rebuilt for the new classes (the data's classes differ from "
                           "the run's labels.txt (new 'glass', 'lid', 'straw'; gone ")
    for got, want in zip(new.get_layer("class_head_2").get_weights(), fresh):
        np.testing.assert_array_equal(got, want)

    # The same classes in another order: each class keeps its own weights, in the new order.
    new = build_ssd(cfg)
    note = initialise(new, resolve_init(str(run), cfg), cfg, ["carton", "bottle", "can"])
    assert note == (f"weights from run {run}; the same classes in another order: class heads reordered to the "
                    "data's class order: " + ", ".join(heads))
    old_boxes, old_logits = (t.numpy() for t in old(image, training=False))
    new_boxes, new_logits = (t.numpy() for t in new(image, training=False))
    np.testing.assert_array_equal(new_boxes, old_boxes)
    np.testing.assert_allclose(new_logits, old_logits[..., [0, 3, 1, 2]], rtol=0, atol=1e-5)
    kernel_old, bias_old = old.get_layer("class_head_0").get_weights()
    kernel_new, bias_new = new.get_layer("class_head_0").get_weights()
    anchors = bias_old.shape[0] // 4
    order = [a * 4 + c for a in range(anchors) for c in (0, 3, 1, 2)]
    np.testing.assert_array_equal(kernel_new, kernel_old[..., order])
    np.testing.assert_array_equal(bias_new, bias_old[order])

    # The same classes in the same order: every weight carries over.
    new = build_ssd(cfg)
    assert initialise(new, resolve_init(str(run), cfg), cfg, ["bottle", "can", "carton"]) == \
        f"all weights from run {run}"
    for got, want in zip(new.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(got, want)

    # A run without labels.txt: its classes cannot be compared, so the class heads start afresh.
    (run / "labels.txt").unlink()
    note = initialise(build_ssd(cfg), resolve_init(str(run), cfg), cfg, ["bottle", "can", "carton"])
    assert note == (f"weights from run {run}; rebuilt for the new classes (the run's classes are unknown "
                    f"({run / 'labels.txt'}: labels file not found)): " + ", ".join(heads))
