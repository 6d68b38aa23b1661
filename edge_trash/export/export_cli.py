"""``edge-trash export``: parse flags, call ``export_bundle``, print, exit with its code.

Only click and the stdlib are imported at module level (``edge-trash --help`` stays fast).
"""

from __future__ import annotations

import sys

import click


def _percent(ap50: "float | None") -> str:
    """An AP50 of parity.json (points, None where pycocotools had none) as the summary shows it."""
    return "n/a" if ap50 is None else f"{ap50}%"


@click.command(epilog="""\b
Exit codes:
  0  bundle written (and compiled, with --edgetpu)
  1  bad input found while exporting (not a run directory, labels that differ, a folds folder,
     no train or val split, an --out that is not a bundle)
  2  usage error (a missing option, a path that does not exist, a value out of range)
  3  --edgetpu but no edgetpu_compiler: everything else is written; the message says how to
     compile which file
  4  the model would not map to the Edge TPU (the op that blocks is named), or the compiler
     mapped less than that (its compiled model is not one Edge TPU subgraph followed only by
     DEQUANTIZE and the postprocess); --allow-cpu-ops makes this a warning
  5  int8 AP50 dropped more than --max-ap-drop points (see parity.json)
  6  edgetpu_compiler ran and failed (its errors are printed; a log it wrote is in the bundle)
  130 / 143  stopped by Ctrl-C / SIGTERM (an older bundle in --out is left as it was)
For 4, 5 and 6 with a working bundle in --out (one with its manifest), that bundle is kept and
this export's diagnostics go to OUT.failed beside it.""")
@click.option("--model", "model", required=True, type=click.Path(exists=True, file_okay=False),
              help="RUN_DIR written by `edge-trash train`.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="TFRecord directory: train split for calibration, val split for parity.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Bundle directory to create (an older bundle there is replaced; a sort.yaml edited there is "
                   "kept, the new template written beside it as sort.yaml.new; a folder holding files an export "
                   "does not write is refused).")
@click.option("--edgetpu/--no-edgetpu", default=False, show_default=True,
              help="Gate on Edge TPU compatibility and compile with edgetpu_compiler.")
@click.option("--compiler", type=click.Path(dir_okay=False), default=None,
              help="Path of edgetpu_compiler (default: look on PATH).")
@click.option("--compiler-timeout", type=click.IntRange(min=1), default=180, show_default=True,
              help="Seconds edgetpu_compiler may take (its own --timeout_sec); a large model may need more.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=300, show_default=True,
              help="Train images for int8 calibration, stratified by class (warns below 100).")
@click.option("--max-ap-drop", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="Largest AP50 drop (points) of the int8 model against the float model.")
@click.option("--allow-cpu-ops", is_flag=True, default=False,
              help="Warn instead of failing when ops other than the final DEQUANTIZE/postprocess "
                   "would run on the CPU.")
@click.option("--skip-parity", is_flag=True, default=False,
              help="Do not evaluate float vs int8 (parity.json then holds skipped: true, passed: null, the "
                   "calibration record and the CPU latency).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration image pick.")
def export(model: str, data: str, out: str, edgetpu: bool, compiler: str, compiler_timeout: int,
           calibration_images: int, max_ap_drop: float, allow_cpu_ops: bool, skip_parity: bool, seed: int) -> None:
    """Quantize a trained run to int8, check and compile it for the Edge TPU, write the device bundle."""
    from edge_trash.export.bundle import ExportOptions, export_bundle, summary_line
    from edge_trash.terminal import stop_on_sigterm

    if compiler and not edgetpu:
        raise click.UsageError("--compiler is used only with --edgetpu (which compiles the model and fails unless "
                               "it maps to the Edge TPU): add --edgetpu")

    stop_on_sigterm()  # a `kill` unwinds like Ctrl-C: the half-built bundle (a hidden .OUT.partial-*) is removed
    options = ExportOptions(model=model, data=data, out=out, edgetpu=edgetpu, compiler=compiler,
                            compiler_timeout=compiler_timeout, calibration_images=calibration_images, max_ap_drop=max_ap_drop,
                            allow_cpu_ops=allow_cpu_ops, seed=seed, parity=not skip_parity)
    try:
        result = export_bundle(options, log=lambda line: click.echo(f"export: {line}", err=True))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # a model or data path that is not there, an --out that cannot be written
        from edge_trash.atomic_files import os_error_message

        raise click.ClickException(os_error_message(exc, out)) from exc
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    parity = result.parity or {}
    if parity.get("not_applicable"):
        click.echo(f"parity: n/a (AP50 float {_percent(parity['float']['AP50'])} int8 "
                   f"{_percent(parity['int8']['AP50'])}); see the warning above")
    elif parity and not parity.get("skipped"):
        reproduced = parity["reproduced"]
        share = (f"int8 reproduces {100 * reproduced['fraction']:.1f}% of float detections"
                 if reproduced.get("fraction") is not None else
                 f"reproduced detections n/a (no float detection scoring {reproduced.get('min_score')} or more)")
        click.echo(f"parity: AP50 float {_percent(parity['float']['AP50'])} int8 {_percent(parity['int8']['AP50'])} "
                   f"(drop {parity['drop_points']['AP50']} points), {share}")
    latency = parity.get("int8_cpu_latency_ms") if parity else None
    if latency:
        click.echo(f"int8 CPU latency: median {latency['median_ms']:.1f} ms over {latency['runs']} runs")
    if result.message:
        click.echo(f"error: {result.message}" if result.exit_code not in (0, 3) else result.message, err=True)
    click.echo(summary_line(result))
    sys.exit(int(result.exit_code))
