"""``edge-trash inspect``: predict which ops of a ``.tflite`` run on the Edge TPU.

Imports only click and the standard library at module level; the flatbuffer reader is imported
when the command runs. TensorFlow is never imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


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
    from edge_trash.export.bundle import push_command
    from edge_trash.export.compiler import compile_command
    from edge_trash.export.edgetpu_gate import ALLOWED_CPU_TAIL, fix_for
    from edge_trash.terminal import plural

    in_bundle = (model.parent / "manifest.json").is_file()
    if report.compiled:
        if in_bundle:
            return f"next: copy the bundle to the board: {push_command(str(model.parent))}"
        return "next: nothing to compile; it runs with the Edge TPU delegate (libedgetpu.so.1) where a TPU is present"
    cause = report.cut_op  # a leading QUANTIZE of a float input is no cut: the rest maps
    if not report.compiler_can_parse or report.compiler_error:
        cause = cause or report.first_cpu_op
        if cause is None:
            return f"fix first: the compiler would fail: {report.compiler_error}"
        return f"fix first: op {cause.index} {cause.name}: {fix_for(cause.name, cause.reason)}"
    step = f"next: {compile_command(model)} on an x86-64 Linux machine"
    if in_bundle:
        step += ", then rerun the export with --compiler PATH so the bundle's manifest covers the compiled model"
    if cause is not None and cause.name not in ALLOWED_CPU_TAIL:
        after = len(report.ops) - 1 - cause.index
        step += (f"; to move op {cause.index} {cause.name} and the {plural(after, 'op')} after it onto the "
                 f"Edge TPU: {fix_for(cause.name, cause.reason)}")
    return step
