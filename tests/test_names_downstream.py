"""Class names past the converter: the exported sort.yaml template reads back every name exactly with
PyYAML and with the standard-library fallback, and the serial actuator's bins are checked at load time."""

import json
import os
import re
import sys
import threading

import pytest

from edge_trash.edge_runtime.actuators import ActuationScheduler, ActuatorError, SerialActuator, build_actuator
from edge_trash.edge_runtime.service import build_service
from edge_trash.edge_runtime.sort_config import (ConfigError, SortConfig, default_sort_config, load_sort_config,
                                                 parse_config_text, quote_text)
from runtime_fixtures import make_bundle, make_fake_loader, q, write_conveyor_frames
from test_runtime_actuators import FakeSerial

EMOJI = "Plastic bottle \U0001F964"
CJK_LONG = "\u5851\u6599\u74f6" * 57  # 171 characters: over 1024 as \uXXXX escapes
CJK_HUGE = "\u5851\u6599\u74f6" * 400  # 1200 characters: over YAML's implicit-key limit as it is
NAMES = [
    EMOJI, CJK_LONG, CJK_HUGE, "a" * 200, "Plastique \u00e0 usage unique", 'say "hi"', "back\\slash\\",
    "a # b", "#hash", "key: value", " leading", "trailing ", "  both  ", "? query", "?", "x ?", "[a]", "{b}",
    "a, b", "it's", "tab\there", "nl\nhere", "\x7f\x85\u2028\u2029\ufeff\ufffe\uffff end", "\x00", "null",
    "true", "1", "~", "-", "- x", "&anchor", "*alias", "!tag", "%x", "@x", "`x", "|", ">", "'", '"', "\\",
    '\\"', "\U0001F469\u200d\U0001F469\u200d\U0001F467 family", "\U0010fffd", "e\u0301", "\u00e9" * 600,
]


def _no_pyyaml(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` raises ImportError, as on a bare board


@pytest.mark.parametrize("use_yaml", [True, False])
def test_template_reads_every_class_name_back_exactly_with_either_loader(tmp_path, use_yaml):
    text = default_sort_config(NAMES)
    path = tmp_path / "sort.yaml"
    path.write_bytes(text.encode("utf-8"))  # as export writes it
    raw = parse_config_text(text, "sort.yaml", use_yaml=use_yaml)
    assert list(raw["classes"]) == NAMES
    assert list(raw["classes"].values()) == NAMES
    assert raw["bins"] == sorted(set(NAMES) | {"reject"})
    cfg = load_sort_config(str(path), NAMES, use_yaml=use_yaml)
    assert cfg.class_to_bin == dict(enumerate(NAMES)) and cfg.unmapped == []


def test_both_loaders_agree_on_the_whole_template_and_without_an_importable_pyyaml(monkeypatch):
    import yaml

    text = default_sort_config(NAMES)
    with_yaml = parse_config_text(text, "t", yaml_module=yaml)
    assert with_yaml["classes"] == dict(zip(NAMES, NAMES)) and with_yaml["mode"] == "conveyor"
    _no_pyyaml(monkeypatch)
    assert parse_config_text(text, "t") == with_yaml  # the stdlib fallback, chosen because import fails


def test_template_writes_names_as_utf8_characters_and_long_keys_explicitly():
    text = default_sort_config([EMOJI, CJK_LONG, CJK_HUGE, 'q"b\\', "caf\u00e9"])
    lines = text.splitlines()
    # Characters above U+FFFF as JSON's escape pair (PyYAML before 5.1 refuses them raw), the rest as is.
    assert '    "Plastic bottle \\ud83e\\udd64": "Plastic bottle \\ud83e\\udd64",' in lines
    assert '    "%s": "%s",' % (CJK_LONG, CJK_LONG) in lines
    assert '    ? "%s": "%s",' % (CJK_HUGE, CJK_HUGE) in lines  # 1202 characters quoted: an explicit key
    assert '    "q\\"b\\\\": "q\\"b\\\\",' in lines
    assert '    "caf\u00e9": "caf\u00e9"' in lines


def test_quote_text_escapes_only_what_yaml_cannot_carry_raw():
    assert quote_text("caf\u00e9 \u5851") == '"caf\u00e9 \u5851"'
    assert quote_text('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_text("\U0001F964\U0010fffd") == '"\\ud83e\\udd64\\udbff\\udffd"'
    assert quote_text("\t\n\x7f\x85\u2028\u2029\ufeff") == '"\\u0009\\u000a\\u007f\\u0085\\u2028\\u2029\\ufeff"'


def test_template_reads_back_with_a_pyyaml_older_than_5_1(monkeypatch):
    import yaml

    # PyYAML 3.13 (Debian buster's python3-yaml, on Mendel) differs here: its reader refuses any
    # character above U+FFFF in the text.
    monkeypatch.setattr(yaml.reader.Reader, "NON_PRINTABLE",
                        re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD]"))
    raw = parse_config_text(default_sort_config(NAMES), "sort.yaml")
    assert list(raw["classes"]) == NAMES and list(raw["classes"].values()) == NAMES
    with pytest.raises(ConfigError) as info:
        parse_config_text('{"classes": {"%s": "x"}}' % EMOJI, "sort.yaml")
    assert str(info.value) == (
        'sort.yaml: not valid YAML: unacceptable character #x1f964: special characters are not allowed\n'
        '  in "<unicode string>", position 29 (PyYAML before 5.1 reads no character above U+FFFF written as '
        'itself: write it as a JSON escape pair, "\\ud83e\\udd64" for this one, as export does)')


def test_an_old_template_with_surrogate_pair_escapes_reads_the_same_with_pyyaml():
    # Templates exported before names were written as UTF-8: json.dumps' ASCII escapes, which PyYAML
    # alone reads as two lone surrogates.
    old = '{"classes": %s, "bins": %s}' % (json.dumps({EMOJI: EMOJI}), json.dumps([EMOJI, "reject"]))
    assert "\\ud83e\\udd64" in old
    assert parse_config_text(old, "t") == parse_config_text(old, "t", use_yaml=False) == {
        "classes": {EMOJI: EMOJI}, "bins": [EMOJI, "reject"]}


@pytest.mark.parametrize("pyyaml", [True, False])
def test_the_service_runs_its_own_template_with_such_names(tmp_path, monkeypatch, pyyaml):
    labels = [EMOJI, CJK_HUGE, 'say "hi" # \\ ']  # red, green, blue items of the fake detector
    bundle = make_bundle(str(tmp_path / "bundle"), labels=labels)
    template = default_sort_config(labels).replace(
        '"/var/lib/edge-trash/hard-examples"', json.dumps(str(tmp_path / "hard"))).replace(
        '"travel_delay_s": 0.8', '"travel_delay_s": 0.0')
    with open(os.path.join(bundle, "sort.yaml"), "wb") as f:
        f.write(template.encode("utf-8"))
    if not pyyaml:
        _no_pyyaml(monkeypatch)
    write_conveyor_frames(str(tmp_path / "frames"), 120)
    db = str(tmp_path / "ev.sqlite")
    loop, cleanup = build_service(bundle, None, "dir:%s" % (tmp_path / "frames"), log_path=db, health=False,
                                  interpreter_loader=make_fake_loader())
    try:
        loop.run(threading.Event())
    finally:
        cleanup()
    rows = q(db, "SELECT label, bin, actuated_bin, status FROM decisions WHERE reason = 'class'")
    assert rows and all(label == bin_name == actuated and status == "actuated"
                        for label, bin_name, actuated, status in rows)
    assert {label for label, _, _, _ in rows} <= set(labels)
    assert q(db, "SELECT COUNT(*) FROM faults") == [(0,)]


def _serial_config(labels, **serial):
    raw = parse_config_text(default_sort_config(labels), "sort.yaml")
    raw["actuator"] = {"type": "serial", "serial": dict({"port": "/dev/ttyUSB0"}, **serial)}
    return SortConfig(raw, labels)


def test_serial_refuses_a_bin_it_cannot_send_at_load_time_naming_the_bin_and_the_fix():
    with pytest.raises(ConfigError) as info:
        _serial_config(["Pappe", "Plastique \u00e0 usage unique"])
    assert str(info.value) == (
        "sort.yaml: actuator.serial: bin 'Plastique \u00e0 usage unique' cannot be sent: the serial actuator "
        "sends ASCII; rename the bin in classes and bins to an ASCII name (e.g. 'Plastique a usage unique'), "
        "or set actuator.serial.encoding to \"utf-8\" if the controller reads UTF-8")
    with pytest.raises(ConfigError) as info:
        _serial_config(["\u5851\u6599\u74f6"])
    assert str(info.value) == (
        "sort.yaml: actuator.serial: bin '\u5851\u6599\u74f6' cannot be sent: the serial actuator sends ASCII; "
        "rename the bin in classes and bins to an ASCII name, or set actuator.serial.encoding to \"utf-8\" "
        "if the controller reads UTF-8")


def test_serial_checks_the_reject_and_fail_safe_bins_and_the_command_too():
    raw = parse_config_text(default_sort_config(["can"]), "sort.yaml")
    raw.update(bins=["can", "Abfall\u00e4"], reject_bin="Abfall\u00e4", fail_safe_bin="Abfall\u00e4",
               actuator={"type": "serial", "serial": {"port": "/dev/ttyUSB0"}})
    with pytest.raises(ConfigError, match="^sort.yaml: actuator.serial: bin 'Abfall\u00e4' cannot be sent"):
        SortConfig(raw, ["can"])
    with pytest.raises(ConfigError) as info:
        _serial_config(["can"], command="BIN {bin} {slot}\n")
    assert str(info.value) == ("sort.yaml: actuator.serial.command: 'BIN {bin} {slot}\\n' cannot be filled in "
                               "(KeyError: 'slot'); it may use {bin} and {ref}, and {{ }} for literal braces")
    with pytest.raises(ConfigError) as info:
        _serial_config(["can"], command="BAC \u2192 {bin}\n")
    assert str(info.value) == "sort.yaml: actuator.serial.command: 'BAC \u2192 can\\n' cannot be sent as ascii"
    with pytest.raises(ConfigError) as info:
        _serial_config(["can"], encoding="latin-1")
    assert str(info.value) == "sort.yaml: actuator.serial.encoding: 'latin-1' is not one of ascii, utf-8"
    # An unused bin in the list is never sent, so it is not refused; other actuators take any name.
    raw = parse_config_text(default_sort_config(["can"]), "sort.yaml")
    raw.update(bins=["can", "reject", "\u5851"], actuator={"type": "serial", "serial": {"port": "/dev/ttyUSB0"}})
    assert SortConfig(raw, ["can"]).bins == ["can", "reject", "\u5851"]
    raw = parse_config_text(default_sort_config(["\u5851"]), "sort.yaml")
    raw["actuator"] = {"type": "gpio", "gpio": {"\u5851": {"chip": "/dev/gpiochip2", "line": 13},
                                                "reject": {"chip": "/dev/gpiochip2", "line": 14}}}
    assert SortConfig(raw, ["\u5851"]).class_to_bin == {0: "\u5851"}


def test_serial_with_utf8_encoding_sends_every_bin():
    labels = ["Plastique \u00e0 usage unique", "Pappe", "\u5851\u6599\u74f6"]
    cfg = _serial_config(labels, encoding="utf-8", ack="OK")
    actuator = build_actuator(cfg.actuator, {"serial": FakeSerial})
    actuator.open()
    actuator.conn.replies = [b"OK\n"] * 3

    class Journal:
        done = []

        def mark_attempt(self, ref):
            pass

        def mark_done(self, ref, bin_name, attempts, status, latency_ms):
            self.done.append((ref, bin_name, status))

    faults = []
    scheduler = ActuationScheduler(actuator, Journal(), cfg.fail_safe_bin, 1, 0.0,
                                   on_fault=lambda kind, message, ref: faults.append(message))
    for ref, class_id in enumerate(sorted(cfg.class_to_bin), 1):
        scheduler._fire(ref, cfg.class_to_bin[class_id], 0.0)
    assert actuator.conn.written == [b"BIN Plastique \xc3\xa0 usage unique\n", b"BIN Pappe\n",
                                  b"BIN \xe5\xa1\x91\xe6\x96\x99\xe7\x93\xb6\n"]
    assert Journal.done == [(1, labels[0], "actuated"), (2, "Pappe", "actuated"), (3, labels[2], "actuated")]
    assert faults == []


def test_serial_actuator_refuses_an_unknown_encoding():
    with pytest.raises(ActuatorError, match="^actuator.serial.encoding: 'utf-16' is not one of ascii, utf-8$"):
        SerialActuator("/dev/ttyUSB0", encoding="utf-16", serial_class=FakeSerial)
