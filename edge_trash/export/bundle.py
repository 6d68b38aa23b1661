"""``export_bundle``: trained run -> int8 detection model -> Edge TPU check/compile -> parity -> device bundle.

The bundle directory holds everything the Coral Dev Board needs::

    model_int8.tflite            int8, uint8 input, TFLite_Detection_PostProcess, outputs output_0..3
    model_int8_edgetpu.tflite    the same compiled by edgetpu_compiler (when a compiler ran)
    labels.txt                   line k = class k of the postprocess output (background excluded)
    sort.yaml                    class -> bin template (edit on the device; an edited one is kept by a
                                 re-export into the same folder, the new template then in sort.yaml.new)
    compat.json                  the Edge TPU compatibility prediction (``inspect``)
    parity.json                  float vs int8 AP/AP50, per-class drops, reproduced detections, latency
    edge_trash/                  the sort service code (edge_runtime) with its systemd unit and install.sh
    manifest.json                sha256 + size of every file above and what the device must not guess

The bundle is built in a sibling temporary directory and moved into place at the end, so a failed
export never leaves a half-written bundle that looks complete. A gate that fails (Edge TPU
compatibility, parity, the compiler) still writes its diagnostics (model, compat.json, parity.json)
but no manifest, so the device refuses them: into ``--out``, or, when ``--out`` holds a bundle that
works (with its manifest), into ``OUT.failed`` beside it, leaving that bundle as it was (a later
export that passes removes ``OUT.failed``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edge_trash.edge_runtime.files import write_atomically

from edge_trash.export import calibration as calibration_lib
from edge_trash.export import compat as compat_lib
from edge_trash.export import operator_config
from edge_trash.export.parity import DEFAULT_MAX_AP_DROP, LATENCY_RUNS
from edge_trash.export import run_checks
from edge_trash.terminal import examples, plural
from edge_trash.tfrecords.split_layout import folds_without_train

CPU_MODEL = "model_int8.tflite"
EDGETPU_MODEL = "model_int8_edgetpu.tflite"
LABELS = "labels.txt"
SORT_CONFIG = "sort.yaml"
COMPAT = "compat.json"
PARITY = "parity.json"
COMPILER_LOG = "model_int8_edgetpu.log"
RUNTIME_DIR = "edge_trash"


class ExitCode(enum.IntEnum):
    """Exit codes of ``edge-trash export`` (documented in its --help)."""

    OK = 0
    ERROR = 1  # bad input (missing run dir / data), raised as an exception
    NOT_COMPILED = 3  # --edgetpu without edgetpu_compiler: everything else written; compile by hand
    EDGETPU_INCOMPATIBLE = 4  # inspect predicts ops off the Edge TPU (or op versions it cannot parse)
    PARITY_FAILED = 5  # int8 AP50 drop above --max-ap-drop
    COMPILE_FAILED = 6  # the compiler ran and failed


@dataclasses.dataclass
class ExportOptions:
    """What to export and how (the CLI flags of ``edge-trash export``)."""

    model: str  # RUN_DIR of `edge-trash train`
    data: str  # TFRecord directory (train split for calibration, val split for parity)
    out: str  # bundle directory (created or replaced)
    edgetpu: bool = False
    compiler: Optional[str] = None
    calibration_images: int = calibration_lib.DEFAULT_CALIBRATION_IMAGES
    max_ap_drop: float = DEFAULT_MAX_AP_DROP
    allow_cpu_ops: bool = False
    compiler_timeout: int = 180  # edgetpu_compiler's own --timeout_sec, seconds
    seed: int = 0
    parity: bool = True  # False skips the float/int8 evaluation (parity.json then says so)
    parity_split: str = "val"
    latency_runs: int = LATENCY_RUNS

    def validate(self) -> None:
        """Raise ValueError naming the flag that is wrong, or the ``labels.txt`` of the run and the data when
        they list other classes (see ``run_checks.check_run_classes``)."""
        if not os.path.isdir(self.model):
            raise ValueError(f"--model {self.model}: not a directory; pass the --out of `edge-trash train`")
        if not os.path.isdir(self.data):
            raise ValueError(f"--data {self.data}: not a directory; pass the --out of `edge-trash build-tfrecords`")
        folds = folds_without_train(self.data)
        if folds:
            raise ValueError(f"--data {self.data}: a build-tfrecords --folds folder (fold{folds[0]}..fold{folds[-1]}), "
                             "while export calibrates on a train split and checks int8 against float on val: "
                             "give a build of the same classes without --folds as --data")
        run_checks.check_run_classes(self.model, self.data)
        missing = split_missing(self.data, "train", "calibrates int8 on it",
                                "rebuild --data with a train split")
        if not missing and self.parity:
            missing = split_missing(self.data, self.parity_split, "checks int8 against float on it",
                                    "rebuild --data with --val-fraction above 0, or pass --skip-parity to export "
                                    "without that check")
        if missing:
            raise ValueError(missing)
        if self.calibration_images < 1:
            raise ValueError(f"--calibration-images must be >= 1, got {self.calibration_images}")
        if self.max_ap_drop < 0:
            raise ValueError(f"--max-ap-drop must be >= 0 points, got {self.max_ap_drop}")
        if self.compiler_timeout < 1:
            raise ValueError(f"--compiler-timeout must be >= 1 second, got {self.compiler_timeout}")
        if self.latency_runs < 1:
            raise ValueError(f"latency_runs must be >= 1, got {self.latency_runs}")
        if os.path.abspath(self.out) in (os.path.abspath(self.model), os.path.abspath(self.data)):
            raise ValueError(f"--out {self.out} must differ from --model and --data")
        if os.path.ismount(self.out):
            raise ValueError(f"--out {self.out}: a mount point (a USB stick, an SD card, a mounted volume), and export "
                             f"replaces the whole --out folder by a rename, which a mount point refuses: give a folder "
                             f"inside it, e.g. --out {os.path.join(self.out, 'bundle')}")
        problem = out_problem(self.out)
        if problem:
            raise ValueError(problem)


def split_missing(data: str, split: str, why: str, fix: str) -> str:
    """Why export cannot use the ``split`` of ``data`` ("" when it has shards): named before any work."""
    from pathlib import Path

    from edge_trash.tfrecords.split_layout import split_shards, splits_found

    if split_shards(Path(data), split):
        return ""
    found = splits_found(Path(data))
    return (f"--data {data}: no {split}-*.tfrecord shards (splits found: {', '.join(found) or 'none'}), and export "
            f"{why}: {fix}")


@dataclasses.dataclass
class ExportResult:
    """What ``export_bundle`` did: the exit code, the files written and the numbers measured."""

    bundle_dir: str
    exit_code: ExitCode
    message: str  # one sentence: what failed and the fix, or "" when everything passed
    files: Dict[str, int]  # relative path (with "/") -> size in bytes, every file of the bundle
    seconds: float
    warnings: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)  # worth knowing, nothing to fix
    compat: Optional[Dict[str, Any]] = None
    parity: Optional[Dict[str, Any]] = None
    compile: Optional[Dict[str, Any]] = None
    calibration: Optional[Dict[str, Any]] = None
    manifest_written: bool = False
    sort_config_blocks: bool = False  # the operator's kept sort.yaml stops the service: fix it before copying

    @property
    def ok(self) -> bool:
        """True when the export passed every gate (and compiled, if --edgetpu)."""
        return self.exit_code == ExitCode.OK

    def total_bytes(self) -> int:
        """Size of the files listed in ``files``."""
        return sum(self.files.values())

    def next_command(self) -> str:
        """The command to run next (copy to the board, or compile by hand)."""
        if self.exit_code == ExitCode.NOT_COMPILED:  # compiling by hand first, then rerunning, is work twice
            from edge_trash.export.compiler import RECOMPILE_IN_EXPORT

            return f"{RECOMPILE_IN_EXPORT} (the bundle already runs on the CPU as it is)"
        if self.manifest_written:
            from edge_trash.terminal import shell_word

            push = push_command(self.bundle_dir)
            if self.sort_config_blocks:
                return (f"fix {shell_word(os.path.join(self.bundle_dir, SORT_CONFIG))} as the warning says (or copy "
                        f"sort.yaml.new over it), then {push}")
            return push
        return "fix the problem above and rerun the export"


def covered_by_manifest(bundle_dir: str, name: str) -> bool:
    """Whether the bundle's ``manifest.json`` lists ``name``: a file the service checks at start."""
    from edge_trash.edge_runtime.manifest import BundleError, load_manifest

    try:
        return name in load_manifest(bundle_dir)["files"]
    except BundleError:
        return False


def push_command(bundle_dir: str) -> str:
    """How to copy a bundle to the Dev Board (Mendel's mdt, or scp)."""
    from edge_trash.terminal import shell_word

    bundle = shell_word(bundle_dir)
    return f"mdt push {bundle} /home/mendel/  (or scp -r {bundle} mendel@BOARD:)"


def _looks_like_bundle(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, name)) for name in (CPU_MODEL, "manifest.json", COMPAT))


# every name an export writes into a bundle (sort.yaml.new: the new template beside an edited sort.yaml), and
# what macOS's Finder leaves in a folder it showed
BUNDLE_NAMES = frozenset((CPU_MODEL, EDGETPU_MODEL, COMPILER_LOG, LABELS, SORT_CONFIG, operator_config.NEW_TEMPLATE,
                          COMPAT, PARITY, operator_config.MANIFEST, RUNTIME_DIR, ".DS_Store"))


def out_problem(out: str) -> str:
    """Why export must not replace ``out`` ("" when it may): a folder that is not a bundle, or a bundle holding
    what an export does not write (a user's notes, an event log from running the service there), which
    replacing the folder would delete."""
    entries = os.listdir(out) if os.path.isdir(out) else []
    if not entries:
        return ""
    if not _looks_like_bundle(out):
        return (f"--out {out} exists and is not an edge-trash bundle (no {CPU_MODEL}); choose a new or empty "
                "directory: export replaces the whole directory")
    foreign = sorted(name + ("/" if os.path.isdir(os.path.join(out, name)) else "")
                     for name in entries if name not in BUNDLE_NAMES)
    if foreign:
        return (f"--out {out} holds what an export does not write: {examples(foreign, 5)}; export replaces the "
                f"whole directory, so move {'it' if len(foreign) == 1 else 'them'} out first or choose another --out")
    return ""


def _write_json(path: str, data: Any) -> None:
    write_atomically(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _write_text(path: str, text: str) -> None:
    write_atomically(path, text.encode("utf-8"))


def copy_device_runtime(bundle_dir: str) -> List[str]:
    """Copy ``edge_trash/__init__.py`` and the ``edge_trash/edge_runtime`` package (code, systemd unit,
    install.sh) into ``bundle_dir/edge_trash``. Returns the copied relative paths."""
    import edge_trash

    package_root = os.path.dirname(os.path.abspath(edge_trash.__file__))
    target = os.path.join(bundle_dir, RUNTIME_DIR)
    os.makedirs(target, exist_ok=True)
    shutil.copy2(os.path.join(package_root, "__init__.py"), os.path.join(target, "__init__.py"))
    shutil.copytree(os.path.join(package_root, "edge_runtime"), os.path.join(target, "edge_runtime"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"), dirs_exist_ok=True)
    copied = []
    for root, _, files in os.walk(target):
        for name in sorted(files):
            copied.append(os.path.relpath(os.path.join(root, name), bundle_dir).replace(os.sep, "/"))
    return sorted(copied)


def _versions() -> Dict[str, str]:
    from importlib import metadata

    versions = {}
    for dist in ("edge-trash", "tensorflow", "ai-edge-litert"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def _replace_dir(staging: str, out: str) -> None:
    """Move the finished staging directory to ``out``, replacing an older bundle there."""
    from edge_trash.atomic_files import signals_held

    out = os.path.abspath(out)
    old = None
    with signals_held():  # a Ctrl-C or kill between the two renames would leave no bundle at out
        if os.path.exists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-bundle-{os.getpid()}-",
                                   dir=os.path.dirname(out))
            os.rmdir(old)
            os.replace(out, old)
        os.replace(staging, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


ORPHAN_MIN_AGE_S = 3600.0  # younger work folders are left: a live export on another host sharing the folder


def remove_orphaned_work(out: str, now: Optional[float] = None) -> Tuple[List[str], Optional[str]]:
    """Tidy what an export into ``out`` left when it was killed outright (``kill -9``, a power cut, the OOM
    killer): ``(removed, restored)``. Killed between its two renames, it left no ``out`` but the previous
    bundle as ``.OUT.old-bundle-PID-*``: that is renamed back to ``out`` (``restored``). Then the
    ``.OUT.partial-PID-*`` and ``.OUT.old-bundle-PID-*`` beside ``out`` whose process is gone from this machine
    and that are over an hour old are removed (a live export's, here or on another host, are left)."""
    parent = os.path.dirname(os.path.abspath(out))
    ours = re.compile(r"^\.%s\.(partial|old-bundle)-(\d+)-[^/]+$" % re.escape(os.path.basename(out)))
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return [], None
    orphans = []  # (kind, path, mtime)
    for name in names:
        match = ours.match(name)
        path = os.path.join(parent, name)
        if match is None or _process_alive(int(match.group(2))) or os.path.islink(path) or not os.path.isdir(path):
            continue
        orphans.append((match.group(1), path, os.path.getmtime(path)))
    restored = None
    old = [(mtime, path) for kind, path, mtime in orphans if kind == "old-bundle"]
    if old and not os.path.lexists(out):
        restored = max(old)[1]
        os.replace(restored, out)
    now = time.time() if now is None else now
    removed = []
    for _, path, mtime in orphans:
        if path != restored and now - mtime > ORPHAN_MIN_AGE_S:
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.lexists(path):
                removed.append(path)
    return removed, restored


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


FAILED_SUFFIX = ".failed"


def has_working_bundle(out: str) -> bool:
    """Whether ``out`` holds a bundle the device accepts (one with its manifest): a failed export keeps it."""
    return os.path.isfile(os.path.join(out, operator_config.MANIFEST))


def _holds_failed_export(path: str) -> bool:
    """Whether ``path`` is a folder of a failed export's diagnostics: bundle files, no manifest, not a link."""
    return (os.path.isdir(path) and not os.path.islink(path) and not has_working_bundle(path)
            and not out_problem(path))


def failed_dir(out: str) -> str:
    """Where a failed export's diagnostics go when ``out`` holds a working bundle: ``OUT.failed``, or the first
    free ``OUT.failed-N`` when that name holds anything else (a bundle that works, a user's folder)."""
    target, n = out + FAILED_SUFFIX, 1
    while os.path.lexists(target) and not _holds_failed_export(target):
        n += 1
        target = f"{out}{FAILED_SUFFIX}-{n}"
    return target


def _remove_failed_dir(out: str) -> None:
    """Remove the diagnostics of an earlier failed export into ``out`` (``OUT.failed``), now out of date; a
    folder of that name holding anything else is left alone."""
    target = out + FAILED_SUFFIX
    if _holds_failed_export(target):
        shutil.rmtree(target, ignore_errors=True)


def load_trained_model(run_dir: str) -> Tuple[Any, Any, List[str], Any]:
    """``(keras_model, SSDConfig, class_names, anchors [N,4])`` of a training run directory."""
    from edge_trash.models.anchors import generate_anchors
    from edge_trash.models.run_dir import load_run

    keras_model, config, class_names = load_run(run_dir)
    return keras_model, config, list(class_names), generate_anchors(config)


ModelLoader = Callable[[str], Tuple[Any, Any, List[str], Any]]


def _evaluate_parity(options: ExportOptions, int8_model: str) -> Dict[str, Any]:
    from edge_trash.export.parity import evaluate_parity

    return evaluate_parity(options.model, int8_model, options.data, options.parity_split,
                           options.max_ap_drop, options.latency_runs)


ParityRunner = Callable[[ExportOptions, str], Dict[str, Any]]


def export_bundle(options: ExportOptions, log: Callable[[str], None] = lambda _: None,
                  loader: ModelLoader = load_trained_model,
                  parity_runner: ParityRunner = _evaluate_parity) -> ExportResult:
    """Run the whole export and return what happened (never calls sys.exit).

    Args:
      options: see :class:`ExportOptions`.
      log: receives one line per step (the CLI prints them).
      loader: returns ``(keras_model, config, class_names, anchors)`` for ``options.model``
        (default: :func:`load_trained_model`; tests pass a tiny model).
      parity_runner: ``(options, int8_model_path) -> parity report`` (default: float vs int8 on
        the val split with ``edge_trash.train.evaluate``, see ``parity.evaluate_parity``).

    Raises:
      ValueError / FileNotFoundError: bad options or inputs, naming the flag or file.
    """
    from edge_trash.export import edgetpu_gate
    from edge_trash.export.detection_tflite import (OUTPUT_NAMES, OUTPUT_ORDER, convert_detection_model,
                                                    postprocess_params_from_config, summarize_io)
    start = time.monotonic()
    options.validate()
    out = os.path.abspath(options.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    _, restored = remove_orphaned_work(out)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-{os.getpid()}-", dir=os.path.dirname(out))
    os.chmod(staging, 0o755)
    warnings: List[str] = []
    notes: List[str] = []
    if restored:
        notes.append(f"an export killed while it replaced {out} had left no bundle there: the previous one, kept "
                     f"as {os.path.basename(restored)}, is back in place")
    training = run_checks.training_state(options.model)
    unfinished = run_checks.unfinished_run_warning(training, options.model, options.data)
    if unfinished:
        warnings.append(unfinished)
    try:
        log(f"loading {options.model}")
        keras_model, config, class_names, anchors = loader(options.model)
        params = postprocess_params_from_config(config)
        if len(class_names) != params.num_classes:
            raise ValueError(f"{options.model}: labels.txt has {plural(len(class_names), 'class')} but the model "
                             f"config has num_classes={params.num_classes}; the run directory is inconsistent")
        not_learned = run_checks.classes_not_in_train(options.data, class_names)
        if not_learned:
            warnings.append(run_checks.not_learned_warning(options.data, not_learned))

        log(f"calibrating on up to {options.calibration_images} train images from {options.data}")
        calib = calibration_lib.load_calibration_set(options.data, int(config.input_size),
                                                     options.calibration_images, options.seed)
        warnings.extend(calib.warnings)
        calibration_info = {"images": len(calib), "available_train_images": calib.available_images,
                            "images_per_class": {class_names[c - 1] if 0 < c <= len(class_names) else str(c): n
                                                 for c, n in calib.images_per_class.items()},
                            "seed": options.seed}

        log("converting to int8 with TFLite_Detection_PostProcess")
        conversion = convert_detection_model(keras_model, anchors, params, lambda: calib.images)
        model_bytes = conversion.model
        if conversion.head_ranges is not None:
            calibration_info["head_ranges"] = conversion.head_ranges.to_dict()
        cpu_path = os.path.join(staging, CPU_MODEL)
        write_atomically(cpu_path, model_bytes)
        _write_text(os.path.join(staging, LABELS), "".join(f"{name}\n" for name in class_names))
        io = summarize_io(model_bytes)

        log("checking Edge TPU compatibility")
        gate = edgetpu_gate.check(model_bytes, name=CPU_MODEL)
        _write_json(os.path.join(staging, COMPAT), gate.report)
        predicted_memory = ""
        if gate.ok and not gate.summary["fits_parameter_cache"]:
            predicted_memory = compat_lib.parameter_memory_warning(gate.summary["parameter_bytes"], config)
            warnings.append(predicted_memory)

        def finish(code: ExitCode, message: str, manifest_fields: Optional[Dict[str, Any]] = None,
                   parity_report: Optional[Dict[str, Any]] = None,
                   compile_info: Optional[Dict[str, Any]] = None) -> ExportResult:
            # An operator-edited sort.yaml of the bundle being replaced is kept, even by an export that
            # stops at a gate: the template goes beside it as sort.yaml.new.
            template_path = os.path.join(staging, SORT_CONFIG)
            template = None
            if os.path.exists(template_path):
                with open(template_path, "rb") as f:
                    template = f.read()
            if manifest_fields is None and has_working_bundle(out):
                # a gate or the compiler stopped this export: the bundle already in --out stays deployable, and
                # this export's diagnostics go beside it
                target = failed_dir(out)
                _replace_dir(staging, target)
                files = dict(files_in(target))
                shown = [name for name in (CPU_MODEL, EDGETPU_MODEL, COMPILER_LOG, COMPAT, PARITY) if name in files]
                return ExportResult(
                    bundle_dir=target, exit_code=code, files=files, seconds=round(time.monotonic() - start, 1),
                    message=(f"{message} (the bundle in {out} is kept as it was; this export's "
                             f"{', '.join(shown)} are in {target})"),
                    warnings=warnings, notes=notes, compat=gate.summary, parity=parity_report,
                    compile=compile_info, calibration=calibration_info)
            edited = operator_config.edited_sort_config(out, template)
            blocks = False
            if manifest_fields is not None:
                from edge_trash.edge_runtime.manifest import write_manifest
                if template is not None:
                    manifest_fields[operator_config.MANIFEST_FIELD] = {
                        "template_sha256": operator_config.sha256_bytes(template),
                        "operator_file_kept": edited is not None}
                write_manifest(staging, manifest_fields)
            if edited is not None:
                kept = operator_config.keep_edited_sort_config(staging, out, edited, class_names)
                notes.extend(kept.notes)
                warnings.extend(kept.warnings)
                blocks = kept.blocks_service
            _replace_dir(staging, out)
            if manifest_fields is not None:
                _remove_failed_dir(out)
            files = dict(files_in(out))
            return ExportResult(bundle_dir=out, exit_code=code, message=message, files=files,
                                seconds=round(time.monotonic() - start, 1), warnings=warnings, notes=notes,
                                compat=gate.summary, parity=parity_report, compile=compile_info,
                                calibration=calibration_info, manifest_written=manifest_fields is not None,
                                sort_config_blocks=blocks)

        if not gate.ok:
            if options.edgetpu and not options.allow_cpu_ops:
                return finish(ExitCode.EDGETPU_INCOMPATIBLE, gate.message)
            warnings.append(gate.message)

        parity_report: Dict[str, Any]
        if options.parity:
            log(f"evaluating float and int8 models on the {options.parity_split} split")
            learned_note, learned = run_checks.learned_parity_note(options.model, options.data, options.parity_split)
            parity_report = parity_runner(options, cpu_path)
            if learned_note:
                notes.append(learned_note)
                parity_report["split_images_trained_on"] = learned
        else:
            from edge_trash.export.parity import measure_cpu_latency
            parity_report = {"skipped": True, "passed": None,  # not checked: neither a pass nor a failure
                             "int8_cpu_latency_ms": measure_cpu_latency(cpu_path, runs=options.latency_runs)}
        parity_report["calibration"] = calibration_info
        _write_json(os.path.join(staging, PARITY), parity_report)
        if parity_report.get("not_applicable"):  # the float model found nothing: no pass, no failure
            warnings.append(parity_report["not_applicable"])
        if parity_report["passed"] is False:
            from edge_trash.export.parity import parity_advice
            return finish(ExitCode.PARITY_FAILED, parity_advice(parity_report), parity_report=parity_report)

        compile_info: Optional[Dict[str, Any]] = None
        code, message = ExitCode.OK, ""
        if options.edgetpu:
            log("compiling for the Edge TPU")
            compile_info = edgetpu_gate.compile_model(
                cpu_path, staging, options.compiler, final_dir=out,
                failed_dir=failed_dir(out) if has_working_bundle(out) else out, timeout_s=options.compiler_timeout)
            if compile_info["status"] == "not_found":
                code, message = ExitCode.NOT_COMPILED, compile_info["message"]
            elif compile_info["status"] == "failed":
                return finish(ExitCode.COMPILE_FAILED, compile_info["message"], parity_report=parity_report,
                              compile_info=compile_info)
            elif compile_info["status"] == "incompatible" and not options.allow_cpu_ops:
                return finish(ExitCode.EDGETPU_INCOMPATIBLE, compile_info["message"] + "; --allow-cpu-ops ships it "
                              "anyway", parity_report=parity_report, compile_info=compile_info)
            elif compile_info["status"] == "incompatible":
                warnings.append(compile_info["message"] + " (shipped: --allow-cpu-ops)")
            streamed = compile_info.get("off_chip_streaming_bytes")
            if compile_info["status"] in ("ok", "incompatible") and streamed is not None:
                if predicted_memory in warnings:  # the compiler's own count is the word on it
                    warnings.remove(predicted_memory)
                if streamed > 0:
                    warnings.append(compat_lib.parameter_memory_warning(streamed, config, compiler_said=True))
            if compile_info.get("disagreements"):
                warnings.append("the compiler's op split differs from the prediction: "
                                + "; ".join(compile_info["disagreements"]))

        from edge_trash.edge_runtime.sort_config import default_sort_config
        _write_text(os.path.join(staging, SORT_CONFIG), default_sort_config(list(class_names)))
        copy_device_runtime(staging)
        fields = {
            "input_shape": io["input_shape"],
            "input_dtype": io["input_dtype"],
            "input_quantization": io["input_quantization"],
            "class_names": list(class_names),
            "output_names": list(OUTPUT_NAMES),
            "output_order": list(OUTPUT_ORDER),
            "score_threshold": params.score_threshold,
            "iou_threshold": params.iou_threshold,
            "max_detections": params.max_detections,
            "postprocess": params.to_dict(),
            "edgetpu_model": EDGETPU_MODEL if os.path.exists(os.path.join(staging, EDGETPU_MODEL)) else None,
            "versions": _versions(),
            "compat": gate.summary,
            "compile": compile_info,
            "parity": {k: parity_report.get(k) for k in ("float", "int8", "drop_points", "reproduced", "passed",
                                                         "not_applicable", "int8_cpu_latency_ms", "skipped")
                       if k in parity_report},
            "calibration": calibration_info,
            "source_run": os.path.abspath(options.model),
            "training": training,  # finished false: the weights of a run still training (or stopped early)
            "classes_not_in_train": not_learned,  # classes the model never saw a box of: it does not detect them
        }
        return finish(code, message, manifest_fields=fields, parity_report=parity_report, compile_info=compile_info)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging, ignore_errors=True)


def summary_line(result: ExportResult) -> str:
    """The one line the CLI ends with: what was written, where, how big, how long, what next."""
    size_mb = result.total_bytes() / 1e6
    status = "exported" if result.ok else f"export stopped (exit {int(result.exit_code)})"
    if result.ok and EDGETPU_MODEL not in result.files:
        status += " for the CPU only (no Edge TPU model: --edgetpu compiles one)"
    return (f"{status}: {plural(len(result.files), 'file')}, {size_mb:.2f} MB in {result.bundle_dir} "
            f"in {result.seconds:.0f} s; next: {result.next_command()}")


def files_in(bundle_dir: str) -> Sequence[Tuple[str, int]]:
    """(relative path, size) of every file in a bundle, sorted (for listings)."""
    rows = []
    for root, _, files in os.walk(bundle_dir):
        for name in files:
            path = os.path.join(root, name)
            rows.append((os.path.relpath(path, bundle_dir).replace(os.sep, "/"), os.path.getsize(path)))
    return sorted(rows)
