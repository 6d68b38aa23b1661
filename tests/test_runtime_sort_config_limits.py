"""sort.yaml values the loader used to accept although the sort loop could then never work: refused at load,
naming the key, what is wrong and the fix (and the neighbouring values that do work still load)."""

import json
import os

import pytest

from edge_trash.edge_runtime.actuators import ActuationScheduler, build_actuator
from edge_trash.edge_runtime.sort_config import ConfigError, SortConfig, default_sort_config, parse_config_text

LABELS = ["bottle", "can", "carton"]
BINS = ["bottle", "can", "carton", "reject"]  # what default_sort_config(LABELS) sends


def config(**overrides):
    raw = json.loads(json.dumps(parse_config_text(default_sort_config(LABELS), "t")))
    raw.update(overrides)
    return SortConfig(raw, LABELS, "sort.yaml")


def refused(**overrides) -> str:
    with pytest.raises(ConfigError) as info:
        config(**overrides)
    return str(info.value)


def gpio(bins, **extra):
    lines = {b: {"chip": "/dev/gpiochip2", "line": 10 + i} for i, b in enumerate(bins)}
    lines.update(extra)
    return {"type": "gpio", "gpio": lines}


def pwm(bins, **extra):
    spec = {"positions": {b: 0.05 + 0.01 * i for i, b in enumerate(bins)}}
    spec.update(extra)
    return {"type": "pwm", "pwm": spec}


# ------------------------------------------------------------------ tracker and trigger line

def test_max_age_zero_is_refused_with_the_fix():
    assert refused(tracker={"max_age": 0}) == (
        "sort.yaml: tracker.max_age: 0 ends every track on the frame after it is seen, before its item can be "
        "decided, so nothing would be sorted; set it to the frames a track may go without a detection, at least 1 "
        "(default 5)")
    assert refused(tracker={"max_age": -1}) == "sort.yaml: tracker.max_age: -1 is outside [1, 10000]"
    assert config(tracker={"max_age": 1}).tracker_max_age == 1


def test_max_age_zero_really_decides_nothing_and_one_does():
    """What the refusal protects: with max_age 0 a crossing item is never decided (exp06 of the audit)."""
    from edge_trash.edge_runtime.geometry import BBox, Detection
    from edge_trash.edge_runtime.tracker import IoUTracker, TriggerLine

    def run(max_age):
        tracker = IoUTracker("conveyor", TriggerLine("x", 0.5, 1), max_age=max_age)
        ready = []
        for seq, x in enumerate(range(20, 80, 3)):
            ready += tracker.update([Detection(0, "bottle", 0.9, BBox(x, 10, x + 10, 20))], seq, float(seq),
                                    100, 40).ready
        return len(ready)
    assert (run(0), run(1)) == (0, 1)


def test_iou_one_with_max_distance_zero_is_refused():
    assert refused(tracker={"iou_threshold": 1.0, "max_distance": 0.0}) == (
        "sort.yaml: tracker.iou_threshold: 1 together with tracker.max_distance 0 matches only pixel-identical "
        "boxes, so an item loses its track on every frame and is never decided; lower tracker.iou_threshold "
        "(default 0.2) or raise tracker.max_distance (default 1.0)")
    # either alone still leaves a way to match
    assert config(tracker={"iou_threshold": 1.0, "max_distance": 1.0}).tracker_iou == 1.0
    assert config(tracker={"iou_threshold": 0.2, "max_distance": 0.0}).tracker_max_distance == 0.0


@pytest.mark.parametrize("position, direction", [(0, 1), (0.0, -1), (1, -1), (1.0, 1)])
def test_a_conveyor_trigger_line_on_the_frame_edge_is_refused(position, direction):
    assert refused(trigger_line={"axis": "x", "position": position, "direction": direction}) == (
        "sort.yaml: trigger_line.position: %r is the edge of the frame: no item's centre ever crosses it, so no "
        "item would be decided; put the line inside the frame, e.g. 0.5" % (position,))


def test_the_trigger_line_edge_is_fine_where_it_is_not_used_or_inside_the_frame():
    assert config(mode="platform", trigger_line={"position": 0.0}).trigger_position == 0.0
    assert config(trigger_line={"position": 0.02}).trigger_position == 0.02
    assert config(trigger_line={"position": 0.98}).trigger_position == 0.98


# ------------------------------------------------------------------ gpio / pwm: every bin that can be sent

def test_gpio_without_a_line_for_a_bin_is_refused_naming_the_bin_and_the_key():
    assert refused(actuator=gpio(["bottle", "can", "reject"])) == (
        "sort.yaml: actuator.gpio: no line for bin 'carton': its items could never be actuated and would end in "
        "fail_safe_bin (or nowhere, for fail_safe_bin itself); add it to actuator.gpio (e.g. \"carton\": "
        "{\"chip\": \"/dev/gpiochip2\", \"line\": 13}), one line for each bin that classes, reject_bin and "
        "fail_safe_bin name")
    # the reject / fail-safe bin is sent too (low confidence, unmapped classes, failed actuations)
    assert refused(actuator=gpio(["bottle", "can", "carton"])).startswith(
        "sort.yaml: actuator.gpio: no line for bin 'reject': its items")
    assert refused(actuator={"type": "gpio"}).startswith(
        "sort.yaml: actuator.gpio: no line for bins 'bottle', 'can', 'carton', 'reject': their items could never "
        "be actuated")
    assert refused(actuator=gpio(["bottle", "can", "carton"]), reject_bin="reject",
                   fail_safe_bin="floor", bins=BINS + ["floor"]).startswith(
        "sort.yaml: actuator.gpio: no line for bins 'floor', 'reject': their items")


def test_gpio_entries_must_be_chip_and_line():
    assert refused(actuator={"type": "gpio", "gpio": [1]}) == (
        "sort.yaml: actuator.gpio: expected a mapping bin -> {\"chip\": \"/dev/gpiochip2\", \"line\": 13}, got [1]")
    assert refused(actuator=gpio(BINS[:3], reject=13)) == (
        "sort.yaml: actuator.gpio.reject: expected {\"chip\": \"/dev/gpiochip2\", \"line\": 13}, got 13")
    assert refused(actuator=gpio(BINS[:3], reject={"line": 3})) == (
        "sort.yaml: actuator.gpio.reject.chip: expected the GPIO chip's device path as a text (e.g. "
        "\"/dev/gpiochip2\"), got None")
    assert refused(actuator=gpio(BINS[:3], reject={"chip": "/dev/gpiochip2", "line": -1})) == (
        "sort.yaml: actuator.gpio.reject.line: expected the line number on /dev/gpiochip2 as an integer >= 0 "
        "(e.g. 13), got -1")
    # an extra line (a bin not sent) is opened at start too, so it must be well formed as well
    assert refused(actuator=gpio(BINS, spare="x")).startswith("sort.yaml: actuator.gpio.spare: expected")


def test_gpio_with_a_line_for_every_sent_bin_loads_and_actuates_every_bin():
    cfg = config(actuator=gpio(BINS, spare={"chip": "/dev/gpiochip2", "line": "30"}))
    opened = []

    class FakeGPIO:
        def __init__(self, chip, line, direction):
            opened.append((chip, line))

        def write(self, value):
            pass

        def close(self):
            pass

    actuator = build_actuator(cfg.actuator, {"gpio": FakeGPIO})
    actuator.sleep = lambda s: None
    actuator.open()
    done, faults = [], []

    class Journal:
        def mark_attempt(self, ref):
            pass

        def mark_done(self, ref, bin_name, attempts, status):
            done.append((ref, bin_name, status))

    scheduler = ActuationScheduler(actuator, Journal(), cfg.fail_safe_bin, cfg.actuator_retries, 0.0,
                                   on_fault=lambda kind, message, ref: faults.append(message))
    for ref, bin_name in enumerate(BINS):
        scheduler._fire(ref, bin_name, 0.0)
    assert done == [(0, "bottle", "actuated"), (1, "can", "actuated"), (2, "carton", "actuated"),
                    (3, "reject", "actuated")]
    assert faults == [] and len(opened) == 5


def test_pwm_without_a_position_for_a_bin_is_refused_naming_the_bins_and_the_key():
    assert refused(actuator=pwm(["bottle", "can"])) == (
        "sort.yaml: actuator.pwm.positions: no position for bins 'carton', 'reject': their items could never be "
        "actuated and would end in fail_safe_bin (or nowhere, for fail_safe_bin itself); add them to "
        "actuator.pwm.positions (e.g. \"carton\": 0.075, a duty cycle in [0, 1]), one for each bin that classes, "
        "reject_bin and fail_safe_bin name")
    assert refused(actuator={"type": "pwm"}).startswith(
        "sort.yaml: actuator.pwm.positions: no position for bins 'bottle', 'can', 'carton', 'reject'")
    assert refused(actuator={"type": "pwm", "pwm": "servo"}) == (
        "sort.yaml: actuator.pwm: expected a mapping of keys, got 'servo'")


def test_pwm_duty_cycles_and_home_must_be_in_0_1():
    assert refused(actuator={"type": "pwm", "pwm": {"positions": {"bottle": 0.05, "can": 0.06, "carton": 0.07,
                                                                  "reject": 7}}}) == (
        "sort.yaml: actuator.pwm.positions.reject: expected a duty cycle in [0, 1] (e.g. 0.075), got 7")
    assert refused(actuator=pwm(BINS, home=1.5)) == (
        "sort.yaml: actuator.pwm.home: expected a duty cycle in [0, 1] (e.g. 0.075), got 1.5")
    cfg = config(actuator=pwm(BINS, home=0.075))
    assert sorted(cfg.actuator["pwm"]["positions"]) == BINS


def test_simulated_and_serial_actuators_are_not_asked_for_lines():
    assert config(actuator={"type": "simulated"}).actuator["type"] == "simulated"
    assert config(actuator={"type": "serial", "serial": {"port": "/dev/ttyUSB0"}}).actuator["type"] == "serial"


def test_the_service_refuses_a_gpio_config_without_a_line_before_opening_anything(tmp_path):
    """End to end: build_service stops at the config with the message (no actuator opened, no log written)."""
    from runtime_fixtures import make_bundle, make_fake_loader
    from edge_trash.edge_runtime.service import build_service
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "health": {"enabled": False}, "log": {"path": str(tmp_path / "ev.sqlite")},
        "actuator": gpio(["bottle", "can", "reject"])})
    with pytest.raises(ConfigError, match="actuator.gpio: no line for bin 'carton'"):
        build_service(bundle, None, "dir:%s" % tmp_path, interpreter_loader=make_fake_loader())
    assert not os.path.exists(str(tmp_path / "ev.sqlite"))
