"""Augmentation presets, validation with file:line, bbox-safe seeded transforms."""

import textwrap

import cv2
import numpy as np
import pytest

from edge_trash.train.augment import (AugmentConfig, Augmenter, get_augment_config, load_presets,
                                      stretch_resize)

BOXES = np.array([[0.1, 0.2, 0.5, 0.6], [0.55, 0.05, 0.95, 0.45]], dtype=np.float32)  # yxyx
CLASSES = np.array([3, 1], dtype=np.int32)


def _image(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_every_preset_validates_and_the_documented_names_exist():
    presets = load_presets()
    assert {"none", "light", "default", "strong", "trashnet"} <= set(presets)
    for name, config in presets.items():
        assert config.name == name
        assert config.validate() is config
        assert AugmentConfig.from_dict(config.to_dict(), name=name) == config
    assert presets["none"].is_identity and not presets["default"].is_identity
    assert presets["trashnet"].affine.translate == 0.2 and presets["trashnet"].affine.rotate == 2


def test_bad_value_names_file_line_preset_and_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent("""\
        ok:
          flip_horizontal: 0.5
        wild:
          flip_horizontal: 0.5
          affine:
            p: 0.5
            rotate: 90
        """))
    with pytest.raises(ValueError, match=rf"{path}:7: augment preset 'wild', key 'affine.rotate': "
                                         r"got 90.0, expected degrees in \[0, 45\]"):
        load_presets(path)


@pytest.mark.parametrize("body, match", [
    ({"flip_horizonal": 0.5}, r"key 'flip_horizonal': unknown key, expected one of \['flip_hor"),
    ({"flip_horizontal": 1.5}, r"key 'flip_horizontal': got 1.5, expected a probability"),
    ({"affine": {"scale": [1.2, 0.8]}}, r"key 'affine.scale': got \[1.2, 0.8\]"),
    ({"affine": {"scale": 1.2}}, r"key 'affine.scale': got 1.2, expected a pair"),
    ({"blur": {"p": 0.1, "max_kernel": 4}}, r"key 'blur.max_kernel': got 4, expected an odd"),
    ({"color": {"hue": 0.7}}, r"key 'color.hue': got 0.7"),
    ({"dark": {"gamma": [0.0, 2.0]}}, r"key 'dark.gamma'"),
    ({"boxes": {"min_visibility": "high"}}, r"key 'boxes.min_visibility': got 'high', expected a number"),
    ({"crop": "yes"}, r"key 'crop': got 'yes', expected a mapping"),
])
def test_from_dict_rejects_bad_values_naming_the_key(body, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig.from_dict(body, name="mine")


def test_get_augment_config_resolves_names_and_files(tmp_path):
    assert get_augment_config("default").name == "default"
    with pytest.raises(ValueError, match=r"unknown preset 'defualt'; expected one of \['default'"):
        get_augment_config("defualt")
    path = tmp_path / "two.yaml"
    path.write_text("a: {flip_horizontal: 1.0}\nb: {flip_vertical: 1.0}\n")
    assert get_augment_config(f"{path}:b").flip_vertical == 1.0
    with pytest.raises(ValueError, match=r"defines \['a', 'b'\]; pick one"):
        get_augment_config(str(path))


def test_none_only_stretches_and_keeps_boxes_exactly():
    image = _image()
    before = image.copy()
    out, boxes, classes = Augmenter(load_presets()["none"], 64)(image, BOXES, CLASSES, seed=5)
    np.testing.assert_array_equal(out, cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(boxes, BOXES)
    np.testing.assert_array_equal(classes, CLASSES)
    np.testing.assert_array_equal(image, before)  # input untouched


def test_horizontal_flip_maps_boxes_exactly():
    config = AugmentConfig.from_dict({"flip_horizontal": 1.0}, name="flip")
    image = _image()
    out, boxes, classes = Augmenter(config, 64)(image, BOXES, CLASSES, seed=0)
    np.testing.assert_array_equal(out, stretch_resize(image, 64)[:, ::-1])
    np.testing.assert_allclose(boxes, [[0.1, 0.4, 0.5, 0.8], [0.55, 0.55, 0.95, 0.95]], atol=1e-6)
    assert classes.tolist() == [3, 1] and boxes.dtype == np.float32 and out.dtype == np.uint8


def test_same_seed_same_sample_different_seeds_differ():
    augmenter = Augmenter(load_presets()["strong"], 96)
    image = _image()
    a = augmenter(image, BOXES, CLASSES, seed=11)
    b = Augmenter(load_presets()["strong"], 96)(image, BOXES, CLASSES, seed=11)  # fresh instance
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    outs = {augmenter(image, BOXES, CLASSES, seed=s)[0].tobytes() for s in range(6)}
    assert len(outs) >= 5


def test_transforms_draw_independently():
    # albumentations' own set_random_seed gives every child the same seed, which makes two
    # p=0.5 flips fire together; our reseeding must not.
    config = AugmentConfig.from_dict({"flip_horizontal": 0.5, "flip_vertical": 0.5}, name="hv")
    augmenter = Augmenter(config, 32)
    outcomes = set()
    for seed in range(40):
        _, boxes, _ = augmenter(_image(), BOXES[:1], CLASSES[:1], seed=seed)
        outcomes.add((bool(boxes[0, 1] > 0.3), bool(boxes[0, 0] > 0.3)))  # (h flipped, v flipped)
    assert outcomes == {(False, False), (True, False), (False, True), (True, True)}


def test_boxes_smaller_than_min_area_are_dropped_with_their_class():
    config = AugmentConfig.from_dict({"flip_horizontal": 1.0, "boxes": {"min_area": 50}}, name="m")
    boxes = np.array([[0.0, 0.0, 0.05, 0.05], [0.2, 0.2, 0.4, 0.4]], dtype=np.float32)  # 5x5, 20x20 px
    _, out_boxes, out_classes = Augmenter(config, 100)(_image(100, 100), boxes, [2, 5], seed=0)
    assert out_classes.tolist() == [5]
    np.testing.assert_allclose(out_boxes, [[0.2, 0.6, 0.4, 0.8]], atol=1e-6)


@pytest.mark.parametrize("preset, least", [("light", 1.0), ("trashnet", 1.0), ("default", 0.9), ("strong", 0.9)])
def test_presets_keep_small_objects_that_stay_in_the_picture(preset, least):
    """min_area 16 (pixels at the model input) dropped every box under about 300 stored px^2 at 128 px input
    (light: a 16x16 box on a 640x480 photo, kept in 0 of 30 samples), training visible objects as background."""
    image = np.full((480, 640, 3), 100, np.uint8)
    box = np.array([[234 / 480, 314 / 640, 246 / 480, 326 / 640]], np.float32)  # 12x12 px in the middle
    augmenter = Augmenter(load_presets()[preset], 128)
    kept = sum(len(augmenter(image, box, [1], seed=seed)[2]) for seed in range(30))
    assert kept >= least * 30, kept


def test_strong_keeps_boxes_normalized_and_aligned_with_classes():
    augmenter = Augmenter(load_presets()["strong"], 80)
    for seed in range(25):
        image, boxes, classes = augmenter(_image(seed=seed), BOXES, CLASSES, seed=seed)
        assert image.shape == (80, 80, 3) and image.dtype == np.uint8
        assert boxes.shape == (len(classes), 4)
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(classes.tolist()) <= {1, 3}


def test_empty_boxes_pass_through():
    image, boxes, classes = Augmenter(load_presets()["default"], 48)(
        _image(), np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), seed=1)
    assert image.shape == (48, 48, 3) and boxes.shape == (0, 4) and classes.shape == (0,)
