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
              help="Folder for the JPEGs the COCO file names (default: beside OUT, named after it: "
                   "relabel.json -> relabel_images).")
def export(queue_dir: str, out: str, images_out: str) -> None:
    """Write QUEUE_DIR's frames as COCO, least confident first, detections as pre-annotations.

    Entries caught half-copied are skipped and listed. Exit status: 0 written (or an empty queue), 1 a
    damaged queue, nothing exportable in it, --images-out holding other pictures under its names or OUT
    other annotations (a file corrected since: never replaced), 2 QUEUE_DIR is no queue or an output lies
    inside it.
    """
    from edge_trash.edge_runtime.queue_export import NotAQueueError, QueueError, export_queue_as_coco

    images_out = images_out or os.path.join(os.path.dirname(os.path.abspath(out)),
                                            os.path.splitext(os.path.basename(out))[0] + "_images")
    queue_real = os.path.realpath(queue_dir)
    for flag, path, name in (("--out", out, "relabel.json"), ("--images-out", images_out, "relabel_images")):
        real = os.path.realpath(path)
        if real == queue_real or real.startswith(queue_real.rstrip(os.sep) + os.sep):
            raise click.BadParameter(
                f"{path} is inside the queue {queue_dir}, where the next export would read it as a hard example; "
                f"write it outside, e.g. {flag} {os.path.join(os.path.dirname(queue_real), name)}",
                param_hint=flag)
    from edge_trash.terminal import plural, progress_bar, shell_word

    start = time.time()
    try:
        summary = export_queue_as_coco(queue_dir, out, images_out, wrap=lambda files, total: progress_bar(
            files, total=total, unit="img", desc="queue export", disable=total < 500))
    except NotAQueueError as exc:  # no queue at all: a usage error (2)
        raise click.BadParameter(str(exc), param_hint="QUEUE_DIR")
    except QueueError as exc:  # a damaged queue, or outputs it would overwrite: an error of its files (1)
        raise click.ClickException(str(exc))

    skipped = summary["skipped"]
    if skipped:
        click.echo(f"queue export: skipped {plural(len(skipped), 'entry', 'entries')} that cannot be exported:"
                   + "".join(f"\n  {path}: {reason}" for path, reason in skipped[:5])
                   + (f"\n  ... and {len(skipped) - 5} more"
                      + (f" (listed under info.skipped in {out})" if summary["images"] else "")
                      if len(skipped) > 5 else ""), err=True)
    if not summary["images"]:
        if skipped:
            raise click.ClickException(f"nothing exported: not one entry of {queue_dir} could be read (above); copy "
                                       "the queue again once the device is stopped")
        click.echo(f"queue export: {queue_dir} holds no hard examples yet: nothing to relabel, nothing written "
                   "(the device saves uncertain frames there while it sorts)")
        return
    if summary["relabeled"]:
        click.echo(f"note: {plural(summary['relabeled'], 'detection')} came from a model whose classes differ from "
                   f"the queue's labels.json (the model was updated): each is filed under the class name the "
                   "device gave it")
    click.echo(f"queue export: wrote {plural(summary['images'], 'image')} and "
               f"{plural(summary['annotations'], 'pre-annotation')} to {out} (images in {images_out}) in "
               f"{time.time() - start:.1f}s")
    # built alone, a few frames hold only some classes: the new data would lack the others and the run's export
    # would refuse it, so they go in with the data the model learned from
    click.echo("next: correct the boxes, then build them with the data the model was trained on (on their own they "
               "lack classes), with the options that build had (its --class-map or --supercategories): "
               "edge-trash build-tfrecords --annotations TRAINED_ON.json --annotations "
               f"{shell_word(out)} --images TRAINED_ON_IMAGES --images {shell_word(images_out)} --out DATA_DIR")
