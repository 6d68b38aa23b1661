"""``edge-trash inspect``: predict which ops of a ``.tflite`` run on the Edge TPU.

Imports only click and the standard library at module level; the flatbuffer reader is imported
when the command runs. TensorFlow is never imported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional, Tuple

import click

# what ``edgetpu_compiler --num_segments N`` names its outputs: model_segment_0_of_2_edgetpu.tflite, ...
SEGMENT_RE = re.compile(r"^(?P<stem>.+)_segment_(?P<k>\d+)_of_(?P<n>\d+)_edgetpu\.tflite$")


def segment_of(model: Path) -> Optional[Tuple[str, int, int]]:
    """``(stem, k, n)`` when ``model`` is segment ``k`` (from 0) of ``n`` of a pipelined model, else None."""
    match = SEGMENT_RE.match(model.name)
    return (match["stem"], int(match["k"]), int(match["n"])) if match else None


def model_in(path: Path) -> Path:
    """``path`` itself, or for a folder (a bundle) its compiled ``*_edgetpu.tflite`` or else its
    one ``.tflite``; a folder with none or several raises ``click.BadParameter`` listing them."""
    if not path.is_dir():
        return path
    models = sorted(path.glob("*.tflite"))
    compiled = [m for m in models if m.name.endswith("_edgetpu.tflite")]
    for choice in (compiled, models):
        if len(choice) == 1:
            return choice[0]
    listed = ", ".join(m.name for m in (compiled or models))
    segments = [segment_of(m) for m in compiled]
    if len(compiled) > 1 and all(segments) and len({(stem, n) for stem, _, n in segments}) == 1:
        raise click.BadParameter(f"{path} holds {len(compiled)} segments of one pipelined model ({listed}), which "
                                 "run together, one Edge TPU each: name one to inspect it", param_hint="MODEL")
    raise click.BadParameter(f"{path} holds {f'several models ({listed}): name one' if listed else 'no .tflite file'}",
                             param_hint="MODEL")


@click.command("inspect")
@click.argument("model", type=click.Path(exists=True, readable=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of a table.")
def inspect_cmd(model: Path, as_json: bool) -> None:
    """Predict what the Edge TPU compiler 16 does with MODEL (a .tflite file, or a bundle folder:
    its compiled model, else its one .tflite).

    Lists every op in execution order with its version, tensors and quantization, and whether it
    runs on the Edge TPU or the CPU, and why. For a compiled *_edgetpu.tflite it shows which ops
    run outside edgetpu-custom-op. Exit status 0 when the file was read (even with CPU ops),
    2 when MODEL is not a TFLite model.
    """
    from edge_trash.export.compat import format_table, inspect_tflite, summary_line
    from edge_trash.export.tflite_model import TfliteFormatError

    model = model_in(model)
    try:
        report = inspect_tflite(model)
    except TfliteFormatError as exc:
        raise click.BadParameter(str(exc), param_hint="MODEL") from exc
    if as_json:
        click.echo(json.dumps(report.to_json_dict(), indent=1))
        return
    click.echo(format_table(report))
    click.echo(summary_line(report))
    click.echo(next_step(report, model))


def next_step(report, model: Path) -> str:
    """The line after the summary: copy a compiled bundle to the board, or the compiler command for this model
    (with what keeps ops on the CPU), or what to fix first when the compiler would refuse it."""
    from edge_trash.export.bundle import covered_by_manifest, push_command
    from edge_trash.export.compiler import RECOMPILE_IN_EXPORT, compile_command
    from edge_trash.export.edgetpu_gate import ALLOWED_CPU_TAIL, blocker
    from edge_trash.terminal import plural

    bundle = model.parent if model.parent.name not in ("", ".", "..") else model.parent.resolve()
    in_bundle = (bundle / "manifest.json").is_file()
    segment = segment_of(model)
    if report.compiled and segment:
        _, k, n = segment
        fed = "an image" if k == 0 else f"segment {k - 1}'s outputs, not an image"
        return (f"next: this is segment {k} (from 0) of {n} of a model compiled with --num_segments {n}; its inputs "
                f"are {fed}: run all {n} together with pycoral's PipelinedModelRunner, one Edge TPU each (the "
                "edge-trash service runs one whole model: its export compiles without segments)")
    if report.compiled:
        if in_bundle and covered_by_manifest(str(bundle), model.name):
            return f"next: copy the bundle to the board: {push_command(str(bundle))}"
        if in_bundle:  # compiled by hand into the bundle after the export
            return (f"next: {bundle}/manifest.json does not list {model.name}, so the service cannot check it: rerun "
                    "the export with --edgetpu --compiler PATH where edgetpu_compiler is installed, then copy the "
                    "bundle to the board")
        return "next: nothing to compile; it runs with the Edge TPU delegate (libedgetpu.so.1) where a TPU is present"
    if model.name.endswith("_edgetpu.tflite"):  # named as the compiler names its output, but not compiled
        return (f"next: {model.name} holds no edgetpu-custom-op, so all of it runs on the CPU: the compiler mapped "
                "nothing (see its .log beside it), or this is not the compiler's output; compile the model it was "
                "made from, not this file")
    found = blocker(report, float_input_ok=True)
    if not report.compiler_can_parse or report.compiler_error:
        op, reason, fix = found
        return f"fix first: {reason}" if op is None else f"fix first: op {op.index} {op.name}: {fix}"
    if in_bundle:  # the export compiles it and lists it in the manifest: compiling by hand first is work twice
        step = f"next: {RECOMPILE_IN_EXPORT}"
    else:
        step = f"next: {compile_command(model)} on an x86-64 Linux machine"
    if found is not None:
        op, _, fix = found
        after = sum(1 for later in report.ops[op.index + 1:] if later.name not in ALLOWED_CPU_TAIL)
        ops = (f"the {plural(after, 'op')} after op {op.index} {op.name}" if op.name in ALLOWED_CPU_TAIL else
               f"op {op.index} {op.name}" + (f" and the {plural(after, 'op')} after it" if after else ""))
        step += f"; to move {ops} onto the Edge TPU: {fix}"
    return step
