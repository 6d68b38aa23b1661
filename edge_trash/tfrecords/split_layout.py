"""Which shards of a ``build-tfrecords`` folder a run trains and validates on (``edge-trash
train`` asks before it builds the model; build and analyze print the command it allows).

A plain build has ``train-*`` and ``val-*`` shards. A ``--folds K`` build has ``fold0-*`` ..
``fold{K-1}-*`` (and ``test-*``) instead: ``--fold k`` trains on every fold but ``k`` and
validates on fold ``k``. A split spec is one split name or several joined by ``+``
(``fold0+fold2``); ``edge_trash.train.input_pipeline.split_files`` reads either.

Everything here is checked before the model is built, so a folder that cannot train (no
train images, no val split, folds without ``--fold``) fails at once, naming the fix, rather
than in a traceback from the input pipeline or after the first training interval.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from edge_trash.terminal import shell_word

# A shard build-tfrecords writes: {split}-{index:05d}-of-{count:05d}.tfrecord
SHARD_RE = re.compile(r"^(train|val|test|fold\d+)-\d{5}-of-\d{5}\.tfrecord$")
# Written while a build renames its files into place; left only by one that failed midway.
COMMIT_JOURNAL = ".build-tfrecords.commit.json"
BUILD_LOCK = ".build-tfrecords.lock"  # held (flock) by a build while it runs


_NUMBERED = re.compile(r"^(.+)-(\d{5})-of-(\d{5})\.tfrecord$")


def split_shards(data_dir: Path, spec: str) -> List[Path]:
    """The shards of split ``spec`` (one split, or several joined by ``+``) in ``data_dir``
    (``{split}-*.tfrecord``), sorted within each split, in the order ``spec`` names them."""
    return [f for split in spec.split("+") for f in sorted(Path(data_dir).glob(f"{split}-*.tfrecord"))]


def splits_found(data_dir: Path) -> List[str]:
    """The split names of the ``.tfrecord`` files in ``data_dir`` (``train``, ``val``, ``fold0`` ...), sorted."""
    return sorted({p.name.split("-", 1)[0] for p in Path(data_dir).glob("*.tfrecord")})


def broken_shard_set(files: Sequence[Path], flag: str = "--data") -> str:
    """Why one split's shards ``files`` (``train-00001-of-00004.tfrecord`` ...) are not one whole set ("" when
    they are, or are not numbered so): numbered out of different totals (two builds' shards in one folder, one
    copied over the other: their records would be read twice or mixed), or some of the total missing (a copy that
    left one out: its records would be missing without a word). Read from the names alone, so it holds for Model
    Garden's converter's shards too."""
    totals: Dict[int, List[str]] = {}
    split = ""
    for path in files:
        found = _NUMBERED.match(path.name)
        if found:
            split = found.group(1)
            totals.setdefault(int(found.group(3)), []).append(path.name)
    if not totals:
        return ""
    folder = files[0].parent
    if len(totals) > 1:
        shown = "; ".join(f"{len(names)} numbered out of {total} ({names[0]}{', ...' if len(names) > 1 else ''})"
                          for total, names in sorted(totals.items()))
        return (f"{flag} {folder}: the {split} shards are of different builds: {shown}; their records would be "
                "read twice or mixed: rebuild into an empty --out, or remove the other build's shards")
    total, names = next(iter(totals.items()))
    missing = [f"{split}-{i:05d}-of-{total:05d}.tfrecord" for i in range(total)
               if f"{split}-{i:05d}-of-{total:05d}.tfrecord" not in names]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        return (f"{flag} {folder}: {len(missing)} of the {total} {split} shards {'is' if len(missing) == 1 else 'are'} "
                f"missing ({shown}): copy {'it' if len(missing) == 1 else 'them'} from the build's folder, or "
                "rebuild")
    return ""


def shards_unlike_report(data_dir: Path, flag: str = "--data") -> str:
    """Why the shards in ``data_dir`` are not the ones the build's ``report.json`` there lists ("" when they are,
    or there is no build's report): a shard of another size (another build's, copied over this one's under the
    same name) or one it does not list (another build's, left beside). Read from ``stat`` alone."""
    import json

    try:
        listed = json.loads((data_dir / "report.json").read_text(encoding="utf-8"))["shards"]
        sizes = {str(s["file"]): int(s["bytes"]) for s in listed}
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    other, unlisted = [], []
    for path in sorted(data_dir.iterdir()):
        if not SHARD_RE.match(path.name):
            continue
        if path.name not in sizes:
            unlisted.append(path.name)
        elif path.stat().st_size != sizes[path.name]:
            other.append(f"{path.name} is {path.stat().st_size:,} bytes, listed {sizes[path.name]:,}")
    if not (other or unlisted):
        return ""
    said = "; ".join(other[:2] + ([f"{', '.join(unlisted[:3])}{' ...' if len(unlisted) > 3 else ''} "
                                   f"{'is' if len(unlisted) == 1 else 'are'} not listed"] if unlisted else []))
    return (f"{flag} {data_dir}: its shards are not the ones its report.json lists ({said}): another build's "
            "shards copied in? rebuild, or copy the build's folder whole")


def unfinished_build(data_dir: Path, flag: str = "--data") -> str:
    """Why the records in ``data_dir`` must not be read now ("" when they may): a build-tfrecords is writing
    there (it holds its lock), or one was stopped while moving its files into place (its journal is left), so
    the folder holds shards of two builds."""
    try:
        import fcntl

        with open(data_dir / BUILD_LOCK, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return f"{flag} {data_dir}: a build-tfrecords is writing there now: wait for it to finish"
    except (ImportError, OSError):  # no lock file (no build running), or no locks here (Windows, some mounts)
        pass
    if (data_dir / COMMIT_JOURNAL).exists():
        return (f"{flag} {data_dir}: a build-tfrecords was stopped while moving its files into place, so the folder "
                "holds shards of two builds: run that build again (it finishes the move first)")
    return ""


class DataSplitError(ValueError):
    """The data folder cannot give the splits a run needs; the message says what to do."""


def folds_in(data_dir: Path) -> List[int]:
    """The fold numbers a ``--folds`` build wrote into ``data_dir`` (``[0, 1, 2]``), sorted."""
    found = (SHARD_RE.match(p.name) for p in Path(data_dir).glob("fold*-*.tfrecord"))
    return sorted({int(m.group(1)[len("fold"):]) for m in found if m})


def folds_without_train(data_dir: Path) -> List[int]:
    """The folds of a ``--folds`` build that has no train split (what train needs ``--fold K`` for, and export
    and a plain train/val run cannot use); ``[]`` for any other folder."""
    folds = folds_in(data_dir)
    return folds if folds and not any(Path(data_dir).glob("train-*.tfrecord")) else []


def _has_records(data_dir: Path, spec: str) -> Optional[bool]:
    """None when a split of ``spec`` has no shard; else whether any shard holds a record
    (a TFRecord file has no header of its own, so a shard with any byte holds one)."""
    sizes = []
    for split in spec.split("+"):
        shards = list(Path(data_dir).glob(f"{split}-*-of-*.tfrecord"))
        if not shards:
            return None
        sizes += [p.stat().st_size for p in shards]
    return any(sizes)


def training_splits(data_dir: Path, fold: Optional[int] = None) -> Tuple[str, str]:
    """``(train spec, val spec)`` for a run on ``data_dir``; ``DataSplitError`` naming the fix
    when the folder lacks them or one of them holds no record."""
    data_dir = Path(data_dir)
    unfinished = unfinished_build(data_dir)
    if unfinished:
        raise DataSplitError(unfinished)
    from edge_trash.tfrecords.other_formats import other_record_layout

    other = other_record_layout(data_dir, "--data")
    if other:
        raise DataSplitError(other)
    if not any(data_dir.glob("*.tfrecord")):
        raise DataSplitError(f"--data {data_dir}: no .tfrecord shards; pass the --out folder of "
                             "`edge-trash build-tfrecords`")
    folds = folds_in(data_dir)
    if fold is None:
        if folds_without_train(data_dir):
            raise DataSplitError(
                f"--data {data_dir}: holds {len(folds)} folds (fold{folds[0]}..fold{folds[-1]}, from build-tfrecords "
                f"--folds) and no train split: pass --fold K to train on the other folds and validate on fold K "
                f"(one run per fold: --fold {folds[0]} .. --fold {folds[-1]})")
        train, val = "train", "val"
    else:
        if not folds:
            raise DataSplitError(f"--fold {fold}: --data {data_dir} holds no folds; build it with "
                                 "`edge-trash build-tfrecords --folds K`, or leave --fold out to use its train/val")
        if fold not in folds:
            raise DataSplitError(f"--fold {fold}: --data {data_dir} holds folds {', '.join(map(str, folds))}")
        if len(folds) < 2:
            raise DataSplitError(f"--fold {fold}: --data {data_dir} holds one fold, so none is left to train on; "
                                 "build with --folds 2 or more")
        train, val = "+".join(f"fold{k}" for k in folds if k != fold), f"fold{fold}"
    for part in f"{train}+{val}".split("+"):
        broken = broken_shard_set(split_shards(data_dir, part))
        if broken:
            raise DataSplitError(broken)
    unlike = shards_unlike_report(data_dir)
    if unlike:
        raise DataSplitError(unlike)
    has_train, has_val = _has_records(data_dir, train), _has_records(data_dir, val)
    if not has_train:
        raise DataSplitError(
            f"--data {data_dir}: no training images (" + ("no train-*.tfrecord shards" if has_train is None else
                                                          "the train shards hold no record") + "); "
            + ("rebuild the folds" if fold is not None else "with --keep-splits, give a train annotation file "
               "too, or rebuild without --keep-splits for a new split"))
    if not has_val and fold is not None:
        raise DataSplitError(f"--fold {fold}: fold{fold} of --data {data_dir} holds no record; rebuild with fewer "
                             "--folds")
    if not has_val:
        raise DataSplitError(
            f"--data {data_dir}: no validation images (" + ("no val-*.tfrecord shards" if has_val is None else
                                                            "the val shards hold no record") + "); training keeps "
            "the checkpoint with the best val AP: rebuild with --val-fraction above 0 (with --keep-splits, give a "
            "val annotation file too)")
    return train, val


def train_command(data_dir: Path, boxes: Optional[Mapping[str, int]] = None) -> str:
    """The ``edge-trash train`` command the shards in ``data_dir`` allow, or "" when they lack
    training or validation images, or boxes where ``boxes`` gives each split's count of boxes other than crowd
    regions (the build's summary says why)."""
    folds = folds_in(data_dir)
    try:
        specs = training_splits(data_dir, folds[0] if folds else None)
    except DataSplitError:
        return ""
    if boxes is not None and not all(sum(boxes.get(s, 0) for s in spec.split("+")) for spec in specs):
        return ""
    if folds:
        gaps = sorted(set(range(folds[0], folds[-1] + 1)) - set(folds))  # folds whose every image was unreadable
        without = (f"; no fold{gaps[0]}: it holds no shard" if len(gaps) == 1 else
                   f"; no folds {', '.join(map(str, gaps[:5]))}{', ...' if len(gaps) > 5 else ''}: they hold no shard"
                   if gaps else "")
        return (f"edge-trash train --data {shell_word(data_dir)} --fold {folds[0]} --out runs/ssd-fold{folds[0]} "
                f"(one run per fold: --fold {folds[0]} .. {folds[-1]}{without})")
    return f"edge-trash train --data {shell_word(data_dir)} --out runs/ssd"
