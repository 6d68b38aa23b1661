"""``sort.yaml``: loading, validation (errors name the key) and the default template.

``sort.yaml`` is loaded with PyYAML when it is importable; otherwise JSON syntax (YAML is a
superset of JSON) with ``#`` comment lines is accepted, which is exactly the format of the
template ``default_sort_config`` writes, so a fresh bundle loads with the standard library alone.
Every validation error names the key.
"""

import json
import math
import os
import re
from typing import Dict, Optional, Sequence

from edge_trash.edge_runtime.operator_page import is_loopback
from edge_trash.edge_runtime.tracker import MODES

ACTUATOR_TYPES = ("simulated", "gpio", "pwm", "serial")
INSTALL_YAML = "sudo apt-get install python3-yaml"


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

    def _text(self, section: str, key: str, default: Optional[str]) -> Optional[str]:
        """A text value of ``section`` (a path or host name), or ``default`` when absent."""
        value = self._section(section).get(key, default)
        if value is not None and not isinstance(value, str):
            raise self._err("%s.%s" % (section, key), "expected a text, got %r" % (value,))
        return value

    def _number(self, key: str, default, lo=None, hi=None, integer=False, section=None):
        table = self.raw if section is None else self._section(section)
        name = key if section is None else "%s.%s" % (section, key)
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._err(name, "expected a number, got %r" % (value,))
        if integer and int(value) != value:
            raise self._err(name, "expected an integer, got %r" % (value,))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self._err(name, "%r is outside [%s, %s]" % (value, lo, hi))
        return int(value) if integer else float(value)

    def _validate(self) -> None:
        raw = self.raw
        if not isinstance(raw, dict):
            raise ConfigError("%s: the top level must be a mapping of keys, got %s" % (self.source, type(raw).__name__))
        known = {"mode", "classes", "bins", "reject_bin", "fail_safe_bin", "min_confidence", "score_threshold",
                 "travel_delay_s", "trigger_line", "stable_frames", "tracker", "actuator", "hard_examples",
                 "log", "health", "resize"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise self._err(unknown[0], "unknown key; valid keys are %s" % ", ".join(sorted(known)))
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
        self.tracker_iou = self._number("iou_threshold", 0.2, 0.0, 1.0, section="tracker")
        self.tracker_max_distance = self._number("max_distance", 1.0, 0.0, 100.0, section="tracker")
        self.tracker_max_age = self._number("max_age", 5, 0, 10000, integer=True, section="tracker")
        self.tracker_min_hits = self._number("min_hits", 3, 1, 10000, integer=True, section="tracker")
        self.resize = raw.get("resize", "stretch")
        if self.resize not in ("stretch", "letterbox"):
            raise self._err("resize", "%r is not 'stretch' or 'letterbox'" % (self.resize,))
        self.actuator = raw.get("actuator") or {"type": "simulated"}
        if not isinstance(self.actuator, dict) or self.actuator.get("type") not in ACTUATOR_TYPES:
            raise self._err("actuator.type", "%r is not one of %s" % (
                self.actuator.get("type") if isinstance(self.actuator, dict) else self.actuator, ", ".join(ACTUATOR_TYPES)))
        self.actuator_retries = self._number("retries", 2, 0, 100, integer=True, section="actuator")
        self.actuator_retry_delay_s = self._number("retry_delay_s", 0.05, 0.0, 10.0, section="actuator")
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
        self.health_enabled = bool(health.get("enabled", True))
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


def _strip_comments(text: str) -> str:
    """Remove YAML ``#`` comments outside JSON strings (for the no-PyYAML fallback)."""
    out = []
    for line in text.splitlines():
        in_string, escaped, cut = False, False, len(line)
        for i, ch in enumerate(line):
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = not in_string
            elif ch == "#" and not in_string and (i == 0 or line[i - 1] in " \t"):
                cut = i
                break
        out.append(line[:cut])
    return "\n".join(out)


def parse_config_text(text: str, source: str, yaml_module=None, use_yaml: bool = True) -> Dict:
    """Parse sort.yaml text with PyYAML if available, else as JSON with ``#`` comments."""
    if use_yaml and yaml_module is None:
        try:
            import yaml as yaml_module  # optional on the device
        except ImportError:
            yaml_module = None
    if yaml_module is not None:
        try:
            return yaml_module.safe_load(text) or {}
        except yaml_module.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = " line %d column %d" % (mark.line + 1, mark.column + 1) if mark is not None else ""
            raise ConfigError("%s:%s: not valid YAML: %s" % (source, where, getattr(exc, "problem", exc)))
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
    return SortConfig(parse_config_text(text, path, yaml_module, use_yaml), labels, path)


def default_sort_config(class_names: Sequence[str], bins: Optional[Dict[str, str]] = None) -> str:
    """A commented sort.yaml template mapping every class to a bin (its own name unless ``bins``
    says otherwise). It is JSON with ``#`` comment lines: valid YAML, and loadable without PyYAML."""
    bins = dict(bins or {})
    mapping = {name: bins.get(name, name) for name in class_names}
    all_bins = sorted(set(mapping.values()) | {"reject"})
    q = json.dumps

    def table(d):
        return ", ".join("%s: %s" % (q(k), q(v)) for k, v in d.items())

    lines = [
        "# edge-trash sort policy. YAML; kept in JSON syntax so the device can read it without PyYAML.",
        "# Edit the class -> bin mapping and the timings for your machine, then restart the service.",
        "{",
        "  # conveyor: decide when an item's centre crosses trigger_line; platform: after stable_frames.",
        '  "mode": "conveyor",',
        "  # Every class of the model -> the bin it goes to. Unmapped classes go to reject_bin.",
        '  "classes": {%s},' % table(mapping),
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
        '  "resize": "stretch",',
        "  # type: simulated | gpio | pwm | serial. gpio example (Dev Board pin 37):",
        '  #   "gpio": {"plastic": {"chip": "/dev/gpiochip2", "line": 13}}, "pulse_s": 0.1',
        "  # pwm example (pin 32): \"pwm\": {\"chip\": 0, \"channel\": 0, \"frequency_hz\": 50,",
        '  #   "positions": {"plastic": 0.05, "reject": 0.10}}; serial: "serial": {"port": "/dev/ttyUSB0",',
        '  #   "baudrate": 115200, "command": "BIN {bin}\\n", "ack": "OK"}',
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
