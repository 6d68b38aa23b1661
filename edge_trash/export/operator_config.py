"""The operator's ``sort.yaml`` across re-exports: an edited one is kept, the new template written beside it.

Export writes ``sort.yaml`` as a template (every class to a bin of its own name) and records its sha256 in the
manifest (``sort_config.template_sha256``). The operator then edits it on the device: the bins of the machine,
timings, the actuator. Exporting a retrained model into the same ``--out`` must not throw those edits away, so
when the ``sort.yaml`` there differs from the template the last export wrote, it is kept as it is, the new
template goes to ``sort.yaml.new`` (not in the manifest: nothing on the device reads it), and the kept file is
checked against the new model's classes: a class it does not map goes to its reject bin, and a name it maps that
the model no longer has makes the service refuse to start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence

SORT_CONFIG = "sort.yaml"
NEW_TEMPLATE = "sort.yaml.new"
MANIFEST = "manifest.json"
#: The manifest field export records the template in.
MANIFEST_FIELD = "sort_config"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _read_manifest(bundle_dir: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(bundle_dir, MANIFEST), "r", encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def last_template_sha256(bundle_dir: str) -> Optional[str]:
    """The sha256 of the ``sort.yaml`` template the last export wrote into ``bundle_dir``: the manifest's
    ``sort_config.template_sha256``, or for a bundle exported before that field existed the ``sort.yaml``
    row of its ``files`` table (the template, as the manifest is written before anyone edits it). None
    when there is no readable manifest (a bundle whose export stopped at a gate writes none)."""
    manifest = _read_manifest(bundle_dir)
    recorded = manifest.get(MANIFEST_FIELD)
    if isinstance(recorded, dict) and isinstance(recorded.get("template_sha256"), str):
        return recorded["template_sha256"]
    files = manifest.get("files")
    row = files.get(SORT_CONFIG) if isinstance(files, dict) else None
    if isinstance(row, dict) and isinstance(row.get("sha256"), str):
        return row["sha256"]
    return None


def edited_sort_config(bundle_dir: str, new_template: Optional[bytes] = None) -> Optional[bytes]:
    """The bytes of ``bundle_dir/sort.yaml`` when the operator edited it, else None.

    Edited means: it differs from the template the last export wrote there (:func:`last_template_sha256`),
    or, when that cannot be told (no manifest), it is there at all, unless it is ``new_template`` byte for
    byte (keeping it would change nothing).
    """
    path = os.path.join(bundle_dir, SORT_CONFIG)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if new_template is not None and data == new_template:
        return None
    if sha256_bytes(data) == last_template_sha256(bundle_dir):
        return None
    return data


@dataclasses.dataclass
class ClassCheck:
    """How a sort.yaml maps a model's classes."""

    unmapped: List[str]  # classes of the model the file gives no bin: they go to reject_bin
    unknown: List[str]  # names the file maps that are not classes of the model: the service refuses to start
    reject_bin: str
    error: str = ""  # the file cannot be read (then the lists are empty)


def check_sort_config(data: bytes, class_names: Sequence[str], source: str = SORT_CONFIG) -> ClassCheck:
    """Compare the ``classes`` mapping of a sort.yaml with ``class_names`` (the device's reading of it)."""
    from edge_trash.edge_runtime.sort_config import ConfigError, parse_config_text

    try:
        raw = parse_config_text(data.decode("utf-8"), source)
    except (UnicodeDecodeError, ConfigError) as exc:
        return ClassCheck([], [], "reject", error=str(exc))
    raw = raw if isinstance(raw, dict) else {}
    classes = raw.get("classes")
    classes = classes if isinstance(classes, dict) else {}
    reject_bin = raw.get("reject_bin", "reject")
    return ClassCheck(unmapped=[n for n in class_names if n not in classes],
                      unknown=[str(n) for n in classes if n not in class_names],
                      reject_bin=str(reject_bin))


@dataclasses.dataclass
class KeptConfig:
    """What :func:`keep_edited_sort_config` did, in words for the export's output."""

    notes: List[str]
    warnings: List[str]

    @property
    def blocks_service(self) -> bool:
        """Whether the kept file stops the sort service from starting: every warning here says one that does."""
        return bool(self.warnings)


def keep_edited_sort_config(staging: str, bundle_dir: str, edited: bytes, class_names: Sequence[str]) -> KeptConfig:
    """Put the operator's ``edited`` sort.yaml into the bundle being built in ``staging`` (to be moved to
    ``bundle_dir``): the template export wrote there, if any, moves to ``sort.yaml.new``. Returns a note
    saying so, and how the kept file maps ``class_names``: a warning when the service would refuse it."""
    kept_path = os.path.join(bundle_dir, SORT_CONFIG)
    template = os.path.join(staging, SORT_CONFIG)
    notes: List[str] = []
    warnings: List[str] = []
    has_template = os.path.exists(template)
    if has_template:
        os.replace(template, os.path.join(staging, NEW_TEMPLATE))
        notes.append(f"{kept_path} was edited after the last export: kept as it is; the template for this "
                     f"model is {os.path.join(bundle_dir, NEW_TEMPLATE)} (compare them to carry its changes over)")
    else:
        notes.append(f"{kept_path} was edited after the last export: kept as it is (this export stopped before "
                     "writing a template)")
    fd_path = os.path.join(staging, SORT_CONFIG)
    with open(fd_path, "wb") as f:
        f.write(edited)
    os.chmod(fd_path, 0o644)
    check = check_sort_config(edited, class_names, kept_path)
    if check.error:
        warnings.append(f"the kept sort.yaml cannot be read, and the sort service refuses to start with it: "
                        f"{check.error}; fix it{f', or start again from {NEW_TEMPLATE}' if has_template else ''}")
        return KeptConfig(notes, warnings)
    if check.unknown:
        warnings.append(f"{kept_path} maps {', '.join(check.unknown)}, not classes of this model (its classes: "
                        f"{', '.join(class_names)}): the sort service refuses to start until they are removed "
                        "from classes")
    if check.unmapped:
        notes.append(f"{kept_path} maps no bin for {', '.join(check.unmapped)}: the sort service sends them to "
                     f"reject_bin {check.reject_bin!r} until they are added to classes"
                     f"{f' (as {NEW_TEMPLATE} has them)' if has_template else ''}")
    if not check.unknown and not check.unmapped:
        notes.append(f"{kept_path} maps every class of this model")
    return KeptConfig(notes, warnings)
