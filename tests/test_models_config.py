"""SSDConfig presets and validation, anchors, and the TrainConfig / --config reader."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge_trash.models.anchors import (anchor_specs, anchors_per_location, generate_anchor_boxes,
                                       generate_anchors, layer_scales, num_anchors)
from edge_trash.models.config import PRESETS, SSDConfig, get_preset
from edge_trash.train import train_config as tc


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_model_preset_validates_and_round_trips(name):
    config = get_preset(name).validate()
    again = SSDConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("name", sorted(tc.PRESETS))
def test_every_train_preset_validates(name):
    model, train = tc.load_config(name)
    model.validate()
    train.validate()
    assert tc.TrainConfig.from_dict(train.to_dict()) == train
    # litter data is long-tailed: every preset samples by LVIS repeat factors (a README promise)
    from edge_trash.train.trainer import balance_config

    assert balance_config(train).method == "repeat_factor"


@pytest.mark.parametrize("change, message", [
    ({"head": "yolo"}, r"model.head: got 'yolo', expected one of \('ssd', 'ssdlite'\)"),
    ({"width_multiplier": 1.3}, r"model.width_multiplier: got 1.3"),
    ({"input_size": 300}, r"model.input_size: got 300, expected a multiple of 32"),
    ({"input_size": 96}, r"model.input_size: got 96"),
    ({"num_classes": 0}, r"model.num_classes: got 0"),
    ({"unmatched_threshold": 0.6}, r"unmatched_threshold/match_threshold: got 0.6/0.5"),
    ({"iou_threshold": 1.0}, r"model.iou_threshold: got 1.0"),
])
def test_bad_model_config_names_field(change, message):
    with pytest.raises(ValueError, match=message):
        SSDConfig(**change).validate()


def test_from_dict_rejects_unknown_keys_and_presets_are_copies():
    with pytest.raises(ValueError, match=r"unknown keys \['input_sise'\]"):
        SSDConfig.from_dict({"input_sise": 320})
    with pytest.raises(KeyError, match="unknown model preset 'nope'"):
        get_preset("nope")
    get_preset("demo").input_size = 999
    assert PRESETS["demo"].input_size == 224


def test_feature_maps_and_anchor_counts_ssd_mobilenet_v2_320():
    config = get_preset("ssd_mobilenet_v2_320")
    assert config.feature_map_sizes() == [20, 10, 5, 3, 2, 1]
    assert anchors_per_location(config) == [3, 6, 6, 6, 6, 6]
    expected = 20 * 20 * 3 + (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1) * 6
    assert num_anchors(config) == expected == generate_anchors(config).shape[0] == 2034


def test_anchor_scales_and_layout_match_tf_od_api():
    config = get_preset("ssd_mobilenet_v2_320")
    scales = layer_scales(config)
    np.testing.assert_allclose(scales, [0.2, 0.35, 0.5, 0.65, 0.8, 0.95])
    assert anchor_specs(config)[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    assert anchor_specs(config)[1][-1] == pytest.approx((math.sqrt(0.35 * 0.5), 1.0))
    anchors = generate_anchors(config)  # (yc, xc, h, w)
    # First cell of the 20x20 map: centre (0.025, 0.025); 0.1 x 0.1, then 0.2 at ratio 2 (w = 2h).
    np.testing.assert_allclose(anchors[0], [0.025, 0.025, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(anchors[1], [0.025, 0.025, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)],
                               atol=1e-6)
    # Second cell moves along x (row-major, anchors innermost).
    np.testing.assert_allclose(anchors[3][:2], [0.025, 0.075], atol=1e-6)
    # Last layer 1x1: centred, largest scale 0.95, interpolated sqrt(0.95 * 1.0) last.
    np.testing.assert_allclose(anchors[-6], [0.5, 0.5, 0.95, 0.95], atol=1e-6)
    np.testing.assert_allclose(anchors[-1], [0.5, 0.5, math.sqrt(0.95), math.sqrt(0.95)], atol=1e-6)
    # Level dicts as Model Garden's labeler takes them: [G, G, A * 4].
    levels = generate_anchor_boxes(config)
    assert [v.shape for v in levels.values()] == [(20, 20, 12), (10, 10, 24), (5, 5, 24),
                                                    (3, 3, 24), (2, 2, 24), (1, 1, 24)]


def test_load_config_file_with_preset_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("preset: demo\nmodel: {input_size: 256}\ntrain: {steps: 770, batch_size: 8}\n")
    model, train = tc.load_config(str(path))
    demo = PRESETS["demo"]  # the file's preset fills what it leaves out
    assert (model.input_size, model.width_multiplier, model.head) == (256, demo.width_multiplier, demo.head)
    assert model.batch_norm_momentum == demo.batch_norm_momentum == 0.9
    assert (train.steps, train.batch_size, train.optimizer) == (770, 8, "adam")


@pytest.mark.parametrize("text, message", [
    ("train: {stpes: 5}\n", r"cfg.yaml: train: unknown keys \['stpes'\]"),
    ("model: {head: big}\n", r"cfg.yaml: model.head: got 'big'"),
    ("train: {steps: 10, warmup_steps: 10}\n", r"train.warmup_steps: got 10"),
    ("trian: {}\n", r"cfg.yaml: expected top-level keys 'model', 'train'"),
    ("model: [1, 2\n", r"(?s)cfg.yaml: cannot parse .*line 1"),
])
def test_bad_config_file_names_file_and_key(tmp_path, text, message):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        tc.load_config(str(path))


def test_unknown_config_source_lists_presets():
    with pytest.raises(ValueError, match=r"--config nope.yaml: no such file and not a preset "
                                         r"\(presets: demo, ssd_mobilenet_v2_320"):
        tc.load_config("nope.yaml")


def test_lr_schedule_warmup_then_cosine():
    from edge_trash.train.schedule import build_lr_schedule

    cfg = tc.TrainConfig(steps=1100, learning_rate=0.1, warmup_steps=100,
                         min_learning_rate_fraction=0.1)
    lr = build_lr_schedule(cfg)
    assert float(lr(0)) == pytest.approx(0.0)
    assert float(lr(50)) == pytest.approx(0.05)
    assert float(lr(100)) == pytest.approx(0.1)
    # Half-way through the cosine: floor + (peak - floor) / 2.
    assert float(lr(600)) == pytest.approx(0.01 + 0.09 / 2, rel=1e-4)
    assert float(lr(1100)) == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize("labels, said", [("can\n", "1 class"), ("can\ncup\nlid\n", "3 classes")])
def test_a_run_whose_labels_and_config_disagree_counts_its_classes_in_words(tmp_path, labels, said):
    """'labels.txt: 1 classes but config.json says num_classes=2' read wrong; the count now agrees with its noun."""
    from edge_trash.models.run_dir import RunDirError, load_run

    (tmp_path / "config.json").write_text(json.dumps({"model": get_preset("demo").replace(num_classes=2).to_dict()}))
    (tmp_path / "labels.txt").write_text(labels)
    with pytest.raises(RunDirError) as err:
        load_run(tmp_path)
    assert str(err.value) == f"{tmp_path}/labels.txt: {said} but config.json says num_classes=2"


def test_damaged_or_foreign_weights_are_named_with_the_fix(tmp_path):
    """h5py's error named no file ("Unable to synchronously open file (truncated file: eof = 50000 ...)")."""
    from edge_trash.models.config import get_preset
    from edge_trash.models.run_dir import RunDirError, load_run
    from edge_trash.models.ssd import build_ssd

    config = get_preset("demo").replace(width_multiplier=0.35, input_size=128, num_classes=2)
    (tmp_path / "config.json").write_text(json.dumps({"model": config.to_dict()}))
    (tmp_path / "labels.txt").write_text("can\ncup\n")
    weights, other, good = (tmp_path / n for n in ("model.weights.h5", "other.weights.h5", "good.weights.h5"))
    build_ssd(config.replace(num_classes=3)).save_weights(str(other))  # another run's model
    build_ssd(config).save_weights(str(good))
    weights.write_bytes(other.read_bytes())
    with pytest.raises(RunDirError) as err:
        load_run(tmp_path)
    assert str(err.value).startswith(f"{weights}: does not fit the model config.json describes (")
    assert str(err.value).endswith("): the two come from different runs; copy the whole run folder again")
    data = good.read_bytes()
    weights.unlink()
    weights.write_bytes(data)
    load_run(tmp_path)  # whole: loads
    for cut in (data[:len(data) // 2], b""):
        weights.unlink()
        weights.write_bytes(cut)
        with pytest.raises(RunDirError) as err:
            load_run(tmp_path)
        assert str(err.value).startswith(f"{weights}: cannot be read as weights (")
        assert str(err.value).endswith("): the file is damaged or cut short (a copy that did not finish, a disk "
                                       "that filled while training wrote it); copy the run folder again from where "
                                       "it trained")


def test_the_default_preset_with_tacos_classes_is_too_big_for_the_edgetpu_and_ssdlite_is_not():
    """The ssd head grows with every class: 60 classes on the default preset need about twice the Edge TPU's
    on-chip memory (the export measured 12.59 MiB), and training says so before it starts."""
    from edge_trash.export.compat import PARAMETER_CACHE_BYTES
    from edge_trash.models.ssd import build_ssd
    from edge_trash.train.trainer import edgetpu_size_note

    default = get_preset("ssd_mobilenet_v2_320").replace(num_classes=60)
    lite = get_preset("ssdlite_mobilenet_v2_320").replace(num_classes=60)
    weights = build_ssd(default).count_params()
    assert 2 * PARAMETER_CACHE_BYTES < weights < 2.5 * PARAMETER_CACHE_BYTES
    assert edgetpu_size_note(weights, default).startswith(
        "for the Edge TPU, this model is big: the Edge TPU parameters, 13.")
    assert "train with --config ssdlite_mobilenet_v2_320" in edgetpu_size_note(weights, default)
    assert edgetpu_size_note(build_ssd(lite).count_params(), lite) == ""


def test_a_hand_edit_that_breaks_a_runs_config_json_is_named_with_the_fix(tmp_path):
    import pytest

    from edge_trash.models.run_dir import RunDirError, read_run_config

    (tmp_path / "config.json").write_text('{"model": {"input_size": 320,}}')
    with pytest.raises(RunDirError, match=r"config\.json: invalid JSON \(.+\); `edge-trash train` wrote it: undo the "
                                          r"hand edit, or start a new run$"):
        read_run_config(tmp_path)
