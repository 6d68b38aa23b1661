"""sort.yaml values the loader used to accept although the sort loop could then never work, and keys and values it
used to ignore or misread (a misspelt key, "false" in quotes, a tab, a decimal comma): refused at load, naming the
key, what is wrong and the fix (and the neighbouring values that do work still load)."""

import json
import os

import pytest

from edge_trash.edge_runtime.actuators import ActuationScheduler, build_actuator
from edge_trash.edge_runtime.sort_config import (CONFIG_KEYS, ConfigError, SortConfig, default_sort_config,
                                                 parse_config_text)

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

        def mark_done(self, ref, bin_name, attempts, status, latency_ms):
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


# ------------------------------------------------------------------ keys nothing reads, booleans, tabs, decimal commas

TOP_KEYS = ("actuator, bins, classes, fail_safe_bin, hard_examples, health, log, min_confidence, mode, reject_bin, "
            "resize, score_threshold, stable_frames, tracker, travel_delay_s, trigger_line")


@pytest.mark.parametrize("overrides, message", [
    ({"health": {"host": "127.0.0.1", "prot": 8401}},
     "sort.yaml: health.prot: unknown key (did you mean port?); valid keys are enabled, host, port, token"),
    ({"hard_examples": {"folder": "/var/lib/edge-trash/hard-examples"}},
     "sort.yaml: hard_examples.folder: unknown key; valid keys are band, dir, min_agreement, min_interval_s, "
     "quota_mb"),
    ({"actuator": {"type": "simulated", "retrys": 5}},
     "sort.yaml: actuator.retrys: unknown key (did you mean retries?); valid keys are fail_bins, fail_every, gpio, "
     "journal, pulse_s, pwm, retries, retry_delay_s, serial, type"),
    ({"tracker": {"max_ages": 3}},
     "sort.yaml: tracker.max_ages: unknown key (did you mean max_age?); valid keys are iou_threshold, max_age, "
     "max_distance, min_hits"),
    ({"trigger_line": {"axis": "x", "postion": 0.4}},
     "sort.yaml: trigger_line.postion: unknown key (did you mean position?); valid keys are axis, direction, "
     "position"),
    ({"log": {"max_rows": 5000}},
     "sort.yaml: log.max_rows: unknown key (did you mean max_frame_rows?); valid keys are max_event_rows, "
     "max_frame_rows, path"),
    ({"actuator": {"type": "serial", "serial": {"port": "/dev/ttyUSB0", "baud": 9600}}},
     "sort.yaml: actuator.serial.baud: unknown key (did you mean baudrate?); valid keys are ack, baudrate, command, "
     "encoding, port, timeout_s"),
    ({"actuator": dict(pwm(BINS), pwm=dict(pwm(BINS)["pwm"], frequency=50))},
     "sort.yaml: actuator.pwm.frequency: unknown key (did you mean frequency_hz?); valid keys are channel, chip, "
     "frequency_hz, home, positions, settle_s"),
    ({"actuator": gpio(BINS[:3], reject={"chip": "/dev/gpiochip2", "pin": 13})},
     "sort.yaml: actuator.gpio.reject.pin: unknown key; valid keys are chip, line"),
    ({"min_confidance": 0.4},
     "sort.yaml: min_confidance: unknown key (did you mean min_confidence?); valid keys are " + TOP_KEYS),
    ({"colour": 1}, "sort.yaml: colour: unknown key; valid keys are " + TOP_KEYS),
])
def test_a_misspelt_key_is_refused_naming_it_the_valid_keys_and_a_close_match(overrides, message):
    assert refused(**overrides) == message


def test_the_operators_own_names_are_keys_nobody_checks():
    """classes, actuator.gpio and actuator.pwm.positions are keyed by class and bin names: any name loads,
    even one that looks like a misspelt key."""
    labels, bins = ["prot", "folder"], ["retrys", "dir", "reject"]
    raw = {"classes": {"prot": "retrys", "folder": "dir"}, "bins": bins,
           "actuator": {"type": "gpio", "gpio": {b: {"chip": "/dev/gpiochip2", "line": i} for i, b in enumerate(bins)}}}
    assert SortConfig(raw, labels).class_to_bin == {0: "retrys", 1: "dir"}
    raw["actuator"] = {"type": "pwm", "pwm": {"positions": {"retrys": 0.05, "dir": 0.06, "reject": 0.07}}}
    assert sorted(SortConfig(raw, labels).actuator["pwm"]["positions"]) == ["dir", "reject", "retrys"]


class Recording(dict):
    """A mapping of sort.yaml that notes every key read from it (``get``, ``[]``, ``in``) under its name."""

    def __init__(self, name, reads, items):
        dict.__init__(self, items)
        self.name, self.reads = name, reads

    def _read(self, key):
        self.reads.setdefault(self.name, set()).add(key)

    def get(self, key, default=None):
        self._read(key)
        return dict.get(self, key, default)

    def __getitem__(self, key):
        self._read(key)
        return dict.__getitem__(self, key)

    def __contains__(self, key):
        self._read(key)
        return dict.__contains__(self, key)


def test_config_keys_are_exactly_the_keys_the_loader_and_the_actuators_read(monkeypatch):
    """Completeness: load a sort.yaml for each actuator type and build its actuator with every mapping recording
    the keys read from it; the union must be CONFIG_KEYS, so a key read without being listed (it would be refused)
    or listed without being read (a typo of it would pass) fails here."""
    monkeypatch.delenv("EDGE_TRASH_TOKEN", raising=False)  # with it set, health.token is not read
    reads = {}
    entries = {b: Recording("actuator.gpio.*", reads, {"chip": "/dev/gpiochip2", "line": i})
               for i, b in enumerate(BINS)}
    actuators = [
        {"type": "simulated"},
        {"type": "gpio", "gpio": entries},
        {"type": "pwm", "pwm": Recording("actuator.pwm", reads, pwm(BINS)["pwm"])},
        {"type": "serial", "serial": Recording("actuator.serial", reads, {"port": "/dev/ttyUSB0"})},
    ]
    for actuator in actuators:
        raw = json.loads(json.dumps(parse_config_text(default_sort_config(LABELS), "t")))
        raw["actuator"] = actuator
        raw = Recording("", reads, {key: Recording(key, reads, value) if key in CONFIG_KEYS else value
                                    for key, value in raw.items()})
        cfg = SortConfig(raw, LABELS)
        build_actuator(cfg.actuator, {"gpio": object, "pwm": object, "serial": object})
    assert {name: sorted(keys) for name, keys in reads.items()} == {
        name: sorted(keys) for name, keys in CONFIG_KEYS.items()}


@pytest.mark.parametrize("value", ["false", "no", "off", 0.0, 2, None, [False]])
def test_health_enabled_takes_only_true_or_false(value):
    assert refused(health={"enabled": value}) == (
        "sort.yaml: health.enabled: expected true or false, without quotes, got %r" % (value,))


def test_health_enabled_0_and_1_still_read_as_before():
    """bool() took them before true/false were checked: a config of then keeps working."""
    assert (config(health={"enabled": 0}).health_enabled, config(health={"enabled": 1}).health_enabled) == (
        False, True)


def test_health_enabled_false_turns_the_page_off_with_either_loader():
    assert config(health={"enabled": False}).health_enabled is False
    assert config(health={"enabled": True}).health_enabled is True
    assert config().health_enabled is True  # the default
    text = default_sort_config(LABELS).replace('"health": {"host": "127.0.0.1", "port": 8321}',
                                               '"health": {"host": "127.0.0.1", "port": 8321, "enabled": false}')
    for use_yaml in (True, False):
        assert SortConfig(parse_config_text(text, "t", use_yaml=use_yaml), LABELS).health_enabled is False
    quoted = text.replace('"enabled": false', '"enabled": "false"')
    with pytest.raises(ConfigError) as info:
        SortConfig(parse_config_text(quoted, "sort.yaml", use_yaml=False), LABELS, "sort.yaml")
    assert str(info.value) == "sort.yaml: health.enabled: expected true or false, without quotes, got 'false'"


def yaml_error(text: str) -> str:
    pytest.importorskip("yaml")
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, "sort.yaml")
    return str(info.value)


def test_a_tab_in_yaml_is_named_with_the_fix():
    assert yaml_error("mode: conveyor\nhealth:\n\tport: 8401\n") == (
        "sort.yaml: line 3 column 1: not valid YAML: found character '\\t' that cannot start any token (a tab: "
        "YAML indents with spaces, not tabs; replace it with spaces)")
    assert yaml_error("mode:\tconveyor\n").endswith("(a tab: YAML indents with spaces, not tabs; replace it with "
                                                    "spaces)")
    # another syntax error gets no word about tabs
    assert yaml_error("mode: conveyor\nclasses: [unclosed\n").startswith("sort.yaml: line 3 column 1: not valid YAML")
    assert "tab" not in yaml_error("mode: conveyor\nclasses: [unclosed\n")


def decimal_comma(old: str, new: str) -> str:
    pytest.importorskip("yaml")
    text = default_sort_config(LABELS)
    assert old in text
    with pytest.raises(ConfigError) as info:
        SortConfig(parse_config_text(text.replace(old, new), "sort.yaml"), LABELS, "sort.yaml")
    return str(info.value)


def test_a_decimal_comma_is_named_with_the_key_before_it():
    # YAML reads `"min_confidence": 0,5` as min_confidence 0 and a key 5
    assert decimal_comma('"min_confidence": 0.5,', '"min_confidence": 0,5,') == (
        "sort.yaml: 5: unknown key (a number written with a decimal comma after min_confidence? write it with a "
        "point: 0.5, not 0,5); valid keys are " + TOP_KEYS)
    # 0,05: YAML 1.1 reads 05 as octal 5, so the value is not computed (it said 'write 0.5')
    assert decimal_comma('"min_agreement": 0.8,', '"min_agreement": 0,05,') == (
        "sort.yaml: hard_examples.5: unknown key (a number written with a decimal comma after min_agreement? write "
        "it with a point: 0.5, not 0,5); valid keys are band, dir, min_agreement, min_interval_s, quota_mb")
    # a key of digits with no key before it
    assert refused(tracker={"7": 1}) == (
        "sort.yaml: tracker.7: unknown key (a number written with a decimal comma? write it with a point: 0.5, not "
        "0,5); valid keys are iou_threshold, max_age, max_distance, min_hits")


def test_the_service_refuses_a_misspelt_section_key_before_opening_anything(tmp_path):
    from runtime_fixtures import make_bundle, make_fake_loader
    from edge_trash.edge_runtime.service import build_service
    bundle = make_bundle(str(tmp_path / "bundle"), sort_overrides={
        "health": {"enabled": False, "prot": 8401}, "log": {"path": str(tmp_path / "ev.sqlite")}})
    with pytest.raises(ConfigError) as info:
        build_service(bundle, None, "dir:%s" % tmp_path, interpreter_loader=make_fake_loader())
    assert str(info.value) == ("%s: health.prot: unknown key (did you mean port?); valid keys are enabled, host, "
                               "port, token" % os.path.join(bundle, "sort.yaml"))
    assert not os.path.exists(str(tmp_path / "ev.sqlite"))


# ------------------------------------------------------------------ the actuator's own numbers and names

@pytest.mark.parametrize("actuator, message", [
    ({"type": "gpio", "pulse_s": "0.1"}, "actuator.pulse_s: expected a number, got '0.1'"),
    ({"type": "gpio", "pulse_s": -1}, "actuator.pulse_s: -1 is outside [0.001, 10.0]"),
    ({"type": "simulated", "fail_every": "2"}, "actuator.fail_every: expected a number, got '2'"),
    ({"type": "simulated", "fail_every": 1.5}, "actuator.fail_every: expected an integer, got 1.5"),
    ({"type": "simulated", "fail_bins": "can"}, "actuator.fail_bins: expected a list of bin names, got 'can'"),
    ({"type": "simulated", "journal": 3}, "actuator.journal: expected a file path as a text, got 3"),
    ({"type": "pwm", "pwm": {"chip": "pwmchip0"}}, "actuator.pwm.chip: expected a number, got 'pwmchip0'"),
    ({"type": "pwm", "pwm": {"channel": -1}}, "actuator.pwm.channel: -1 is outside [0, 1000]"),
    ({"type": "pwm", "pwm": {"frequency_hz": 0}}, "actuator.pwm.frequency_hz: 0 is outside [1.0, 1000000.0]"),
    ({"type": "pwm", "pwm": {"settle_s": "fast"}}, "actuator.pwm.settle_s: expected a number, got 'fast'"),
    ({"type": "serial", "serial": {}}, "actuator.serial.port: expected the serial device's path as a text (e.g. "
                                       "\"/dev/ttyUSB0\"), got None"),
    ({"type": "serial", "serial": {"port": "/dev/ttyUSB0", "baudrate": "9600"}},
     "actuator.serial.baudrate: expected a number, got '9600'"),
    ({"type": "serial", "serial": {"port": "/dev/ttyUSB0", "timeout_s": 0}},
     "actuator.serial.timeout_s: 0 is outside [0.001, 60.0]"),
    ({"type": "serial", "serial": {"port": "/dev/ttyUSB0", "ack": 1}},
     "actuator.serial.ack: expected the reply that confirms a move as a text (e.g. \"OK\"), got 1"),
])
def test_the_actuators_own_settings_are_checked_at_load_naming_the_key(actuator, message):
    """A text or a negative pulse used to load, then crash the service at start (a ValueError traceback that
    systemd restarted for ever) or fail every actuation, the fail-safe bin's too."""
    if actuator["type"] == "pwm":
        actuator = dict(pwm(BINS, **actuator["pwm"]), type="pwm")
    elif actuator["type"] == "gpio":
        actuator = dict(gpio(BINS), **actuator)
    assert refused(actuator=actuator) == "sort.yaml: " + message


def test_a_sort_config_not_saved_as_utf8_names_the_line_the_byte_and_the_fix(tmp_path):
    from edge_trash.edge_runtime.sort_config import load_sort_config

    path = tmp_path / "sort.yaml"
    text = default_sort_config(LABELS).replace('"reject"', '"r\u00e9ject"')
    path.write_bytes(text.encode("latin-1"))
    line = next(k for k, row in enumerate(text.splitlines(), 1) if "r\u00e9ject" in row)
    column = text.splitlines()[line - 1].index("\u00e9") + 1
    with pytest.raises(ConfigError) as info:
        load_sort_config(str(path), LABELS)
    assert str(info.value) == (
        "%s: line %d, column %d: byte 0xe9 is not UTF-8 (the file was saved in another encoding, e.g. Latin-1): "
        "save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 %s > sort.utf8.yaml`, and use that file"
        % (path, line, column, path))
