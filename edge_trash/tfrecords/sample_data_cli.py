"""``edge-trash sample-data``: write the built-in synthetic litter dataset."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command("sample-data")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write annotations.json and images/ into.")
@click.option("--num-images", default=200, show_default=True, type=click.IntRange(min=1),
              help="How many images to draw (at least 20 unless --clean: the broken files take 20).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Same seed, same bytes.")
@click.option("--clean", is_flag=True, help="Leave out the deliberately broken files and records and the "
                                            "EXIF-rotated photos (the unused placeholder category stays).")
def sample_data(out: Path, num_images: int, seed: int, clean: bool) -> None:
    """Write the built-in sample dataset: synthetic litter photos with COCO boxes.

    Bottles, cans, cups, cartons, wrappers and cigarette butts on conveyor belts,
    ground and dark scenes, unbalanced as TACO is (5 bottles per cigarette
    butt; only a small --num-images has classes under analyze's long-tail line
    of 20), with (unless --clean) a few
    EXIF-rotated photos, broken files and records a converter must survive.
    """
    from edge_trash.tfrecords.sample_data import write_sample_dataset

    if num_images < 20 and not clean:
        raise click.BadParameter(f"{num_images} is under 20: the deliberately broken files take the first 20 "
                                 "images; give --num-images 20 or more, or --clean", param_hint="'--num-images'")
    start = time.monotonic()
    try:
        ds = write_sample_dataset(out, num_images=num_images, seed=seed, with_problems=not clean)
    except OSError as exc:
        from edge_trash.atomic_files import os_error_message

        raise click.ClickException(os_error_message(exc, out))
    from edge_trash.terminal import plural, shell_word

    listed = {ds.images / im["file_name"] for im in json.loads(ds.annotations.read_text())["images"]}
    files = [p for p in listed if p.is_file()]
    size = sum(p.stat().st_size for p in files)  # not what else the folder holds
    absent = ds.num_images - len(files)  # listed in the JSON and left out on purpose: a converter must say so
    planted = ("" if clean else "; on purpose (--clean leaves them out), a few are broken"
               + (f" and the JSON lists {absent} more with no file" if absent else ""))
    click.echo(f"sample-data: wrote {plural(len(files), 'image file')} ({size / 1e6:.1f} MB) to {ds.images} and "
               f"{ds.annotations} ({ds.annotations.stat().st_size / 1e3:.0f} KB) in {time.monotonic() - start:.1f}s"
               f"{planted}")
    if ds.removed:
        click.echo(f"sample-data: removed {plural(len(ds.removed), 'photo')} an earlier sample-data run left in "
                   f"{ds.images} that this dataset does not list (the first, {ds.removed[0].name})")

    click.echo(f"next: edge-trash build-tfrecords --annotations {shell_word(ds.annotations)} --images "
               f"{shell_word(ds.images)} --out {shell_word(ds.root / 'tfrecords')}")
