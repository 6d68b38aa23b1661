"""``export_bundle`` end to end on a tiny SSD: fake compiler, no compiler, failing gate, manifest."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

from export_helpers import (TinyConfig, fake_compiled_model, fake_compiler_output, random_images, tiny_anchors,
                            tiny_ssd)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "compiler"


def _loader(data_dir, activation="relu6"):
    names = (Path(data_dir) / "labels.txt").read_text().split()
    config = TinyConfig(num_classes=len(names))

    def load(run_dir):
        return tiny_ssd(len(names), planted_class=1, activation=activation), config, names, tiny_anchors()
    return load


def _options(tmp_path, data_dir, **kw):
    from edge_trash.export.bundle import ExportOptions

    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    if not (run_dir / "labels.txt").exists():  # the run was trained on data_dir: export checks the two agree
        (run_dir / "labels.txt").write_bytes((Path(data_dir) / "labels.txt").read_bytes())
    defaults = dict(model=str(run_dir), data=str(data_dir), out=str(tmp_path / "bundle"),
                    calibration_images=8, parity=False, latency_runs=3)
    defaults.update(kw)
    return ExportOptions(**defaults)


@pytest.fixture(scope="module")
def fake_compiler(tmp_path_factory, sample_build):
    """An executable edgetpu_compiler replaying compiler-16 output for the tiny SSD export."""
    from edge_trash.export.compat import inspect_tflite
    from edge_trash.export.detection_tflite import convert_to_int8_detection_tflite, postprocess_params_from_config

    data_dir, _ = sample_build
    names = (Path(data_dir) / "labels.txt").read_text().split()
    config = TinyConfig(num_classes=len(names))
    reference = convert_to_int8_detection_tflite(tiny_ssd(len(names)), tiny_anchors(),
                                                 postprocess_params_from_config(config), lambda: random_images(4))
    report = inspect_tflite(reference)
    mapped = Counter(op.table_name for op in report.ops if op.on_edgetpu)
    cpu = Counter((op.table_name, op.status) for op in report.ops if not op.on_edgetpu)
    stdout, log = fake_compiler_output("model_int8.tflite", report.edgetpu_ops,
                                       [(n, c, s) for (n, s), c in cpu.items()], list(mapped.items()))
    folder = tmp_path_factory.mktemp("compiler")
    (folder / "stdout.txt").write_text(stdout)
    (folder / "log.txt").write_text(log)
    (folder / "compiled.tflite").write_bytes(fake_compiled_model(reference))
    exe = folder / "edgetpu_compiler"
    exe.write_text(f"#!{sys.executable}\n" + (FIXTURES / "fake_edgetpu_compiler.py").read_text())
    exe.chmod(0o755)
    env = {"FAKE_EDGETPU_STDOUT": str(folder / "stdout.txt"), "FAKE_EDGETPU_LOG": str(folder / "log.txt"),
           "FAKE_EDGETPU_MODEL": str(folder / "compiled.tflite")}
    return exe, env


def _export_with_fake_compiler(tmp_path, sample_build, fake_compiler, monkeypatch):
    """``(data_dir, compiler, its env, options, result)`` of an --edgetpu export compiled by the fake compiler."""
    from edge_trash.export.bundle import export_bundle

    data_dir, _ = sample_build
    exe, env = fake_compiler
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    options = _options(tmp_path, data_dir, edgetpu=True, compiler=str(exe))
    return data_dir, exe, env, options, export_bundle(options, loader=_loader(data_dir))


@pytest.mark.slow
def test_export_with_fake_compiler_writes_a_verified_bundle(tmp_path, sample_build, fake_compiler, monkeypatch):
    from edge_trash.edge_runtime.manifest import BundleError, verify_bundle
    from edge_trash.export.bundle import ExitCode, export_bundle, summary_line

    data_dir, exe, env, options, result = _export_with_fake_compiler(tmp_path, sample_build, fake_compiler,
                                                                     monkeypatch)
    assert result.exit_code == ExitCode.OK, result.message
    bundle = Path(result.bundle_dir)
    for name in ("model_int8.tflite", "model_int8_edgetpu.tflite", "labels.txt", "sort.yaml", "compat.json",
                 "parity.json", "manifest.json", "edge_trash/__init__.py", "edge_trash/edge_runtime/manifest.py"):
        assert (bundle / name).is_file(), name
    assert result.compile["status"] == "ok" and result.compile["disagreements"] == []
    assert result.compile["compiled_cpu_ops"] == ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    assert result.compile["edgetpu_ops"] == result.compat["edgetpu_ops"]

    manifest = verify_bundle(str(bundle), model_input={"shape": [1, 32, 32, 3], "dtype": "uint8"})
    # install.sh copies the bundle as root and the service runs as edge-trash: every file readable by others
    unreadable = [str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.stat().st_mode & 0o044 != 0o044]
    assert unreadable == []
    names = (Path(data_dir) / "labels.txt").read_text().split()
    assert manifest["class_names"] == names == manifest["labels"]
    assert manifest["output_names"] == ["output_0", "output_1", "output_2", "output_3"]
    assert manifest["output_order"] == ["count", "scores", "classes", "boxes"]
    assert manifest["edgetpu_model"] == "model_int8_edgetpu.tflite"
    assert manifest["score_threshold"] == TinyConfig.score_threshold
    assert manifest["max_detections"] == TinyConfig.max_detections
    assert manifest["compat"]["ok"] is True
    assert manifest["versions"]["tensorflow"].startswith("2.")
    assert manifest["calibration"]["images"] == 8
    assert manifest["files"]["model_int8.tflite"]["size"] == result.files["model_int8.tflite"]
    compat = json.loads((bundle / "compat.json").read_text())
    assert compat["gate"]["ok"] is True and compat["source"] == "model_int8.tflite"  # was "<bytes>"
    assert compat["gate"]["summary"].startswith("model_int8.tflite: %d of %d ops on the Edge TPU"
                                                % (result.compat["edgetpu_ops"], len(compat["ops"])))
    assert [op["name"] for op in compat["ops"] if not op["on_edgetpu"]] == \
        ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    # per-channel scales as their count and range (the model file has them all: inspect --json lists them)
    from edge_trash.export.compat import inspect_tflite
    whole = inspect_tflite(str(bundle / "model_int8.tflite")).to_json_dict()
    conv = next(n for n, op in enumerate(whole["ops"]) if op["name"] == "CONV_2D")
    weights, brief = whole["ops"][conv]["inputs"][1], compat["ops"][conv]["inputs"][1]
    scales = weights["quantization"]["scale"]
    assert weights["quantization"]["per_channel"] is True and len(scales) == weights["shape"][0] > 1
    assert brief["quantization"] == {"channels": len(scales), "scale_range": [min(scales), max(scales)],
                                     "zero_point_range": [0, 0], "per_channel": True, "axis": 0}
    assert {k: v for k, v in brief.items() if k != "quantization"} == \
        {k: v for k, v in weights.items() if k != "quantization"}
    for name in names:
        assert f'"{name}"' in (bundle / "sort.yaml").read_text()
    line = summary_line(result)
    assert str(bundle) in line and "MB" in line and "next:" in line

    # A tampered model is detected, naming the file; an edited sort.yaml is allowed.
    with open(bundle / "sort.yaml", "a") as f:
        f.write("# edited on the device\n")
    assert verify_bundle(str(bundle))["modified_config"] == ["sort.yaml"]
    data = bytearray((bundle / "model_int8_edgetpu.tflite").read_bytes())
    data[-1] ^= 0xFF
    (bundle / "model_int8_edgetpu.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model_int8_edgetpu.tflite does not match the manifest"):
        verify_bundle(str(bundle))

    # Exporting again replaces the bundle as a whole (no stale files are hashed or left over: a file an older
    # version's runtime had is gone); a file no export writes, at the top, is the user's: refused, not deleted.
    # This time the compiler reports 2 more CPU ops than predicted: a warning, not a failure.
    (bundle / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds what an export does not write: notes.txt;"):
        export_bundle(options, loader=_loader(data_dir))
    (bundle / "notes.txt").unlink()
    stale = bundle / "edge_trash" / "edge_runtime" / "removed_in_this_version.py"
    stale.write_text("old")
    stdout = Path(env["FAKE_EDGETPU_STDOUT"]).read_text()
    edgetpu_ops = result.compat["edgetpu_ops"]
    disagreeing = tmp_path / "disagreeing_stdout.txt"
    disagreeing.write_text(stdout.replace(f"run on Edge TPU: {edgetpu_ops}", f"run on Edge TPU: {edgetpu_ops - 2}")
                           .replace("run on CPU: 3", "run on CPU: 5"))
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(disagreeing))
    again = export_bundle(options, loader=_loader(data_dir))
    assert again.exit_code == ExitCode.OK and not stale.exists()
    assert f"Edge TPU ops: compiler {edgetpu_ops - 2}, predicted {edgetpu_ops}" in again.compile["disagreements"]
    assert any("differs from the prediction" in w and "CPU ops: compiler 5, predicted 3" in w
               for w in again.warnings)
    verify_bundle(str(bundle))
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p or ".old-bundle-" in p]
    # parameters the compiler streams from host memory (too many classes for the ssd head): said, not silent
    streaming = tmp_path / "streaming_stdout.txt"
    streaming.write_text(stdout.replace("streaming uncached model parameters: 0.00B",
                                        "streaming uncached model parameters: 1.50MiB"))
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(streaming))
    third = export_bundle(options, loader=_loader(data_dir))
    assert third.exit_code == ExitCode.OK and third.compile["off_chip_streaming_bytes"] == 1572864
    assert [w for w in third.warnings if "host memory" in w] == [
        "the compiler streams 1.50 MiB of the Edge TPU parameters from host memory at every inference, slower than "
        "a model that fits; to fit: train with --config ssdlite_mobilenet_v2_320 (its depthwise heads hold a "
        "fraction of the ssd head's parameters), or fewer classes (%d classes now: build-tfrecords --class-map or "
        "--supercategories), or a smaller model.width_multiplier" % len(names)]


@pytest.mark.slow
def test_the_predicted_memory_warning_gives_way_to_the_compilers_count(tmp_path, sample_build, fake_compiler,
                                                                     monkeypatch):
    """A prediction just over the on-chip memory stayed beside a compiler that streamed nothing."""
    from edge_trash.export import compat
    from edge_trash.export.bundle import ExitCode, export_bundle

    monkeypatch.setattr(compat.CompatReport, "fits_parameter_cache", property(lambda self: False))
    data_dir, exe, env, options, result = _export_with_fake_compiler(tmp_path, sample_build, fake_compiler,
                                                                     monkeypatch)
    assert result.exit_code == ExitCode.OK and result.compile["off_chip_streaming_bytes"] == 0
    assert not [w for w in result.warnings if "host memory" in w]
    cpu_only = export_bundle(_options(tmp_path, data_dir, out=str(tmp_path / "cpu")), loader=_loader(data_dir))
    said = [w for w in cpu_only.warnings if "host memory" in w]  # no compiler: the prediction is all there is
    assert len(said) == 1 and said[0].startswith("the Edge TPU parameters, ")
    assert " may not fit its on-chip memory (about 6.08 MiB): what does not fit streams " in said[0]


def test_the_parameter_memory_warning_names_the_remedies_the_model_has_left():
    """A 60-class TACO model on the default ssd head needs about 12.6 MiB of the Edge TPU's ~6 MiB: export
    passed it without a word, and every inference streamed half of it from host memory."""
    from edge_trash.export.compat import parameter_memory_warning
    from edge_trash.models.config import get_preset

    taco = get_preset("ssd_mobilenet_v2_320").replace(num_classes=60)
    assert parameter_memory_warning(13_201_571, taco) == (
        "the Edge TPU parameters, 12.59 MiB, may not fit its on-chip memory (about 6.08 MiB): what does not fit "
        "streams from host memory at every inference, slower than a model that fits; to fit: train with --config "
        "ssdlite_mobilenet_v2_320 (its depthwise heads hold a fraction of the ssd head's parameters), or fewer "
        "classes (60 classes now: build-tfrecords --class-map or --supercategories), or a smaller "
        "model.width_multiplier")
    lite = get_preset("ssdlite_mobilenet_v2_320").replace(num_classes=1)
    assert "ssdlite" not in parameter_memory_warning(7_000_000, lite)
    assert "(1 class now:" in parameter_memory_warning(7_000_000, lite)


@pytest.mark.slow
def test_a_compiled_model_that_is_not_one_tpu_subgraph_fails_and_keeps_the_working_bundle(
        tmp_path, sample_build, fake_compiler, monkeypatch):
    """The compiler is the ground truth: a compile that leaves the model on the CPU (no edgetpu-custom-op in the
    file) exited 0 with a warning, shipped it, and said "116 edgetpu-custom-op" (the predicted count). Now it
    exits 4 unless --allow-cpu-ops, and a failed re-export keeps the working bundle in --out."""
    from edge_trash.edge_runtime.manifest import verify_bundle
    from edge_trash.export.bundle import ExitCode, export_bundle, summary_line

    data_dir, exe, env, options, good = _export_with_fake_compiler(tmp_path, sample_build, fake_compiler, monkeypatch)
    assert good.exit_code == ExitCode.OK, good.message
    bundle = Path(good.bundle_dir)
    before = {name: (bundle / name).read_bytes() for name in good.files}
    uncompiled = tmp_path / "uncompiled.tflite"  # what a compiler that mapped nothing writes: the model unchanged
    uncompiled.write_bytes((bundle / "model_int8.tflite").read_bytes())
    monkeypatch.setenv("FAKE_EDGETPU_MODEL", str(uncompiled))
    failed = export_bundle(options, loader=_loader(data_dir))
    assert failed.exit_code == ExitCode.EDGETPU_INCOMPATIBLE == 4
    assert failed.compile["status"] == "incompatible"
    ops = failed.compile["compiled_cpu_ops"]
    assert len(ops) == good.compat["edgetpu_ops"] + 3 and ops[-1] == "TFLite_Detection_PostProcess"
    # (the fake prints the compiler's "Number of Edge TPU subgraphs: 1" of a good compile)
    assert (f"compiled model_int8.tflite, but the compiled model holds 0 edgetpu-custom-op (1 Edge TPU subgraph, as "
            f"the compiler says); {good.compat['edgetpu_ops']} other ops run on the CPU (") in failed.message
    assert "expected 1, followed only by DEQUANTIZE and TFLite_Detection_PostProcess on the CPU" in failed.message
    assert "--allow-cpu-ops ships it anyway" in failed.message
    # the working bundle is as it was; the diagnostics are beside it, and the summary says where
    assert {name: (bundle / name).read_bytes() for name in good.files} == before
    verify_bundle(str(bundle))
    failed_dir = Path(str(bundle) + ".failed")
    assert failed.bundle_dir == str(failed_dir) and (failed_dir / "compat.json").is_file()
    assert not (failed_dir / "manifest.json").exists()
    assert failed.message.endswith(f"(the bundle in {bundle} is kept as it was; this export's model_int8.tflite, "
                                   "model_int8_edgetpu.tflite, model_int8_edgetpu.log, compat.json, parity.json are "
                                   f"in {failed_dir})")
    assert "export stopped (exit 4): " in summary_line(failed) and str(failed_dir) in summary_line(failed)
    # inspect on that "compiled" file says it holds no Edge TPU op (it said to compile it)
    from edge_trash.export.compat import inspect_tflite
    from edge_trash.export.inspect_cli import next_step

    compiled = failed_dir / "model_int8_edgetpu.tflite"
    assert next_step(inspect_tflite(str(compiled)), compiled) == (
        "next: model_int8_edgetpu.tflite holds no edgetpu-custom-op, so all of it runs on the CPU: the compiler "
        "mapped nothing (see its .log beside it), or this is not the compiler's output; compile the model it was "
        "made from, not this file")
    # a compiler that says "succeeded" but leaves a cut-short file: exit 6 (was 1, naming a deleted staging
    # folder, its log and compat.json lost), the diagnostics kept beside the working bundle
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(uncompiled.read_bytes()[:5000])
    monkeypatch.setenv("FAKE_EDGETPU_MODEL", str(cut))
    damaged = export_bundle(options, loader=_loader(data_dir))
    assert damaged.exit_code == ExitCode.COMPILE_FAILED == 6 and damaged.compile["status"] == "failed"
    assert damaged.message.startswith(
        f"edgetpu_compiler reported success on model_int8.tflite but wrote an unreadable model_int8_edgetpu.tflite "
        f"({failed_dir}/model_int8_edgetpu.tflite: ")
    assert ("): a disk that filled while it wrote, or a damaged compiler install; free space and run the export "
            "again (the bundle in") in damaged.message and ".partial-" not in damaged.message
    assert {name: (bundle / name).read_bytes() for name in good.files} == before
    assert (failed_dir / "compat.json").is_file() and (failed_dir / "model_int8_edgetpu.log").is_file()
    monkeypatch.setenv("FAKE_EDGETPU_MODEL", str(uncompiled))
    # a compile that fails: the command its message gives works on the diagnostics, never on the kept bundle
    logs = Path(__file__).resolve().parents[2] / "shared" / "edgetpu" / "compiler-logs"
    if logs.is_dir():
        monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(logs / "v16_parse_fail_quantize_v3.txt"))
        monkeypatch.setenv("FAKE_EDGETPU_EXIT", "1")
        crashed = export_bundle(_options(tmp_path, data_dir, edgetpu=True, compiler=str(exe), compiler_timeout=240),
                                loader=_loader(data_dir))
        assert crashed.exit_code == ExitCode.COMPILE_FAILED and crashed.bundle_dir == str(failed_dir)
        assert f" --out_dir {failed_dir} --timeout_sec 240 {failed_dir}/model_int8.tflite" in \
            crashed.message
        assert {name: (bundle / name).read_bytes() for name in good.files} == before
        monkeypatch.setenv("FAKE_EDGETPU_STDOUT", env["FAKE_EDGETPU_STDOUT"])
        monkeypatch.delenv("FAKE_EDGETPU_EXIT")
    # --allow-cpu-ops ships it with the warning; a passing export removes the out-of-date diagnostics
    allowed = export_bundle(_options(tmp_path, data_dir, edgetpu=True, compiler=str(exe), allow_cpu_ops=True),
                            loader=_loader(data_dir))
    assert allowed.exit_code == ExitCode.OK and any("0 edgetpu-custom-op" in w and w.endswith(
        "(shipped: --allow-cpu-ops)") for w in allowed.warnings)
    assert verify_bundle(str(bundle))["compile"]["status"] == "incompatible"
    assert not failed_dir.exists()
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p or ".old-bundle-" in p]


def test_a_compiler_that_says_nothing_is_named_as_such(tmp_path):
    from edge_trash.export.edgetpu_gate import compile_model

    exe = tmp_path / "silent"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"not read by a compiler that does nothing")
    info = compile_model(str(model), str(tmp_path), str(exe))
    assert info["status"] == "failed"
    assert info["message"].startswith("silent failed on model_int8.tflite: it printed nothing, exited 0 and wrote "
                                      "no compiled model. Command: ")


def test_a_parse_failure_says_what_to_change(tmp_path, monkeypatch):
    """The compiler names the op version it cannot parse; export added no advice (inspect's fix_for has it)."""
    from edge_trash.export.edgetpu_gate import compile_model, fix_for

    exe = tmp_path / "edgetpu_compiler"
    exe.write_text(f"#!{sys.executable}\n" + (FIXTURES / "fake_edgetpu_compiler.py").read_text())
    exe.chmod(0o755)
    logs = Path(__file__).resolve().parents[2] / "shared" / "edgetpu" / "compiler-logs"
    if not logs.is_dir():
        pytest.skip(f"{logs} (the shared compiler logs) not present")
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(logs / "v16_parse_fail_quantize_v3.txt"))
    monkeypatch.setenv("FAKE_EDGETPU_EXIT", "1")
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"not parsed by the fake")
    info = compile_model(str(model), str(tmp_path), str(exe))
    assert info["status"] == "failed"
    assert f"; fix: {fix_for('QUANTIZE', 'version')}. Command: " in info["message"]
    assert "QUANTIZE" in info["message"].split("; fix: ")[0]


def test_failed_exports_go_beside_a_working_bundle_and_never_over_another(tmp_path):
    from edge_trash.export.bundle import _remove_failed_dir, failed_dir

    out = str(tmp_path / "bundle")
    assert failed_dir(out) == out + ".failed"  # nothing there yet
    (tmp_path / "bundle.failed").mkdir()
    (tmp_path / "bundle.failed" / "compat.json").write_text("{}")
    assert failed_dir(out) == out + ".failed"  # an earlier failed export's: replaced
    (tmp_path / "bundle.failed" / "manifest.json").write_text("{}")  # a bundle that works, named so by its user
    assert failed_dir(out) == out + ".failed-2"
    _remove_failed_dir(out)
    assert (tmp_path / "bundle.failed" / "manifest.json").is_file()  # not removed by a passing export either
    (tmp_path / "bundle.failed" / "manifest.json").unlink()
    (tmp_path / "bundle.failed" / "notes.txt").write_text("mine")  # a user's folder
    assert failed_dir(out) == out + ".failed-2"
    _remove_failed_dir(out)
    assert (tmp_path / "bundle.failed" / "notes.txt").is_file()
    (tmp_path / "bundle.failed" / "notes.txt").unlink()
    _remove_failed_dir(out)
    assert not (tmp_path / "bundle.failed").exists()


def test_compiled_shape_problem_names_what_runs_where():
    from edge_trash.export.edgetpu_gate import compiled_shape_problem

    tail = ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    assert compiled_shape_problem(1, tail, 1) == compiled_shape_problem(1, tail, None) == ""
    assert compiled_shape_problem(2, tail, 2) == (
        "the compiled model holds 2 edgetpu-custom-op: expected 1, followed only by DEQUANTIZE and "
        "TFLite_Detection_PostProcess on the CPU")
    assert compiled_shape_problem(1, ["CONV_2D"] * 40 + ["ADD", "LOGISTIC"] + tail, 1) == (
        "the compiled model holds 1 edgetpu-custom-op; 42 other ops run on the CPU (CONV_2D x40, ADD, LOGISTIC): "
        "expected 1, followed only by DEQUANTIZE and TFLite_Detection_PostProcess on the CPU")
    assert compiled_shape_problem(0, tail, 0).startswith("the compiled model holds 0 edgetpu-custom-op:")
    assert compiled_shape_problem(1, tail, 2).startswith(
        "the compiled model holds 1 edgetpu-custom-op (2 Edge TPU subgraphs, as the compiler says):")
    assert compiled_shape_problem(1, tail, 1, before=["DEQUANTIZE"]) == (
        "the compiled model runs DEQUANTIZE on the CPU before its edgetpu-custom-op: expected the Edge TPU subgraph "
        "first, followed only by DEQUANTIZE and TFLite_Detection_PostProcess")


@pytest.mark.slow
def test_no_compiler_exits_3_and_says_how_to_compile_which_file(tmp_path, sample_build, monkeypatch):
    from edge_trash.edge_runtime.manifest import verify_bundle
    from edge_trash.export.bundle import ExitCode, export_bundle

    data_dir, _ = sample_build
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler anywhere
    result = export_bundle(_options(tmp_path, data_dir, edgetpu=True), loader=_loader(data_dir))
    assert result.exit_code == ExitCode.NOT_COMPILED == 3
    model = os.path.join(result.bundle_dir, "model_int8.tflite")
    assert "edgetpu_compiler was not found" in result.message and model in result.message
    assert result.next_command().startswith("on an x86-64 Linux machine with edgetpu_compiler, rerun the export "
                                            "with --edgetpu")  # one compile, the export's: it lists it in the manifest
    manifest = verify_bundle(result.bundle_dir)
    assert manifest["edgetpu_model"] is None and "model_int8_edgetpu.tflite" not in manifest["files"]
    parity = json.loads(Path(result.bundle_dir, "parity.json").read_text())
    assert parity["skipped"] is True and parity["int8_cpu_latency_ms"]["runs"] == 3
    assert parity["passed"] is None and manifest["parity"]["passed"] is None  # not checked is not a pass


@pytest.mark.slow
def test_gate_failure_exits_4_naming_the_op_and_writes_no_manifest(tmp_path, sample_build):
    from edge_trash.export.bundle import ExitCode, export_bundle

    data_dir, _ = sample_build
    result = export_bundle(_options(tmp_path, data_dir, edgetpu=True),
                           loader=_loader(data_dir, activation="leaky_relu"))
    assert result.exit_code == ExitCode.EDGETPU_INCOMPATIBLE == 4
    assert "LEAKY_RELU" in result.message and "--allow-cpu-ops" in result.message
    bundle = Path(result.bundle_dir)
    assert (bundle / "compat.json").is_file() and (bundle / "model_int8.tflite").is_file()
    assert not (bundle / "manifest.json").exists()  # the device refuses this bundle
    assert json.loads((bundle / "compat.json").read_text())["gate"]["ok"] is False


@pytest.mark.slow
def test_allow_cpu_ops_turns_the_gate_into_a_warning(tmp_path, sample_build, monkeypatch):
    from edge_trash.edge_runtime.manifest import verify_bundle
    from edge_trash.export.bundle import ExitCode, export_bundle

    data_dir, _ = sample_build
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler: the export goes on to exit 3
    result = export_bundle(_options(tmp_path, data_dir, edgetpu=True, allow_cpu_ops=True),
                           loader=_loader(data_dir, activation="leaky_relu"))
    assert result.exit_code == ExitCode.NOT_COMPILED
    assert any("LEAKY_RELU" in w for w in result.warnings)
    assert verify_bundle(result.bundle_dir)["compat"]["ok"] is False  # recorded for the device


def test_options_name_the_bad_flag(tmp_path, monkeypatch):
    from edge_trash.export.bundle import ExportOptions

    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for folder in ("run", "data"):
        (tmp_path / folder / "labels.txt").write_text("can\nbottle\n")
    for split in ("train", "val"):
        (tmp_path / "data" / f"{split}-00000-of-00001.tfrecord").write_bytes(b"x")
    base = dict(model=str(tmp_path / "run"), data=str(tmp_path / "data"), out=str(tmp_path / "b"))
    with pytest.raises(ValueError, match="--model .*not a directory"):
        ExportOptions(**{**base, "model": str(tmp_path / "missing")}).validate()
    with pytest.raises(ValueError, match="--calibration-images must be >= 1"):
        ExportOptions(**base, calibration_images=0).validate()
    with pytest.raises(ValueError, match="--out .* is not an edge-trash bundle"):
        ExportOptions(**{**base, "out": str(tmp_path / "other")}).validate()
    ExportOptions(**base).validate()
    # a folder with a model_int8.tflite copied in is a bundle only when it holds nothing else
    (tmp_path / "other" / "model_int8.tflite").write_bytes(b"model")
    (tmp_path / "other" / "mydata").mkdir()
    with pytest.raises(ValueError) as err:
        ExportOptions(**{**base, "out": str(tmp_path / "other")}).validate()
    assert str(err.value) == (f"--out {tmp_path / 'other'} holds what an export does not write: mydata/, notes.txt; "
                              "export replaces the whole directory, so move them out first or choose another --out")
    (tmp_path / "other" / "notes.txt").unlink()
    with pytest.raises(ValueError, match=r"holds what an export does not write: mydata/; export replaces the whole "
                                         r"directory, so move it out first or choose another --out$"):
        ExportOptions(**{**base, "out": str(tmp_path / "other")}).validate()
    shutil.rmtree(tmp_path / "other" / "mydata")
    (tmp_path / "other" / "sort.yaml").write_text("{}")
    (tmp_path / "other" / ".DS_Store").write_bytes(b"")  # the folder was shown in macOS's Finder
    ExportOptions(**{**base, "out": str(tmp_path / "other")}).validate()
    # a build without a val split was refused after calibration and conversion, advising a --split export lacks
    (tmp_path / "data" / "val-00000-of-00001.tfrecord").unlink()
    with pytest.raises(ValueError) as err:
        ExportOptions(**base).validate()
    assert str(err.value) == (f"--data {tmp_path / 'data'}: no val-*.tfrecord shards (splits found: train), and export "
                              "checks int8 against float on it: rebuild --data with --val-fraction above 0, or pass "
                              "--skip-parity to export without that check")
    ExportOptions(**base, parity=False).validate()
    (tmp_path / "data" / "train-00000-of-00001.tfrecord").unlink()
    for k in range(3):  # a --folds build has no train split to calibrate on, nor val to check int8 on
        (tmp_path / "data" / f"fold{k}-00000-of-00001.tfrecord").write_bytes(b"x")
    with pytest.raises(ValueError) as err:
        ExportOptions(**base).validate()
    assert str(err.value) == (f"--data {tmp_path / 'data'}: a build-tfrecords --folds folder (fold0..fold2), while "
                              "export calibrates on a train split and checks int8 against float on val: give a build "
                              "of the same classes without --folds as --data")
    for split in ("train", "val"):
        (tmp_path / "data" / f"{split}-00000-of-00001.tfrecord").write_bytes(b"x")
    ExportOptions(**base).validate()
    # a mount point (a USB stick) cannot be replaced by a rename: said before the work, not after it
    mounted = str(tmp_path / "b")
    monkeypatch.setattr(os.path, "ismount", lambda path: path == mounted)
    with pytest.raises(ValueError) as err:
        ExportOptions(**base).validate()
    assert str(err.value) == (f"--out {mounted}: a mount point (a USB stick, an SD card, a mounted volume), and export "
                              "replaces the whole --out folder by a rename, which a mount point refuses: give a folder "
                              f"inside it, e.g. --out {mounted}/bundle")


def test_copy_device_runtime_copies_the_service_files(tmp_path):
    from edge_trash.export.bundle import copy_device_runtime

    copied = copy_device_runtime(str(tmp_path))
    runtime = Path(__file__).resolve().parents[1] / "edge_trash" / "edge_runtime"
    expected = sorted(f"edge_trash/edge_runtime/{p.relative_to(runtime).as_posix()}" for p in runtime.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
                      and not p.name.endswith(".pyc"))
    assert copied == sorted(["edge_trash/__init__.py"] + expected)
    assert not any("__pycache__" in p for p in copied)


def test_cli_help_lists_exit_codes_without_tensorflow():
    import subprocess

    code = ("import sys; from click.testing import CliRunner; from edge_trash.cli import cli; "
            "r = CliRunner().invoke(cli, ['export', '--help']); print(r.output); "
            "print('TF', 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--edgetpu" in out and "--max-ap-drop" in out and "3  --edgetpu but no edgetpu_compiler" in out
    assert "TF False" in out


def test_compiler_without_edgetpu_is_a_usage_error(tmp_path):
    """--compiler alone exported a CPU-only bundle with exit 0, the compiler never run."""
    from click.testing import CliRunner

    from edge_trash.cli import cli

    for folder in ("run", "data"):
        (tmp_path / folder).mkdir()
    result = CliRunner().invoke(cli, ["export", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "b"), "--compiler", "/opt/edgetpu_compiler"])
    assert result.exit_code == 2 and not (tmp_path / "b").exists()
    assert ("--compiler is used only with --edgetpu (which compiles the model and fails unless it maps to the Edge "
            "TPU): add --edgetpu") in " ".join(result.output.split())


def test_the_summary_says_when_a_bundle_runs_on_the_cpu_only():
    from edge_trash.export.bundle import ExitCode, ExportResult, summary_line

    def result(files):
        return ExportResult(bundle_dir="b", exit_code=ExitCode.OK, message="", files=files, seconds=3.0,
                            manifest_written=True)

    assert summary_line(result({"model_int8.tflite": 10 ** 6})).startswith(
        "exported for the CPU only (no Edge TPU model: --edgetpu compiles one): 1 file, 1.00 MB in b in 3 s; next: ")
    assert summary_line(result({"model_int8.tflite": 10 ** 6, "model_int8_edgetpu.tflite": 10 ** 6})).startswith(
        "exported: 2 files, 2.00 MB in b in 3 s; next: mdt push b ")


@pytest.fixture(scope="module")
def real_run_dir(tmp_path_factory, sample_build):
    """A RUN_DIR in the training stage's layout holding the real SSD (demo preset at 128 px, untrained)."""
    from edge_trash.models.config import get_preset
    from edge_trash.models.run_dir import write_json_atomic
    from edge_trash.models.ssd import build_ssd

    data_dir, _ = sample_build
    names = (Path(data_dir) / "labels.txt").read_text().split()
    config = get_preset("demo").replace(width_multiplier=0.35, input_size=128, num_classes=len(names))
    run = tmp_path_factory.mktemp("run")
    build_ssd(config).save_weights(str(run / "model.weights.h5"))
    write_json_atomic(run / "config.json", {"model": config.to_dict(), "train": {}})
    (run / "labels.txt").write_text("\n".join(names) + "\n")
    return run, config


@pytest.mark.slow
def test_cli_exports_a_real_run_in_a_subprocess(tmp_path, sample_build, real_run_dir):
    import subprocess

    from edge_trash.edge_runtime.manifest import verify_bundle

    data_dir, _ = sample_build
    run, config = real_run_dir
    out = tmp_path / "bundle"
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no edgetpu_compiler on PATH
    proc = subprocess.run([sys.executable, "-m", "edge_trash", "export", "--model", str(run), "--data",
                           str(data_dir), "--out", str(out), "--edgetpu", "--calibration-images", "6"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "edgetpu_compiler was not found" in proc.stderr
    assert f"--show_operations {out}/model_int8.tflite" in proc.stderr
    assert "only 6 calibration images" in proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("export stopped (exit 3):") and str(out) in last
    assert "next: on an x86-64 Linux machine with edgetpu_compiler, rerun the export with --edgetpu" in last
    manifest = verify_bundle(str(out), model_input={"shape": [1, 128, 128, 3], "dtype": "uint8"})
    assert manifest["iou_threshold"] == config.iou_threshold and manifest["max_detections"] == config.max_detections
    assert manifest["compat"]["ok"] and manifest["compat"]["cpu_op_names"] == \
        ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    assert oct(os.stat(out / "model_int8.tflite").st_mode & 0o777) == "0o644"
    # Parity ran through the evaluation stage's code path on the val split (an untrained model
    # detects nothing, so both APs are 0: not a pass, n/a, with a warning).
    parity = json.loads((out / "parity.json").read_text())
    assert parity["split"] == "val" and parity["passed"] is None
    val_images = len(json.loads((Path(data_dir) / "splits.json").read_text())["splits"]["val"])
    assert (parity["data"], parity["images"]) == (str(Path(data_dir).resolve()), val_images)  # what it measured on
    assert parity["detections"] == {"float": 0, "int8": 0}
    assert parity["not_applicable"].startswith("parity n/a: the float model found nothing on the ")
    assert parity["reproduced"]["fraction"] is None
    assert f"warning: {parity['not_applicable']}" in proc.stderr
    assert parity["float"]["AP50"] == parity["int8"]["AP50"] == 0.0 and parity["drop_points"]["AP50"] == 0.0
    assert sorted(parity["per_class"]) == sorted((Path(data_dir) / "labels.txt").read_text().split())
    assert parity["int8_cpu_latency_ms"]["runs"] == 50 and parity["int8_cpu_latency_ms"]["median_ms"] > 0
    assert manifest["parity"]["int8"] == parity["int8"]
    assert "parity: n/a (AP50 float 0.0% int8 0.0%); see the warning above" in proc.stdout


@pytest.mark.slow
def test_parity_failure_exits_5_with_advice_and_writes_parity_json(tmp_path, sample_build):
    from edge_trash.export.bundle import ExitCode, export_bundle
    from edge_trash.export.parity import parity_report

    data_dir, _ = sample_build
    seen = {}

    def lossy_parity(options, int8_model):
        seen["model"] = int8_model
        return parity_report({"AP": 0.30, "AP50": 0.50, "per_class": {"can": 0.4}},
                             {"AP": 0.20, "AP50": 0.44, "per_class": {"can": 0.25}},
                             {"fraction": 0.6, "matched": 6, "total": 10}, options.max_ap_drop)

    result = export_bundle(_options(tmp_path, data_dir, parity=True, max_ap_drop=2.5), loader=_loader(data_dir),
                           parity_runner=lossy_parity)
    assert result.exit_code == ExitCode.PARITY_FAILED == 5
    assert seen["model"].endswith("model_int8.tflite")
    assert "6.00 points" in result.message and "--max-ap-drop 2.50" in result.message
    assert "can (-15.0)" in result.message and "--calibration-images" in result.message
    parity = json.loads((Path(result.bundle_dir) / "parity.json").read_text())
    assert parity["passed"] is False and parity["drop_points"]["AP50"] == 6.0
    assert not (Path(result.bundle_dir) / "manifest.json").exists()


def test_a_sigterm_unwinds_the_export_like_ctrl_c(tmp_path, monkeypatch):
    import signal
    import time

    from click.testing import CliRunner

    from edge_trash.cli import cli

    seen = []

    def export_bundle(options, log):  # stands in for the real export, which removes its staging folder on unwind
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            seen.append("unwound")
            raise

    monkeypatch.setattr("edge_trash.export.bundle.export_bundle", export_bundle)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # without the CLI's handler: ignored
    try:
        result = CliRunner().invoke(cli, ["export", "--model", str(tmp_path), "--data", str(tmp_path),
                                          "--out", str(tmp_path / "bundle")])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["unwound"] and result.exit_code != 0


def test_parity_ap50_is_shown_as_percent_or_n_a():
    from edge_trash.export.export_cli import _percent

    assert (_percent(4.025), _percent(0.0), _percent(None)) == ("4.025%", "0.0%", "n/a")


def test_work_folders_of_an_export_killed_outright_are_removed_by_the_next(tmp_path):
    """kill -9 / a power cut left .OUT.partial-* (the whole staged bundle) and .OUT.old-bundle-* beside --out for
    good; the next export removes those whose process is gone and that are over an hour old, never a live
    export's, and puts back a previous bundle that a kill between the two renames left with no --out."""
    import subprocess
    import time

    from edge_trash.export.bundle import remove_orphaned_work

    done = subprocess.Popen(["true"])
    done.wait()
    dead, alive = done.pid, os.getpid()
    out = tmp_path / "bundle"
    out.mkdir()
    names = [f".bundle.partial-{dead}-x1", f".bundle.old-bundle-{dead}-x2", f".bundle.partial-{alive}-x3",
             f".other.partial-{dead}-x4", ".bundle.partial-x5", "bundle.partial-1-x6", f".old-bundle-{dead}-x7"]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_int8.tflite").write_bytes(b"x")
    later = time.time() + 600  # young: perhaps a live export on another host sharing the folder
    assert remove_orphaned_work(str(out), now=later) == ([], None)
    assert remove_orphaned_work(str(out), now=later + 3600) == (
        [str(tmp_path / n) for n in sorted(names[:2])], None)
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:] + ["bundle"])  # a live one, another --out's, others
    # killed between moving the old bundle aside and the new one in: the old one goes back, the new one stays
    (tmp_path / f".bundle.old-bundle-{dead}-y").mkdir()
    (tmp_path / f".bundle.old-bundle-{dead}-y" / "sort.yaml").write_text("edited by the operator")
    (tmp_path / f".bundle.partial-{dead}-y").mkdir()
    shutil.rmtree(str(out))
    assert remove_orphaned_work(str(out), now=later) == ([], str(tmp_path / f".bundle.old-bundle-{dead}-y"))
    assert (out / "sort.yaml").read_text() == "edited by the operator"
    assert (tmp_path / f".bundle.partial-{dead}-y").is_dir()
