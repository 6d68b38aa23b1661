"""Class balancing: LVIS repeat factors, TrashNet top-up, deterministic resumable epoch plans."""

import math

import numpy as np
import pytest

from edge_trash.train.balancing import (BalanceConfig, BalancedSampler, format_balance_table,
                                        image_fractions, instance_counts, repeat_factors)

# 10 images, 3 classes: class 1 in every image, class 2 in images 0 and 1, class 3 in image 2 only.
LABELS = [[1, 2], [1, 2, 2], [1, 3]] + [[1]] * 7


def test_image_fractions_count_images_not_instances():
    f = image_fractions(LABELS, 3)
    assert f.tolist() == [0.0, 1.0, 0.2, 0.1]


def test_repeat_factors_match_the_lvis_formula_by_hand():
    # t = 0.5: r(1) = max(1, sqrt(0.5/1)) = 1; r(2) = sqrt(0.5/0.2) = 1.58114; r(3) = sqrt(5) = 2.23607
    r = repeat_factors(LABELS, 3, threshold=0.5)
    assert r[0] == pytest.approx(math.sqrt(2.5))
    assert r[1] == pytest.approx(math.sqrt(2.5))
    assert r[2] == pytest.approx(math.sqrt(5.0))  # the max over the image's classes
    assert r[3:].tolist() == [1.0] * 7


def test_images_without_boxes_repeat_once():
    # f(1) = 2/3; with t = 1 class 1 repeats sqrt(1.5) times, the empty image once.
    r = repeat_factors([[], [1], [1]], 2, threshold=1.0)
    assert r.tolist() == [1.0, math.sqrt(1.5), math.sqrt(1.5)]


def test_stochastic_rounding_is_floor_or_ceil_and_unbiased():
    sampler = BalancedSampler(LABELS, 3, BalanceConfig("repeat_factor", repeat_threshold=0.5), seed=3)
    reps = np.stack([sampler.repeats(e) for e in range(400)])
    assert set(np.unique(reps[:, 2])) == {2, 3}  # sqrt(5) = 2.236
    assert set(np.unique(reps[:, 0])) == {1, 2}
    assert (reps[:, 3:] == 1).all()
    assert reps[:, 2].mean() == pytest.approx(math.sqrt(5.0), abs=0.06)
    assert sampler.expected_epoch_size() == pytest.approx(2 * math.sqrt(2.5) + math.sqrt(5) + 7)


def test_epoch_plan_depends_only_on_seed_and_epoch():
    config = BalanceConfig("repeat_factor", repeat_threshold=0.5)
    first = BalancedSampler(LABELS, 3, config, seed=7)
    for e in range(3):  # an uninterrupted run walks through epochs 0..2
        first.epoch_plan(e)
    resumed = BalancedSampler(LABELS, 3, config, seed=7)  # a resumed run starts at epoch 3
    a, b = first.epoch_plan(3), resumed.epoch_plan(3)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.seeds, b.seeds)
    other_epoch = first.epoch_plan(4)
    other_seed = BalancedSampler(LABELS, 3, config, seed=8).epoch_plan(3)
    assert not np.array_equal(a.seeds[:5], other_epoch.seeds[:5])
    assert not np.array_equal(a.seeds[:5], other_seed.seeds[:5])


def test_plan_is_a_shuffled_multiset_of_the_repeats_with_distinct_seeds():
    sampler = BalancedSampler(LABELS, 3, BalanceConfig("repeat_factor", repeat_threshold=0.5), seed=1)
    plan = sampler.epoch_plan(2)
    np.testing.assert_array_equal(np.bincount(plan.indices, minlength=10), sampler.repeats(2))
    assert len(set(plan.seeds.tolist())) == len(plan)  # each copy augmented differently
    unshuffled = BalancedSampler(LABELS, 3, BalanceConfig(), seed=1, shuffle=False).epoch_plan(0)
    assert unshuffled.indices.tolist() == list(range(10))


def test_fixed_length_plan_cuts_or_extends_keeping_proportions():
    sampler = BalancedSampler(LABELS, 3, BalanceConfig(), seed=0)
    assert len(sampler.epoch_plan(0, length=4)) == 4
    doubled = sampler.epoch_plan(0, length=20)
    assert np.bincount(doubled.indices).tolist() == [2] * 10
    assert len(set(doubled.seeds.tolist())) == 20


def test_min_per_class_tops_up_rare_classes_by_hand():
    # class 1: 10 instances in 10 images; class 2: one image with 2 instances. N = 7:
    # image 10 is drawn again until class 2 has >= 7: 2 -> 4 -> 6 -> 8, so 4 draws in all.
    labels = [[1]] * 10 + [[2, 2]]
    sampler = BalancedSampler(labels, 2, BalanceConfig("min_per_class", min_per_class=7), seed=0)
    assert sampler.repeats(0).tolist() == [1] * 10 + [4]
    report = sampler.report(["can", "cup"])
    assert report["before"] == {"can": 10, "cup": 2}
    assert report["after"] == {"can": 10, "cup": 8}
    assert report["images_before"] == 11 and report["images_after"] == 14
    assert sampler.expected_epoch_size() == 14.0


def test_min_per_class_counts_classes_that_come_along():
    # Topping up class 3 (1 instance, image 2 also holds class 2) also raises class 2.
    labels = [[1], [1], [2, 3], [2]]
    sampler = BalancedSampler(labels, 3, BalanceConfig("min_per_class", min_per_class=3), seed=0)
    reps = sampler.repeats(0)
    # class 3: 1 -> 2 -> 3 (image 2 twice more, class 2 goes 2 -> 4); class 1: 2 -> 3 (one
    # of images 0, 1 again, which one is the seeded draw); class 2 already has 4.
    assert reps[2] == 3 and reps[3] == 1 and sorted(reps[:2].tolist()) == [1, 2]
    counts = instance_counts(labels, 3, sampler.epoch_plan(0).indices)
    assert counts.tolist() == [0, 3, 4, 3]


def test_report_table_lists_every_class():
    sampler = BalancedSampler(LABELS, 3, BalanceConfig("repeat_factor", repeat_threshold=0.5), seed=0)
    report = sampler.report(["bottle", "can", "cup"], epoch=0)
    lines = format_balance_table(report).splitlines()
    assert lines[0] == "class balance (repeat_factor, epoch 0):"
    assert lines[1].split() == ["class", "before", "after", "x"]
    for line, name in zip(lines[2:5], ["bottle", "can", "cup"]):
        before, after = report["before"][name], report["after"][name]
        assert line.split() == [name, str(before), str(after), f"{after / before:.2f}"]
    assert report["before"] == {"bottle": 10, "can": 3, "cup": 1}
    assert lines[-1].split() == ["images", "10", str(report["images_after"])]


@pytest.mark.parametrize("config, match", [
    (BalanceConfig(method="lvis"), "balance.method: got 'lvis'"),
    (BalanceConfig(method="repeat_factor", repeat_threshold=0.0), "balance.repeat_threshold"),
    (BalanceConfig(method="min_per_class", min_per_class=0), "balance.min_per_class: must be >= 1"),
    (BalanceConfig(min_per_class=-3), "balance.min_per_class: got -3"),
])
def test_validate_names_the_bad_key(config, match):
    with pytest.raises(ValueError, match=match):
        config.validate()


def test_from_dict_rejects_unknown_keys_and_round_trips():
    config = BalanceConfig("repeat_factor", repeat_threshold=0.2)
    assert BalanceConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['treshold'\]"):
        BalanceConfig.from_dict({"method": "none", "treshold": 0.1})


def test_class_ids_outside_labels_are_rejected_naming_the_image():
    with pytest.raises(ValueError, match="image 1: class id 4 outside 1..3"):
        BalancedSampler([[1], [4]], 3)
