"""The bundle manifest: what the export stage ships to the device, and its verification (stdlib).

A bundle is a directory with ``model_int8.tflite``, optional ``model_int8_edgetpu.tflite``,
``labels.txt`` (line k = class index k of the postprocess output, background excluded),
``sort.yaml`` and ``manifest.json``. The manifest records sha256 + size of every other file plus
what the device must not guess (input shape/dtype, class names, output order, thresholds,
versions). ``sort.yaml`` is meant to be edited on the device, so a changed ``sort.yaml`` (or one removed, when
``--config`` names another) is reported in ``modified_config`` instead of failing verification.
"""

import hashlib
import json
import os
from typing import Dict, List, Optional

from edge_trash.edge_runtime.files import is_temporary, write_atomically

MANIFEST_NAME = "manifest.json"
FORMAT = "edge-trash-bundle/1"
CPU_MODEL = "model_int8.tflite"
EDGETPU_MODEL = "model_int8_edgetpu.tflite"
LABELS = "labels.txt"
SORT_CONFIG = "sort.yaml"
REQUIRED_FILES = (CPU_MODEL, LABELS)
EDITABLE_FILES = (SORT_CONFIG,)
OUTPUT_ORDER = ["count", "scores", "classes", "boxes"]
OUTPUT_NAMES = ["output_0", "output_1", "output_2", "output_3"]


class BundleError(Exception):
    """The bundle is incomplete, tampered with, or inconsistent with its model."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_files(bundle_dir: str) -> List[str]:
    names = []
    for root, dirs, files in os.walk(bundle_dir):
        dirs.sort()
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), bundle_dir).replace(os.sep, "/")
            if rel != MANIFEST_NAME and not is_temporary(name):  # a manifest being written
                names.append(rel)
    return names


def read_labels(path: str) -> List[str]:
    """Class names from labels.txt (one per line, trailing blank lines ignored)."""
    with open(path, "r", encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def build_manifest(bundle_dir: str, fields: Dict) -> Dict:
    """The manifest dict: ``fields`` plus ``format`` and ``files`` (sha256 + size of every file in
    ``bundle_dir`` except manifest.json). Typical fields: ``input_shape`` [1,S,S,3],
    ``input_dtype`` 'uint8', ``class_names``, ``score_threshold``, ``iou_threshold``,
    ``max_detections``, ``versions``. ``output_names``/``output_order`` default to the contract."""
    if not os.path.isdir(bundle_dir):
        raise BundleError("bundle directory %s does not exist" % bundle_dir)
    manifest = {"format": FORMAT, "output_names": list(OUTPUT_NAMES), "output_order": list(OUTPUT_ORDER)}
    manifest.update(fields)
    if "class_names" in manifest:
        manifest["num_classes"] = len(manifest["class_names"])
    manifest["files"] = {}
    for rel in _bundle_files(bundle_dir):
        path = os.path.join(bundle_dir, rel)
        manifest["files"][rel] = {"sha256": _sha256(path), "size": os.path.getsize(path)}
    return manifest


def write_manifest(bundle_dir: str, fields: Dict) -> Dict:
    """Build the manifest and write ``bundle_dir/manifest.json`` atomically. Returns it."""
    manifest = build_manifest(bundle_dir, fields)
    write_atomically(os.path.join(bundle_dir, MANIFEST_NAME),
                     (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"), durable=True)
    return manifest


def _unreadable(path: str, bundle_dir: str, exc: OSError) -> str:
    return ("cannot read %s (%s): make the bundle readable by the user the service runs as (sudo chmod -R a+rX %s), "
            "or copy it again" % (path, exc.strerror or exc, bundle_dir))


def load_manifest(bundle_dir: str) -> Dict:
    """Parse ``bundle_dir/manifest.json`` (BundleError when missing or not JSON)."""
    path = os.path.join(bundle_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        if os.path.isfile(os.path.join(bundle_dir, "config.json")):  # a run of `edge-trash train`, not its export
            raise BundleError("%s is missing: %s is a training run, not an exported bundle; export it (edge-trash "
                              "export --model %s --data DATA --out BUNDLE) and give --bundle BUNDLE"
                              % (path, bundle_dir, bundle_dir))
        raise BundleError("%s is missing: %s is not an exported bundle (create one with `edge-trash export "
                          "--model RUN --data DATA --out BUNDLE` and give --bundle BUNDLE)" % (path, bundle_dir))
    try:
        with open(path, "r", encoding="utf-8") as f:
            manifest = json.load(f)
    except ValueError as exc:
        raise BundleError("%s is not valid JSON (%s); re-export the bundle" % (path, exc))
    except OSError as exc:
        raise BundleError(_unreadable(path, bundle_dir, exc))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError("%s has no 'files' table; it was not written by write_manifest" % path)
    problem = _damaged_field(manifest)
    if problem:
        raise BundleError("%s: %s: the manifest was edited or damaged; copy manifest.json from the export again "
                          "(or re-export the bundle)" % (path, problem))
    return manifest


def _damaged_field(manifest: Dict) -> str:
    """What in a parsed manifest is not of the type ``write_manifest`` writes ("" when nothing)."""
    for rel, entry in sorted(manifest["files"].items()):
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or isinstance(entry.get("size"), bool) or not isinstance(entry.get("size"), int)):
            return "files[%r] is %r, not {\"sha256\": ..., \"size\": ...}" % (rel, entry)
    names = manifest.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        return "class_names is %r, not a list of class names" % (names,)
    count = manifest.get("num_classes")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
        return "num_classes is %r, not a whole number" % (count,)
    shape = manifest.get("input_shape")
    if shape is not None and (not isinstance(shape, list)
                              or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)):
        return "input_shape is %r, not a list of whole numbers" % (shape,)
    return ""


def verify_bundle(bundle_dir: str, model_input: Optional[Dict] = None) -> Dict:
    """Check the bundle against its manifest and return the manifest.

    Raises ``BundleError`` naming the problem: a missing file, a sha256 or size mismatch (naming
    the file), labels.txt vs the manifest's classes, and - when ``model_input`` (``{'shape':
    [1,S,S,3], 'dtype': 'uint8'}``, e.g. from ``interpreter.describe_input``) is given - the
    manifest's input shape/type vs the model's input tensor. Adds ``modified_config`` (edited
    editable files such as sort.yaml) to the returned dict.
    """
    manifest = load_manifest(bundle_dir)
    files = manifest["files"]
    for required in REQUIRED_FILES:
        if required not in files:
            raise BundleError("the manifest of %s does not list %s; re-export the bundle" % (bundle_dir, required))
    modified = []
    for rel in sorted(files):
        entry = files[rel]
        path = os.path.join(bundle_dir, rel)
        if not os.path.exists(path):
            if rel in EDITABLE_FILES:  # the operator's: a --config elsewhere replaces it (without one, its reader says)
                modified.append(rel)
                continue
            raise BundleError("%s is listed in the manifest but missing from the bundle; copy the whole "
                              "bundle again" % path)
        try:
            size = os.path.getsize(path)
            digest = _sha256(path)
        except OSError as exc:
            raise BundleError(_unreadable(path, bundle_dir, exc))
        if size != entry.get("size") or digest != entry.get("sha256"):
            if rel in EDITABLE_FILES:
                modified.append(rel)
                continue
            raise BundleError("%s does not match the manifest (sha256 %s, size %d; manifest says sha256 %s, "
                              "size %s): the file is corrupt or was changed after export; copy the bundle "
                              "again" % (path, digest[:16], size, str(entry.get("sha256"))[:16], entry.get("size")))
    labels = read_labels(os.path.join(bundle_dir, LABELS))
    names = manifest.get("class_names")
    if names is not None and list(names) != labels:
        raise BundleError("%s has %d classes %s but the manifest's model has %d classes %s; labels.txt must "
                          "list the model's classes in output order" % (
                              os.path.join(bundle_dir, LABELS), len(labels), labels[:6], len(names), list(names)[:6]))
    if manifest.get("num_classes") is not None and int(manifest["num_classes"]) != len(labels):
        raise BundleError("%s has %d lines but the model has %d classes (manifest num_classes)" % (
            os.path.join(bundle_dir, LABELS), len(labels), manifest["num_classes"]))
    if model_input is not None:
        check_model_input(manifest, model_input)
    result = dict(manifest)
    result["modified_config"] = modified
    result["labels"] = labels
    return result


def check_model_input(manifest: Dict, model_input: Dict) -> None:
    """``BundleError`` when the loaded model's input tensor (``interpreter.describe_input``) is not the one the
    manifest records: the model and the manifest come from different exports."""
    want_shape = manifest.get("input_shape")
    if want_shape is not None and list(want_shape) != list(model_input["shape"]):
        raise BundleError("the model's input tensor is %s but the manifest says input_shape %s; the "
                          "manifest belongs to another model" % (list(model_input["shape"]), list(want_shape)))
    want_dtype = manifest.get("input_dtype")
    if want_dtype is not None and str(want_dtype) != str(model_input["dtype"]):
        raise BundleError("the model's input tensor is %s but the manifest says input_dtype %s; export "
                          "with a uint8 input" % (model_input["dtype"], want_dtype))
