"""``sort.yaml``: loading, validation (errors name the key) and the default template.

``sort.yaml`` is loaded with PyYAML when it is importable; otherwise JSON syntax (YAML is a
superset of JSON) with ``#`` comment lines is accepted, which is exactly the format of the
template ``default_sort_config`` writes, so a fresh bundle loads with the standard library alone.
The template is UTF-8 with class names written as themselves (``quote_text``; an emoji as a JSON
escape pair, for PyYAML before 5.1: Mendel's Debian buster ships 3.13), and a name too long for a
YAML implicit key behind YAML's ``? `` (which the fallback drops): both loaders read every name
back exactly. Every validation error names the key; a key nothing reads (a misspelt one, which would
leave its default in force) is refused by name, with the keys that are read there (``CONFIG_KEYS``).
"""

import difflib
import json
import math
import os
import re
import unicodedata
from typing import Dict, List, Optional, Sequence

from edge_trash.edge_runtime.actuators import SERIAL_COMMAND, SERIAL_ENCODINGS
from edge_trash.edge_runtime.operator_page import is_loopback
from edge_trash.edge_runtime.tracker import MODES

ACTUATOR_TYPES = ("simulated", "gpio", "pwm", "serial")
INSTALL_YAML = "sudo apt-get install python3-yaml"

# The keys of each mapping of sort.yaml that something reads, in one place: any other key is refused, naming it
# (a misspelt key would otherwise leave its default in force without a word). "" is the top level and
# "actuator.gpio.*" each entry of actuator.gpio; the actuator's keys are those SortConfig reads and those
# actuators.build_actuator reads (a test records what both read and compares). The mappings keyed by the
# operator's own names (classes, actuator.gpio, actuator.pwm.positions) are not listed: any key there is theirs.
CONFIG_KEYS = {
    "": ("mode", "classes", "bins", "reject_bin", "fail_safe_bin", "min_confidence", "score_threshold",
         "travel_delay_s", "trigger_line", "stable_frames", "tracker", "actuator", "hard_examples", "log",
         "health", "resize"),
    "trigger_line": ("axis", "position", "direction"),
    "tracker": ("iou_threshold", "max_distance", "max_age", "min_hits"),
    "actuator": ("type", "retries", "retry_delay_s", "journal", "fail_bins", "fail_every", "gpio", "pulse_s",
                 "pwm", "serial"),
    "actuator.gpio.*": ("chip", "line"),
    "actuator.pwm": ("chip", "channel", "positions", "frequency_hz", "settle_s", "home"),
    "actuator.serial": ("port", "baudrate", "command", "ack", "timeout_s", "encoding"),
    "hard_examples": ("dir", "band", "min_agreement", "quota_mb", "min_interval_s"),
    "log": ("path", "max_frame_rows", "max_event_rows"),
    "health": ("host", "port", "enabled", "token"),
}


class ConfigError(Exception):
    """sort.yaml is unreadable or invalid; the message names the file and key."""


class SortConfig:
    """Validated sort.yaml. Attributes mirror the keys (see ``default_sort_config``)."""

    def __init__(self, raw: Dict, labels: Sequence[str], source: str = "sort.yaml"):
        self.raw = raw
        self.source = source
        self.labels = list(labels)
        self._validate()

    def _err(self, key: str, problem: str) -> ConfigError:
        return ConfigError("%s: %s: %s" % (self.source, key, problem))

    def _section(self, key: str) -> Dict:
        """The mapping under ``key`` ({} when absent or empty); anything else is an error."""
        value = self.raw.get(key) or {}
        if not isinstance(value, dict):
            raise self._err(key, "expected a mapping of keys, got %r" % (value,))
        return value

    def _check_keys(self, table: Dict, name: str = "", pattern: str = "") -> None:
        """Refuse a key of ``table`` (the mapping at ``name``, "" for the top level) that ``CONFIG_KEYS[pattern]``
        does not list, naming it, the valid keys and a close match; then the same for the listed mappings in it.
        A value that is no mapping is left to the check of its key."""
        valid = CONFIG_KEYS[pattern]
        for key in table:
            if key not in valid:
                raise self._err(_dotted(name, key), "unknown key%s; valid keys are %s"
                                % (_unknown_key_hint(table, key, valid), ", ".join(sorted(valid))))
        for key, value in table.items():
            child = _dotted(pattern, key)
            if not isinstance(value, dict):
                continue
            if child in CONFIG_KEYS:
                self._check_keys(value, _dotted(name, key), child)
            elif child + ".*" in CONFIG_KEYS:
                for entry_name, entry in value.items():
                    if isinstance(entry, dict):
                        self._check_keys(entry, _dotted(_dotted(name, key), entry_name), child + ".*")

    def _flag(self, section: str, key: str, default: bool) -> bool:
        """A boolean of ``section``: only YAML's true/false (a text such as "false" would read as true)."""
        value = self._section(section).get(key, default)
        if value in (0, 1) and not isinstance(value, float):  # true/false, and 0/1 as configs before this check had
            return bool(value)
        raise self._err("%s.%s" % (section, key), "expected true or false, without quotes, got %r" % (value,))

    def _text(self, section: str, key: str, default: Optional[str]) -> Optional[str]:
        """A text value of ``section`` (a path or host name), or ``default`` when absent."""
        value = self._section(section).get(key, default)
        if value is not None and not isinstance(value, str):
            raise self._err("%s.%s" % (section, key), "expected a text, got %r" % (value,))
        return value

    def _number(self, key: str, default, lo=None, hi=None, integer=False, section=None):
        table = self.raw if section is None else self._section(section)
        name = key if section is None else "%s.%s" % (section, key)
        return self._number_in(table, name, default, lo, hi, integer)

    def _number_in(self, table: Dict, name: str, default, lo=None, hi=None, integer=False):
        """The number under the last part of ``name`` (``actuator.pwm.settle_s``) in ``table``, checked."""
        value = table.get(name.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._err(name, "expected a number, got %r" % (value,))
        if integer and int(value) != value:
            raise self._err(name, "expected an integer, got %r" % (value,))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self._err(name, "%r is outside [%s, %s]" % (value, lo, hi))
        return int(value) if integer else float(value)

    def _check_serial(self, sent_bins) -> None:
        """The serial actuator sends ``command`` with each bin name in it as ``encoding`` (ASCII by
        default): a bin it cannot send would fail every time, item after item going to the fail-safe
        bin, so it is refused here, naming the bin and the fix."""
        serial = self.actuator.get("serial") or {}
        if not isinstance(serial, dict):
            raise self._err("actuator.serial", "expected a mapping of keys, got %r" % (serial,))
        encoding = serial.get("encoding", "ascii")
        if encoding not in SERIAL_ENCODINGS:
            raise self._err("actuator.serial.encoding",
                            "%r is not one of %s" % (encoding, ", ".join(SERIAL_ENCODINGS)))
        command = serial.get("command", SERIAL_COMMAND)
        if not isinstance(command, str):
            raise self._err("actuator.serial.command", "expected a text, got %r" % (command,))
        for bin_name in sent_bins:
            try:
                line = command.format(bin=bin_name, ref=0)
            except (KeyError, IndexError, ValueError) as exc:
                raise self._err("actuator.serial.command", "%r cannot be filled in (%s: %s); it may use {bin} and "
                                                           "{ref}, and {{ }} for literal braces"
                                % (command, type(exc).__name__, exc))
            try:
                line.encode(encoding)
            except UnicodeEncodeError:
                if encoding == "ascii" and not any(ord(ch) > 127 for ch in command):
                    folded = _ascii_fold(bin_name)
                    raise self._err("actuator.serial", "bin %r cannot be sent: the serial actuator sends ASCII; "
                                                       "rename the bin in classes and bins to an ASCII name%s, or "
                                                       "set actuator.serial.encoding to \"utf-8\" if the "
                                                       "controller reads UTF-8"
                                    % (bin_name, " (e.g. %r)" % folded if folded else ""))
                raise self._err("actuator.serial.command", "%r cannot be sent as %s" % (line, encoding))

    def _check_gpio(self, sent_bins) -> None:
        """The gpio actuator pulses one line per bin (``actuator.gpio``: {bin: {"chip": ..., "line": ...}}):
        a bin that can be sent (a class's bin, reject_bin, fail_safe_bin) without a line would fail every
        time, item after item going to the fail-safe bin, so it is refused here, naming the bins and the fix;
        every entry must be {"chip": a device path, "line": an integer >= 0}."""
        lines = self.actuator.get("gpio")
        if lines is None:
            lines = {}
        if not isinstance(lines, dict):
            raise self._err("actuator.gpio", "expected a mapping bin -> {\"chip\": \"/dev/gpiochip2\", "
                                             "\"line\": 13}, got %r" % (lines,))
        missing = [b for b in sent_bins if b not in lines]
        if missing:
            raise self._no_output_for("actuator.gpio", "line", missing,
                                      '{"chip": "/dev/gpiochip2", "line": 13}', "one line")
        for bin_name, spec in lines.items():  # the actuator opens every line it is given, at start
            key = "actuator.gpio.%s" % (bin_name,)
            if not isinstance(spec, dict):
                raise self._err(key, "expected {\"chip\": \"/dev/gpiochip2\", \"line\": 13}, got %r" % (spec,))
            if not isinstance(spec.get("chip"), str):
                raise self._err(key + ".chip", "expected the GPIO chip's device path as a text (e.g. "
                                               "\"/dev/gpiochip2\"), got %r" % (spec.get("chip"),))
            line = spec.get("line")
            if isinstance(line, bool) or not isinstance(line, (int, str)) or not str(line).isdecimal():
                raise self._err(key + ".line", "expected the line number on %s as an integer >= 0 (e.g. 13), "
                                               "got %r" % (spec["chip"], line))

    def _no_output_for(self, key: str, what: str, missing: List[str], example: str, each: str) -> "ConfigError":
        """The error for bins that can be sent but have no ``what`` (line, position) under ``key``."""
        one = len(missing) == 1
        return self._err(key, "no %s for %s %s: %s items could never be actuated and would end in fail_safe_bin "
                              "(or nowhere, for fail_safe_bin itself); add %s to %s (e.g. %s: %s), %s for each bin "
                              "that classes, reject_bin and fail_safe_bin name"
                         % (what, "bin" if one else "bins", ", ".join(repr(b) for b in missing),
                            "its" if one else "their", "it" if one else "them", key, quote_text(missing[0]),
                            example, each))

    def _check_pwm(self, sent_bins) -> None:
        """The pwm actuator moves a servo to a duty cycle per bin (``actuator.pwm.positions``: {bin: duty}):
        a bin that can be sent without a position would fail every time, item after item going to the
        fail-safe bin, so it is refused here, naming the bins and the fix; a duty cycle (and ``home``)
        must be a number in [0, 1]."""
        pwm = self.actuator.get("pwm")
        if pwm is None:
            pwm = {}
        if not isinstance(pwm, dict):
            raise self._err("actuator.pwm", "expected a mapping of keys, got %r" % (pwm,))
        positions = pwm.get("positions")
        if positions is None:
            positions = {}
        if not isinstance(positions, dict):
            raise self._err("actuator.pwm.positions", "expected a mapping bin -> duty cycle in [0, 1], got %r"
                            % (positions,))
        missing = [b for b in sent_bins if b not in positions]
        if missing:
            raise self._no_output_for("actuator.pwm.positions", "position", missing, "0.075, a duty cycle in [0, 1]",
                                      "one")
        checks = [("actuator.pwm.positions.%s" % name, duty) for name, duty in positions.items()]
        if pwm.get("home") is not None:
            checks.append(("actuator.pwm.home", pwm["home"]))
        for key, duty in checks:
            if isinstance(duty, bool) or not isinstance(duty, (int, float)) or not 0.0 <= duty <= 1.0:
                raise self._err(key, "expected a duty cycle in [0, 1] (e.g. 0.075), got %r" % (duty,))

    def _check_actuator_settings(self) -> None:
        """The actuator's own numbers and names, checked at start like every other key: a text, or a pulse of
        -1 s, used to pass here and then crash the service at start (restarted by systemd for ever) or fail every
        actuation, the fail-safe bin's too."""
        spec, kind = self.actuator, self.actuator["type"]
        if kind == "simulated":
            self._number_in(spec, "actuator.fail_every", 0, 0, 10 ** 9, integer=True)
            fail_bins = spec.get("fail_bins", [])
            if not isinstance(fail_bins, list) or not all(isinstance(b, str) for b in fail_bins):
                raise self._err("actuator.fail_bins", "expected a list of bin names, got %r" % (fail_bins,))
            if spec.get("journal") is not None and not isinstance(spec["journal"], str):
                raise self._err("actuator.journal", "expected a file path as a text, got %r" % (spec["journal"],))
        elif kind == "gpio":
            self._number_in(spec, "actuator.pulse_s", 0.1, 0.001, 10.0)
        elif kind == "pwm":
            pwm = spec.get("pwm") or {}
            self._number_in(pwm, "actuator.pwm.chip", 0, 0, 1000, integer=True)
            self._number_in(pwm, "actuator.pwm.channel", 0, 0, 1000, integer=True)
            self._number_in(pwm, "actuator.pwm.frequency_hz", 50.0, 1.0, 1e6)
            self._number_in(pwm, "actuator.pwm.settle_s", 0.3, 0.0, 10.0)
        elif kind == "serial":
            serial = spec.get("serial") or {}
            if not isinstance(serial.get("port"), str) or not serial["port"]:
                raise self._err("actuator.serial.port", "expected the serial device's path as a text (e.g. "
                                                        "\"/dev/ttyUSB0\"), got %r" % (serial.get("port"),))
            self._number_in(serial, "actuator.serial.baudrate", 115200, 50, 10 ** 7, integer=True)
            self._number_in(serial, "actuator.serial.timeout_s", 0.5, 0.001, 60.0)
            if serial.get("ack") is not None and not isinstance(serial["ack"], str):
                raise self._err("actuator.serial.ack", "expected the reply that confirms a move as a text (e.g. "
                                                       "\"OK\"), got %r" % (serial["ack"],))

    def _validate(self) -> None:
        raw = self.raw
        if not isinstance(raw, dict):
            raise ConfigError("%s: the top level must be a mapping of keys, got %s" % (self.source, type(raw).__name__))
        self._check_keys(raw)
        self.mode = raw.get("mode", "conveyor")
        if self.mode not in MODES:
            raise self._err("mode", "%r is not one of %s" % (self.mode, ", ".join(MODES)))
        classes = raw.get("classes")
        if not isinstance(classes, dict) or not classes:
            raise self._err("classes", "expected a mapping class name -> bin name")
        for name in classes:
            if name not in self.labels:
                raise self._err("classes.%s" % name, "not a class of this model; its classes are %s" % ", ".join(self.labels))
        self.reject_bin = raw.get("reject_bin", "reject")
        self.fail_safe_bin = raw.get("fail_safe_bin", self.reject_bin)
        bins = raw.get("bins")
        if bins is None:
            bins = sorted(set(classes.values()) | {self.reject_bin, self.fail_safe_bin})
        if not isinstance(bins, list) or not all(isinstance(b, str) for b in bins):
            raise self._err("bins", "expected a list of bin names, got %r" % (bins,))
        self.bins = list(bins)
        for name, bin_name in classes.items():
            if bin_name not in self.bins:
                raise self._err("classes.%s" % name, "bin %r is not in bins %s" % (bin_name, self.bins))
        for key in ("reject_bin", "fail_safe_bin"):
            if getattr(self, key) not in self.bins:
                raise self._err(key, "%r is not in bins %s" % (getattr(self, key), self.bins))
        self.class_to_bin = {self.labels.index(n): b for n, b in classes.items()}
        self.min_confidence = self._number("min_confidence", 0.5, 0.0, 1.0)
        self.score_threshold = self._number("score_threshold", 0.3, 0.0, 1.0)
        self.travel_delay_s = self._number("travel_delay_s", 0.0, 0.0, 60.0)
        self.stable_frames = self._number("stable_frames", 5, 1, 10000, integer=True)
        trigger = self._section("trigger_line")
        self.trigger_axis = trigger.get("axis", "x")
        if self.trigger_axis not in ("x", "y"):
            raise self._err("trigger_line.axis", "%r is not 'x' or 'y'" % (self.trigger_axis,))
        self.trigger_position = self._number("position", 0.5, 0.0, 1.0, section="trigger_line")
        self.trigger_direction = trigger.get("direction", 1)
        if self.trigger_direction not in (1, -1):
            raise self._err("trigger_line.direction", "%r is not 1 or -1" % (self.trigger_direction,))
        if self.mode == "conveyor" and self.trigger_position in (0.0, 1.0):
            # an item's centre is always inside the frame, so it never crosses a line on the frame's edge
            raise self._err("trigger_line.position", "%r is the edge of the frame: no item's centre ever crosses "
                                                     "it, so no item would be decided; put the line inside the "
                                                     "frame, e.g. 0.5" % (trigger.get("position"),))
        self.tracker_iou = self._number("iou_threshold", 0.2, 0.0, 1.0, section="tracker")
        self.tracker_max_distance = self._number("max_distance", 1.0, 0.0, 100.0, section="tracker")
        if self.tracker_iou >= 1.0 and self.tracker_max_distance == 0.0:
            raise self._err("tracker.iou_threshold", "1 together with tracker.max_distance 0 matches only "
                                                     "pixel-identical boxes, so an item loses its track on every "
                                                     "frame and is never decided; lower tracker.iou_threshold "
                                                     "(default 0.2) or raise tracker.max_distance (default 1.0)")
        max_age = self._section("tracker").get("max_age")
        if max_age == 0 and not isinstance(max_age, bool):
            raise self._err("tracker.max_age", "0 ends every track on the frame after it is seen, before its item "
                                               "can be decided, so nothing would be sorted; set it to the frames "
                                               "a track may go without a detection, at least 1 (default 5)")
        self.tracker_max_age = self._number("max_age", 5, 1, 10000, integer=True, section="tracker")
        self.tracker_min_hits = self._number("min_hits", 3, 1, 10000, integer=True, section="tracker")
        self.resize = raw.get("resize", "stretch")
        if self.resize not in ("stretch", "letterbox"):
            raise self._err("resize", "%r is not 'stretch' or 'letterbox'" % (self.resize,))
        self.actuator = raw.get("actuator") or {"type": "simulated"}
        if not isinstance(self.actuator, dict) or self.actuator.get("type") not in ACTUATOR_TYPES:
            raise self._err("actuator.type", "%r is not one of %s" % (
                self.actuator.get("type") if isinstance(self.actuator, dict) else self.actuator, ", ".join(ACTUATOR_TYPES)))
        sent_bins = sorted(set(classes.values()) | {self.reject_bin, self.fail_safe_bin})
        if self.actuator["type"] == "serial":
            self._check_serial(sent_bins)
        self.actuator_retries = self._number("retries", 2, 0, 100, integer=True, section="actuator")
        self.actuator_retry_delay_s = self._number("retry_delay_s", 0.05, 0.0, 10.0, section="actuator")
        if self.actuator["type"] == "gpio":
            self._check_gpio(sent_bins)
        elif self.actuator["type"] == "pwm":
            self._check_pwm(sent_bins)
        self._check_actuator_settings()
        hard = self._section("hard_examples")
        self.hard_dir = self._text("hard_examples", "dir", None)
        band = hard.get("band", [0.3, 0.6])
        if (not isinstance(band, list) or len(band) != 2 or not all(isinstance(v, (int, float)) for v in band)
                or not 0 <= band[0] <= band[1] <= 1):
            raise self._err("hard_examples.band", "expected [low, high] with 0 <= low <= high <= 1, got %r" % (band,))
        self.hard_band = (float(band[0]), float(band[1]))
        self.hard_min_agreement = self._number("min_agreement", 0.8, 0.0, 1.0, section="hard_examples")
        self.hard_quota_mb = self._number("quota_mb", 200, 0, 1e6, section="hard_examples")
        self.hard_min_interval_s = self._number("min_interval_s", 1.0, 0.0, 1e6, section="hard_examples")
        self.log_path = self._text("log", "path", None)
        self.log_max_frame_rows = self._number("max_frame_rows", 1000000, 1000, 1e9, integer=True, section="log")
        self.log_max_event_rows = self._number("max_event_rows", 100000, 100, 1e9, integer=True, section="log")
        health = self._section("health")
        self.health_host = self._text("health", "host", "127.0.0.1")
        self.health_port = self._number("port", 8321, 0, 65535, integer=True, section="health")
        self.health_enabled = self._flag("health", "enabled", True)
        token = os.environ.get("EDGE_TRASH_TOKEN") or health.get("token")
        if token is not None and (not isinstance(token, str) or len(token) < 8):
            raise self._err("health.token", "expected a string of at least 8 characters")
        self.health_token = token
        if self.health_enabled and not is_loopback(str(self.health_host)) and not token:
            raise self._err("health.host", "%r is reachable from the network: set health.token (or the "
                                           "EDGE_TRASH_TOKEN environment variable) so every request of the "
                                           "operator page needs it, or keep 127.0.0.1" % (self.health_host,))
        unmapped = [n for n in self.labels if n not in classes]
        self.unmapped = unmapped


def _dotted(name: str, key) -> str:
    """``key`` under ``name`` as an error names it: ``health.port`` (``key`` itself at the top level)."""
    return "%s.%s" % (name, key) if name else str(key)


def _unknown_key_hint(table: Dict, key, valid: Sequence[str]) -> str:
    """What ``key``, unknown in ``table``, likely is: a close match of ``valid``; for a key of digits only, the
    decimals of a number written with a comma (``"min_confidence": 0,5`` reads as min_confidence 0 and a key 5),
    named after the key before it."""
    text = str(key)
    if re.fullmatch(r"[0-9]+", text):  # its digits as written are gone: YAML 1.1 reads "05" as octal 5
        keys = list(table)
        at = keys.index(key)
        after = " after %s" % keys[at - 1] if at else ""
        return " (a number written with a decimal comma%s? write it with a point: 0.5, not 0,5)" % after
    close = difflib.get_close_matches(text, valid, n=1)
    return " (did you mean %s?)" % close[0] if close else ""


def class_mapping_gaps(config: SortConfig, labels: Optional[Sequence[str]] = None) -> List[str]:
    """The classes of ``labels`` (default: the model's, ``config.labels``) that ``config`` maps to no bin,
    in label order. The policy sends an item of such a class to ``reject_bin`` (``unmapped``)."""
    mapped = set(config.raw.get("classes") or {})
    return [name for name in (config.labels if labels is None else labels) if name not in mapped]


def mapping_gaps_warning(config: SortConfig, labels: Optional[Sequence[str]] = None) -> Optional[str]:
    """The start-up warning for :func:`class_mapping_gaps` (None when every class has a bin): names the
    classes, the bin their items go to meanwhile and the fix in sort.yaml."""
    gaps = class_mapping_gaps(config, labels)
    if not gaps:
        return None
    example = _mapping_entry(gaps[0], "BIN")
    one = len(gaps) == 1
    return ("%s: classes has no bin for %s %s: items of %s go to reject_bin %s until %s added to classes in "
            "sort.yaml (e.g. %s, BIN one of bins %s), then restart the service"
            % (config.source, "class" if one else "classes", ", ".join(gaps), "it" if one else "them",
               quote_text(config.reject_bin), "it is" if one else "they are", example, config.bins))


def _ascii_fold(name: str) -> str:
    """``name`` without accents (NFKD, non-ASCII dropped): a suggestion for an ASCII bin name."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return " ".join(folded.split())


def _strip_comments(text: str) -> str:
    """The no-PyYAML fallback's view of a YAML flow document as JSON: ``#`` comments outside strings
    are removed, and so is YAML's explicit-key indicator ``? `` (which the template writes before a
    class name too long for an implicit key; JSON never has a ``?`` outside a string)."""
    out = []
    for line in text.splitlines():
        in_string, escaped, cut, explicit = False, False, len(line), []
        for i, ch in enumerate(line):
            if escaped:
                escaped = False
            elif ch == "\\" and in_string:
                escaped = True
            elif ch == '"':
                in_string = not in_string
            elif ch == "#" and not in_string and (i == 0 or line[i - 1] in " \t"):
                cut = i
                break
            elif ch == "?" and not in_string and line[i + 1:i + 2] in ("", " ", "\t"):
                explicit.append(i)
        chars = list(line[:cut])
        for i in explicit:
            chars[i] = " "
        out.append("".join(chars))
    return "\n".join(out)


def _join_surrogate_pairs(value):
    """PyYAML reads a ``\\uD83E\\uDD64`` escape pair (JSON's way to write a character above U+FFFF,
    as ``json.dumps`` does) as two lone surrogates where JSON reads one character: join them, so a
    sort.yaml reads the same with and without PyYAML."""
    if isinstance(value, str):
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return value
    if isinstance(value, dict):
        return {_join_surrogate_pairs(k): _join_surrogate_pairs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_surrogate_pairs(v) for v in value]
    return value


def parse_config_text(text: str, source: str, yaml_module=None, use_yaml: bool = True) -> Dict:
    """Parse sort.yaml text with PyYAML if available, else as JSON with ``#`` comments."""
    if use_yaml and yaml_module is None:
        try:
            import yaml as yaml_module  # optional on the device
        except ImportError:
            yaml_module = None
    if yaml_module is not None:
        try:
            return _join_surrogate_pairs(yaml_module.safe_load(text) or {})
        except yaml_module.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = ": line %d column %d" % (mark.line + 1, mark.column + 1) if mark is not None else ""
            problem = str(getattr(exc, "problem", exc))
            hint = ""
            if "'\\t'" in problem:
                hint = " (a tab: YAML indents with spaces, not tabs; replace it with spaces)"
            character = getattr(exc, "character", None)  # a ReaderError: a character PyYAML cannot read
            if isinstance(character, int) and character > 0xFFFF:
                hint = (" (PyYAML before 5.1 reads no character above U+FFFF written as itself: write it as "
                        "a JSON escape pair, \"\\u%04x\\u%04x\" for this one, as export does)"
                        % (0xD800 + ((character - 0x10000) >> 10), 0xDC00 + ((character - 0x10000) & 0x3FF)))
            raise ConfigError("%s%s: not valid YAML: %s%s" % (source, where, problem, hint))
    try:
        return json.loads(_strip_comments(text))
    except ValueError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            "%s%s: PyYAML is not installed, so this file must use JSON syntax (as the exported template "
            "does) and it does not (%s). Install PyYAML on the device: `%s`, or rewrite the file in JSON "
            "syntax." % (source, ":%s" % match.group(1) if match else "", exc, INSTALL_YAML))


def load_sort_config(path: str, labels: Sequence[str], yaml_module=None, use_yaml: bool = True) -> SortConfig:
    """Read and validate ``path`` against the model's ``labels``."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError("%s: cannot read the sort config (%s)" % (path, exc))
    except UnicodeDecodeError as exc:  # saved by an editor in Latin-1 or Windows-1252
        with open(path, "rb") as f:
            data = f.read()
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError("%s: line %d, column %d: byte 0x%02x is not UTF-8 (the file was saved in another "
                          "encoding, e.g. Latin-1): save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 %s > "
                          "sort.utf8.yaml`, and use that file" % (path, line, column, data[exc.start], path))
    return SortConfig(parse_config_text(text, path, yaml_module, use_yaml), labels, path)


def _needs_escape(ch: str) -> bool:
    """Characters the template writes as ``\\uXXXX``: C0/C1 controls and DEL, YAML's line breaks
    (U+0085, U+2028, U+2029: PyYAML would fold them into a space inside a quoted string), the byte
    order mark, surrogates and the non-characters U+FFFE/U+FFFF (which PyYAML refuses to read)."""
    code = ord(ch)
    return (code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF)
            or 0xD800 <= code <= 0xDFFF)


def quote_text(text: str) -> str:
    """``text`` as a double-quoted string that JSON, PyYAML 5.1+ and PyYAML 3.13 (Debian buster's
    python3-yaml, under Mendel) read back identically through ``parse_config_text``: UTF-8 characters of
    the BMP as themselves (accents, CJK), ``"`` and ``\\`` escaped, the characters of ``_needs_escape``
    as ``\\uXXXX``, and characters above U+FFFF (an emoji) as JSON's surrogate-pair escape
    ``\\ud83e\\udd64``: PyYAML before 5.1 refuses them written as themselves, and the pair that
    PyYAML reads as two surrogates is joined again by ``parse_config_text``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)))
        elif _needs_escape(ch):
            out.append("\\u%04x" % code)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# YAML limits an implicit key to 1024 characters (PyYAML counts from the opening quote to the ':'); a
# longer quoted class name is written with YAML's explicit-key indicator, ``? "name": "bin"``, which the
# no-PyYAML fallback reads too (it drops the ``? ``).
MAX_IMPLICIT_KEY = 1000


def _mapping_entry(key: str, value: str) -> str:
    quoted = quote_text(key)
    return "%s%s: %s" % ("? " if len(quoted) > MAX_IMPLICIT_KEY else "", quoted, quote_text(value))


def default_sort_config(class_names: Sequence[str], bins: Optional[Dict[str, str]] = None) -> str:
    """A commented sort.yaml template mapping every class to a bin (its own name unless ``bins``
    says otherwise). It is JSON with ``#`` comment lines (UTF-8, names written as themselves): valid
    YAML, and loadable without PyYAML; every name reads back exactly with either loader."""
    bins = dict(bins or {})
    mapping = {name: bins.get(name, name) for name in class_names}
    all_bins = sorted(set(mapping.values()) | {"reject"})
    q = quote_text
    classes = [_mapping_entry(k, v) for k, v in mapping.items()]

    lines = [
        "# edge-trash sort policy. YAML; kept in JSON syntax so the device can read it without PyYAML.",
        "# Edit the class -> bin mapping and the timings for your machine, then restart the service.",
        "{",
        "  # conveyor: decide when an item's centre crosses trigger_line; platform: after stable_frames.",
        '  "mode": "conveyor",',
        "  # Every class of the model -> the bin it goes to. Unmapped classes go to reject_bin.",
        '  "classes": {',
    ] + ["    %s%s" % (entry, "," if i < len(classes) - 1 else "") for i, entry in enumerate(classes)] + [
        "  },",
        '  "bins": [%s],' % ", ".join(q(b) for b in all_bins),
        "  # Items whose voted confidence is below min_confidence go to reject_bin.",
        '  "reject_bin": "reject",',
        "  # Where an item goes when actuating its bin fails after the retries.",
        '  "fail_safe_bin": "reject",',
        '  "min_confidence": 0.5,',
        "  # Detections below score_threshold are ignored by the tracker.",
        '  "score_threshold": 0.3,',
        "  # Seconds from the decision (item on the trigger line) to the actuator firing.",
        '  "travel_delay_s": 0.8,',
        "  # axis x: a vertical line at position * frame width; direction 1 = items move towards +x.",
        '  "trigger_line": {"axis": "x", "position": 0.5, "direction": 1},',
        '  "stable_frames": 5,',
        '  "tracker": {"iou_threshold": 0.2, "max_distance": 1.0, "max_age": 5, "min_hits": 3},',
        "  # stretch: the whole frame to the model input, bilinear, as training and `edge-trash evaluate` resize",
        "  # (so evaluate's AP is the device's); letterbox keeps the aspect ratio, which training did not see.",
        '  "resize": "stretch",',
        "  # type: simulated | gpio | pwm | serial. gpio and pwm need an entry for every bin items can go to",
        "  # (each bin of classes, reject_bin, fail_safe_bin). gpio example (plastic on Dev Board pin 37,",
        "  # reject on another free pin of yours):",
        '  #   "gpio": {"plastic": {"chip": "/dev/gpiochip2", "line": 13}, "reject": {"chip": "CHIP", "line": N}},',
        '  #   "pulse_s": 0.1',
        "  # pwm example (pin 32): \"pwm\": {\"chip\": 0, \"channel\": 0, \"frequency_hz\": 50,",
        '  #   "positions": {"plastic": 0.05, "reject": 0.10}}; serial: "serial": {"port": "/dev/ttyUSB0",',
        '  #   "baudrate": 115200, "command": "BIN {bin}\\n", "ack": "OK", "encoding": "ascii"}: the bin',
        '  #   names go out in ASCII, so give them ASCII names (or "encoding": "utf-8" if the controller reads it).',
        '  "actuator": {"type": "simulated", "retries": 2, "retry_delay_s": 0.05},',
        "  # Frames worth relabeling: best score inside band, or track votes that disagree.",
        '  "hard_examples": {"dir": "/var/lib/edge-trash/hard-examples", "band": [0.3, 0.6],',
        '                    "min_agreement": 0.8, "quota_mb": 200, "min_interval_s": 1.0},',
        '  "log": {"path": "/var/lib/edge-trash/events.sqlite", "max_frame_rows": 1000000,',
        '          "max_event_rows": 100000},',
        "  # The operator's page and JSON status at http://host:port/ (read-only). Keep 127.0.0.1, or set",
        '  # "host": "0.0.0.0" together with "token": "a long secret" (every request must then carry it).',
        '  "health": {"host": "127.0.0.1", "port": 8321}',
        "}",
    ]
    return "\n".join(lines) + "\n"
