"""``edge-trash queue export``: the device's hard-example queue as COCO for relabeling."""

import os
import time

import click


@click.group("queue")
def queue() -> None:
    """Work with the hard-example queue copied from a device."""


@queue.command("export")
@click.argument("queue_dir", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="COCO JSON to write (relabel.json).")
@click.option("--images-out", type=click.Path(file_okay=False),
              help="Folder for the JPEGs the COCO file names (default: OUT's folder/relabel_images).")
def export(queue_dir: str, out: str, images_out: str) -> None:
    """Write QUEUE_DIR's frames as COCO, least confident first, detections as pre-annotations."""
    from edge_trash.edge_runtime.queue_export import QueueError, export_queue_as_coco

    images_out = images_out or os.path.join(os.path.dirname(os.path.abspath(out)), "relabel_images")
    queue_real = os.path.realpath(queue_dir)
    for flag, path, name in (("--out", out, "relabel.json"), ("--images-out", images_out, "relabel_images")):
        real = os.path.realpath(path)
        if real == queue_real or real.startswith(queue_real.rstrip(os.sep) + os.sep):
            raise click.BadParameter(
                f"{path} is inside the queue {queue_dir}, where the next export would read it as a hard example; "
                f"write it outside, e.g. {flag} {os.path.join(os.path.dirname(queue_real), name)}",
                param_hint=flag)
    start = time.time()
    try:
        summary = export_queue_as_coco(queue_dir, out, images_out)
    except QueueError as exc:
        raise click.BadParameter(str(exc), param_hint="QUEUE_DIR")
    if not summary["images"]:
        click.echo(f"queue export: {queue_dir} holds no hard examples yet: nothing to relabel, nothing written "
                   "(the device saves uncertain frames there while it sorts)")
        return
    from edge_trash.terminal import plural, shell_word

    click.echo(f"queue export: wrote {plural(summary['images'], 'image')} and "
               f"{plural(summary['annotations'], 'pre-annotation')} to {out} (images in {images_out}) in "
               f"{time.time() - start:.1f}s")
    # built alone, a few frames hold only some classes: the new data would lack the others and the run's export
    # would refuse it, so they go in with the data the model learned from
    click.echo("next: correct the boxes, then build them with the data the model was trained on (on their own they "
               "lack classes): edge-trash build-tfrecords --annotations TRAINED_ON.json --annotations "
               f"{shell_word(out)} --images TRAINED_ON_IMAGES --images {shell_word(images_out)} --out DATA_DIR")
