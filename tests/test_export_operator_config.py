"""A re-export keeps the operator's edited sort.yaml, writes the new template beside it and checks the kept file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edge_trash.edge_runtime.sort_config import default_sort_config
from edge_trash.export.operator_config import (ClassCheck, check_sort_config, edited_sort_config,
                                               keep_edited_sort_config, last_template_sha256)

NAMES = ["can", "cup", "lid"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bundle(tmp_path, sort_yaml, manifest):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    if sort_yaml is not None:
        (bundle / "sort.yaml").write_bytes(sort_yaml)
    if manifest is not None:
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_edited_sort_config_tells_the_template_from_an_edit(tmp_path):
    template = default_sort_config(NAMES).encode("utf-8")
    edited = template.replace(b'"travel_delay_s": 0.8', b'"travel_delay_s": 1.4')
    cases = [  # (sort.yaml, manifest, new template, expected)
        (None, {"sort_config": {"template_sha256": _sha(template)}}, None, None),
        (template, {"sort_config": {"template_sha256": _sha(template)}}, None, None),
        (edited, {"sort_config": {"template_sha256": _sha(template)}}, None, edited),
        # a bundle exported before sort_config was recorded: its files table holds the template's hash
        (template, {"files": {"sort.yaml": {"sha256": _sha(template), "size": len(template)}}}, None, None),
        (edited, {"files": {"sort.yaml": {"sha256": _sha(template), "size": len(template)}}}, None, edited),
        # no manifest (an export stopped at a gate): whatever is there is the operator's
        (template, None, None, template),
        # ... unless it is the new template byte for byte
        (template, None, template, None),
    ]
    for k, (sort_yaml, manifest, new_template, expected) in enumerate(cases):
        case = tmp_path / str(k)
        case.mkdir()
        bundle = _bundle(case, sort_yaml, manifest)
        assert edited_sort_config(str(bundle), new_template) == expected, k
    assert last_template_sha256(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("classes, reject, expected", [
    ({"can": "metal", "cup": "paper", "lid": "metal"}, None, ClassCheck([], [], "reject")),
    ({"can": "metal"}, "manual", ClassCheck(["cup", "lid"], [], "manual")),
    ({"can": "metal", "bottle": "plastic"}, None, ClassCheck(["cup", "lid"], ["bottle"], "reject")),
])
def test_check_sort_config_lists_unmapped_and_unknown_classes(classes, reject, expected):
    raw = {"classes": classes, **({"reject_bin": reject} if reject else {})}
    assert check_sort_config(json.dumps(raw).encode("utf-8"), NAMES) == expected


def test_check_sort_config_reports_an_unreadable_file():
    pytest.importorskip("yaml")
    check = check_sort_config(b"{ classes: [", NAMES, "bundle/sort.yaml")
    assert check == ClassCheck([], [], "reject", error="bundle/sort.yaml: line 1 column 13: not valid YAML: expected "
                                                       "the node content, but found '<stream end>'")


def test_keep_edited_sort_config_moves_the_template_aside_and_says_what_the_kept_file_misses(tmp_path):
    staging, out = tmp_path / "staging", tmp_path / "bundle"
    staging.mkdir()
    template = default_sort_config(NAMES + ["paper"]).encode("utf-8")
    (staging / "sort.yaml").write_bytes(template)
    edited = json.dumps({"classes": {"can": "metal", "bottle": "plastic"}, "bins": ["metal", "plastic", "manual"],
                         "reject_bin": "manual"}).encode("utf-8")
    kept = keep_edited_sort_config(str(staging), str(out), edited, NAMES + ["paper"])
    assert (staging / "sort.yaml").read_bytes() == edited
    assert (staging / "sort.yaml.new").read_bytes() == template
    assert kept.notes == [
        f"{out}/sort.yaml was edited after the last export: kept as it is; the template for this model is "
        f"{out}/sort.yaml.new (compare them to carry its changes over)",
        f"{out}/sort.yaml maps no bin for cup, lid, paper: the sort service sends them to reject_bin 'manual' until "
        "they are added to classes (as sort.yaml.new has them)"]
    assert kept.warnings == [
        f"{out}/sort.yaml maps bottle, not classes of this model (its classes: can, cup, lid, paper): the sort "
        "service refuses to start until they are removed from classes"]
    assert kept.blocks_service is True


def test_keep_edited_sort_config_without_a_template_keeps_the_file_alone(tmp_path):
    staging, out = tmp_path / "staging", tmp_path / "bundle"
    staging.mkdir()
    edited = default_sort_config(NAMES, {"lid": "metal"}).encode("utf-8")
    kept = keep_edited_sort_config(str(staging), str(out), edited, NAMES)
    assert sorted(p.name for p in staging.iterdir()) == ["sort.yaml"]
    assert kept.notes == [f"{out}/sort.yaml was edited after the last export: kept as it is (this export stopped "
                          "before writing a template)", f"{out}/sort.yaml maps every class of this model"]
    assert kept.warnings == [] and kept.blocks_service is False


def test_the_next_command_says_to_fix_a_kept_sort_yaml_that_stops_the_service():
    from edge_trash.export.bundle import ExitCode, ExportResult

    result = ExportResult("out/bundle", ExitCode.OK, "", {}, 1.0, manifest_written=True)
    push = "mdt push out/bundle /home/mendel/  (or scp -r out/bundle mendel@BOARD:)"
    assert result.next_command() == push
    result.sort_config_blocks = True
    assert result.next_command() == ("fix out/bundle/sort.yaml as the warning says (or copy sort.yaml.new over it), "
                                     "then " + push)
    result = ExportResult("my out/bundle", ExitCode.NOT_COMPILED, "", {}, 1.0, manifest_written=True)
    assert result.next_command() == (  # one compile, by the export, which lists it in the manifest
        "on an x86-64 Linux machine with edgetpu_compiler, rerun the export with --edgetpu (and --compiler PATH where "
        "it is not on PATH): it compiles the model and lists it in the bundle's manifest (the bundle already runs on "
        "the CPU as it is)")


def _loader(names, activation="relu6"):
    from export_helpers import TinyConfig, tiny_anchors, tiny_ssd

    def load(run_dir):
        model = tiny_ssd(len(names), planted_class=1, activation=activation)
        return model, TinyConfig(num_classes=len(names)), names, tiny_anchors()
    return load


@pytest.mark.slow
def test_reexport_keeps_the_edited_sort_yaml_even_through_a_failed_gate(tmp_path, sample_build, monkeypatch):
    from edge_trash.edge_runtime.manifest import verify_bundle
    from edge_trash.edge_runtime.sort_config import load_sort_config
    from edge_trash.export.bundle import ExitCode, ExportOptions, export_bundle

    data_dir, _ = sample_build
    names = (Path(data_dir) / "labels.txt").read_text().split()
    run = tmp_path / "run"
    run.mkdir()
    (run / "labels.txt").write_text("\n".join(names) + "\n")
    bundle = tmp_path / "bundle"
    options = dict(model=str(run), data=str(data_dir), out=str(bundle), calibration_images=4, parity=False,
                   latency_runs=1)
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler

    first = export_bundle(ExportOptions(**options), loader=_loader(names))
    assert first.exit_code == ExitCode.OK and first.notes == []
    template = (bundle / "sort.yaml").read_bytes()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["sort_config"] == {"template_sha256": _sha(template), "operator_file_kept": False}

    # Untouched: a re-export writes the template again, nothing beside it.
    again = export_bundle(ExportOptions(**options), loader=_loader(names))
    assert again.notes == [] and not (bundle / "sort.yaml.new").exists()

    # Edited on the device: the first class goes to the reject bin from now on.
    edited = default_sort_config(names[1:]).replace('"travel_delay_s": 0.8', '"travel_delay_s": 1.4').encode()
    (bundle / "sort.yaml").write_bytes(edited)
    kept = export_bundle(ExportOptions(**options), loader=_loader(names))
    assert kept.exit_code == ExitCode.OK
    assert (bundle / "sort.yaml").read_bytes() == edited
    assert (bundle / "sort.yaml.new").read_bytes() == template
    assert kept.notes == [
        f"{bundle}/sort.yaml was edited after the last export: kept as it is; the template for this model is "
        f"{bundle}/sort.yaml.new (compare them to carry its changes over)",
        f"{bundle}/sort.yaml maps no bin for {names[0]}: the sort service sends them to reject_bin 'reject' until "
        "they are added to classes (as sort.yaml.new has them)"]
    checked = verify_bundle(str(bundle))
    assert checked["modified_config"] == ["sort.yaml"] and "sort.yaml.new" not in checked["files"]
    assert checked["sort_config"] == {"template_sha256": _sha(template), "operator_file_kept": True}
    assert load_sort_config(str(bundle / "sort.yaml"), names).travel_delay_s == 1.4

    # An export that stops at the Edge TPU gate leaves this working bundle as it was, the edit included, and
    # writes its diagnostics beside it.
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    failed = export_bundle(ExportOptions(**options, edgetpu=True), loader=_loader(names, "leaky_relu"))
    assert failed.exit_code == ExitCode.EDGETPU_INCOMPATIBLE
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before
    verify_bundle(str(bundle))
    assert failed.bundle_dir == f"{bundle}.failed" and (tmp_path / "bundle.failed" / "compat.json").is_file()
    # ... and the next export still takes it for the operator's (and removes the failed one's diagnostics).
    fixed = export_bundle(ExportOptions(**options), loader=_loader(names))
    assert fixed.exit_code == ExitCode.OK and not (tmp_path / "bundle.failed").exists()
    assert (bundle / "sort.yaml").read_bytes() == edited and (bundle / "sort.yaml.new").read_bytes() == template
    # A gate that fails where no working bundle is (its manifest removed) writes there, keeping the edit.
    (bundle / "manifest.json").unlink()
    failed = export_bundle(ExportOptions(**options, edgetpu=True), loader=_loader(names, "leaky_relu"))
    assert failed.bundle_dir == str(bundle) and not (tmp_path / "bundle.failed").exists()
    assert (bundle / "sort.yaml").read_bytes() == edited and not (bundle / "manifest.json").exists()
    assert failed.notes[0] == (f"{bundle}/sort.yaml was edited after the last export: kept as it is (this export "
                               "stopped before writing a template)")
