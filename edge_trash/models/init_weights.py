"""Initial weights for training: Keras ImageNet MobileNetV2 ``.h5``, a previous run, or scratch.

Nothing is downloaded. ``imagenet`` looks the Keras file up in ``~/.keras/models``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from edge_trash.models.config import SSDConfig
from edge_trash.terminal import plural

SCRATCH = "scratch"
IMAGENET = "imagenet"
KERAS_CACHE = Path("~/.keras/models")


class InitError(ValueError):
    """The --init source is missing or does not fit the model."""


@dataclass(frozen=True)
class InitSource:
    """Where initial weights come from: ``kind`` is 'scratch', 'keras_h5' or 'run_dir'."""

    kind: str
    path: Optional[Path] = None


def keras_weights_name(width_multiplier: float) -> str:
    """The file name Keras downloads for MobileNetV2 without top (any input size loads it)."""
    alpha = {0.35: "0.35", 0.5: "0.5", 0.75: "0.75", 1.0: "1.0"}[width_multiplier]
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_224_no_top.h5"


def resolve_init(init: str, config: SSDConfig) -> InitSource:
    """Turn an ``--init`` value (path, 'imagenet' or 'scratch') into an ``InitSource``."""
    from edge_trash.models.run_dir import CONFIG_JSON

    if init == SCRATCH:
        return InitSource(SCRATCH)
    cache = KERAS_CACHE.expanduser()
    if init == IMAGENET:
        path = cache / keras_weights_name(config.width_multiplier)
        if not path.is_file():
            raise InitError(
                f"--init imagenet: {path} not found (nothing is downloaded). Copy Keras' "
                f"MobileNetV2 ImageNet file there or pass --init PATH, or --init scratch "
                "(accuracy will be poor)")
        return InitSource("keras_h5", path)
    path = Path(init).expanduser()
    if not path.exists() and not path.is_absolute() and (cache / init).is_file():
        path = cache / init
    if path.is_dir():
        if not (path / CONFIG_JSON).is_file():
            raise InitError(f"--init {init}: directory without {CONFIG_JSON}; expected an "
                            "edge-trash run directory or a Keras .h5 weights file")
        return InitSource("run_dir", path)
    if path.is_file():
        if path.suffix.lower() not in (".h5", ".hdf5"):
            raise InitError(f"--init {init}: expected a Keras MobileNetV2 .h5 weights file")
        return InitSource("keras_h5", path)
    raise InitError(f"--init {init}: no such file or directory (also looked in {cache}); use a "
                    "Keras MobileNetV2 .h5, a previous run directory, 'imagenet' or 'scratch'")


def fine_tune_command(data_dir: Path, run_dir: Path) -> str:
    """The command that trains a new run on ``data_dir`` starting from the weights of ``run_dir``:
    ``edge-trash train --data DATA --out NEW_RUN --init RUN --config RUN/config.json``.

    ``--config RUN/config.json`` gives the new run that run's model (and train) settings, which ``--init RUN``
    needs (:func:`load_from_run` refuses another width, head or anchors); it is left out when the run has no
    config.json to name.
    """
    from edge_trash.models.run_dir import CONFIG_JSON
    from edge_trash.terminal import shell_word

    config = Path(run_dir) / CONFIG_JSON
    with_config = f" --config {shell_word(config)}" if config.is_file() else ""
    return (f"edge-trash train --data {shell_word(data_dir)} --out NEW_RUN --init {shell_word(run_dir)}"
            f"{with_config}")


def _h5_layer_names(path: Path) -> List[str]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            names = group.attrs.get("layer_names")
            if names is None:
                raise InitError(f"{path}: not a Keras weights file (no 'layer_names')")
            return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    except OSError as exc:
        raise InitError(f"{path}: cannot read as HDF5 ({exc})") from exc


def load_backbone_h5(model, path: Path, config: SSDConfig) -> int:
    """Load a Keras MobileNetV2 (no top) ``.h5`` into the model's backbone; return layers loaded.

    Raises ``InitError`` when the file lacks backbone layers or a shape differs (another
    width multiplier, another architecture).
    """
    from edge_trash.models.ssd import BACKBONE_NAME

    backbone = model.get_layer(BACKBONE_NAME)
    wanted = [layer.name for layer in backbone.layers if layer.weights]
    in_file = set(_h5_layer_names(path))
    missing = [name for name in wanted if name not in in_file]
    if missing:
        raise InitError(
            f"{path}: {len(missing)} of {len(wanted)} MobileNetV2 layers missing "
            f"(e.g. {missing[:3]}); expected Keras' MobileNetV2 include_top=False weights "
            f"such as {keras_weights_name(config.width_multiplier)}")
    try:
        backbone.load_weights(str(path), by_name=True)
    except ValueError as exc:
        raise InitError(
            f"{path}: shapes do not match MobileNetV2 width {config.width_multiplier} ({exc}); "
            f"use {keras_weights_name(config.width_multiplier)} or set model.width_multiplier "
            "to the file's width") from exc
    return len(wanted)


def _is_class_head(name: str) -> bool:
    """The layers whose output channels are (anchor, class) pairs: ``class_head_<level>`` (SSDLite's
    ``class_head_<level>_depthwise`` in front of it does not depend on the classes)."""
    return re.fullmatch(r"class_head_\d+", name) is not None


def _compare_classes(run_dir: Path, class_names: Optional[Sequence[str]]):
    """How the run's classes relate to the data's: ``("same"|"reorder"|"carry"|"rebuild", order, why)``.

    ``order[k]`` is the run's class index (1-based; 0 = background) of the data's class ``k``
    (``k`` = 0 for background) when the classes are the same set in another order ("reorder"), or when
    they share some classes ("carry": None for a class the run does not know).
    """
    from edge_trash.models.run_dir import LABELS_TXT, RunDirError, read_labels

    if class_names is None:
        return "same", None, ""
    try:
        old_names = read_labels(Path(run_dir) / LABELS_TXT)
    except RunDirError as exc:
        return "rebuild", None, f"the run's classes are unknown ({exc})"
    new_names = list(class_names)
    if old_names == new_names:
        return "same", None, ""
    if sorted(old_names) == sorted(new_names) and len(set(new_names)) == len(new_names):
        return "reorder", [0] + [old_names.index(n) + 1 for n in new_names], ""
    added = [n for n in new_names if n not in old_names]
    gone = [n for n in old_names if n not in new_names]
    parts = []
    if added:
        parts.append("new " + ", ".join(repr(n) for n in added[:5]) + (" ..." if len(added) > 5 else ""))
    if gone:
        parts.append("gone " + ", ".join(repr(n) for n in gone[:5]) + (" ..." if len(gone) > 5 else ""))
    why = "the data's classes differ from the run's labels.txt (" + "; ".join(parts) + ")"
    if len(added) < len(new_names) and len(set(new_names)) == len(new_names) and len(set(old_names)) == len(old_names):
        return "carry", [0] + [old_names.index(n) + 1 if n in old_names else None for n in new_names], why
    return "rebuild", None, why


def _reorder_channels(weights, num_outputs: int, order: List[int]):
    """Permute the (anchor, class) output channels of a class-head conv's ``[kernel, bias]``."""
    import numpy as np

    per_anchor = len(order)
    anchors = num_outputs // per_anchor
    index = np.array([a * per_anchor + c for a in range(anchors) for c in order])
    return [w[..., index] for w in weights]


def _carry_channels(old_weights, new_weights, order: List[Optional[int]]):
    """The fresh ``[kernel, bias]`` of a class-head conv with the (anchor, class) output channels of every class
    the run knows (``order[k]`` not None) taken from the run's ``old_weights``, background included."""
    import numpy as np

    per_anchor = len(order)
    anchors = new_weights[0].shape[-1] // per_anchor
    old_per_anchor = old_weights[0].shape[-1] // anchors
    to = np.array([a * per_anchor + c for a in range(anchors) for c, o in enumerate(order) if o is not None])
    frm = np.array([a * old_per_anchor + o for a in range(anchors) for o in order if o is not None])
    out = [w.copy() for w in new_weights]
    for target, source in zip(out, old_weights):
        target[..., to] = source[..., frm]
    return out


def load_from_run(model, run_dir: Path, config: SSDConfig,
                  class_names: Optional[Sequence[str]] = None) -> Tuple[List[str], str, str]:
    """Copy weights from a previous run: every layer whose shapes match (backbone, extra
    layers, box heads; class heads too when the classes are the same).

    With ``class_names`` (the data's labels), the class heads are carried over whole when the run's
    labels.txt lists the same classes in the same order; the same classes in another order have
    their output channels reordered to the data's order; other classes keep the channels of the
    classes both share (and of the background), the rest freshly initialised; no class in common
    leaves the class heads freshly initialised. Without ``class_names`` a class head is carried over
    when its shape matches.

    Returns ``(layers, action, why)``: the class-head layers ``action`` ("rebuilt", "reordered" or
    "carried") applied to, and how the classes differ when the class count alone does not say.
    """
    from edge_trash.models.run_dir import CONFIG_JSON, WEIGHTS_H5, read_run_config
    from edge_trash.models.ssd import build_ssd
    from edge_trash.terminal import shell_word

    old_config = SSDConfig.from_dict(read_run_config(run_dir)["model"])
    for key in ("width_multiplier", "head", "extra_layer_depths", "aspect_ratios",
                "reduce_boxes_in_lowest_layer", "interpolated_scale_aspect_ratio"):
        if getattr(old_config, key) != getattr(config, key):
            raise InitError(f"--init {run_dir}: model.{key} is {getattr(old_config, key)!r} there "
                            f"but {getattr(config, key)!r} here; they must match to carry "
                            f"weights over: add --config {shell_word(Path(run_dir) / CONFIG_JSON)} to train "
                            "with that run's model settings")
    weights = Path(run_dir) / WEIGHTS_H5
    if not weights.is_file():
        raise InitError(f"--init {run_dir}: {weights} not found (the run never evaluated)")
    verdict, order, why = _compare_classes(run_dir, class_names)
    if old_config.num_classes != config.num_classes and verdict != "carry":
        verdict, why = "rebuild", ""  # the shapes differ: the class count says it all
    old = build_ssd(old_config.replace(input_size=config.input_size))
    old.load_weights(str(weights))
    rebuilt, reordered, carried = [], [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        source = old.get_layer(layer.name)
        if _is_class_head(layer.name) and verdict == "rebuild":
            rebuilt.append(layer.name)
        elif _is_class_head(layer.name) and verdict == "carry":
            layer.set_weights(_carry_channels(source.get_weights(), layer.get_weights(), order))
            carried.append(layer.name)
        elif [w.shape for w in source.weights] != [w.shape for w in layer.weights]:
            rebuilt.append(layer.name)
        elif _is_class_head(layer.name) and verdict == "reorder":
            layer.set_weights(_reorder_channels(source.get_weights(), layer.weights[0].shape[-1], order))
            reordered.append(layer.name)
        else:
            layer.set_weights(source.get_weights())
    if reordered:
        return reordered, "reordered", ""
    if carried:
        return carried, "carried", why
    return rebuilt, "rebuilt", why if rebuilt else ""


def initialise(model, source: InitSource, config: SSDConfig,
               class_names: Optional[Sequence[str]] = None) -> str:
    """Apply ``source`` to a freshly built model; return a one-line description. ``class_names``
    (the data's labels) decide, for a previous run, whether its class heads carry over."""
    if source.kind == SCRATCH:
        return "random initialisation (--init scratch): expect poor accuracy on real data"
    if source.kind == "keras_h5":
        n = load_backbone_h5(model, source.path, config)
        return f"backbone from {source.path} ({plural(n, 'layer')})"
    layers, action, why = load_from_run(model, source.path, config, class_names)
    if action == "reordered":
        return (f"weights from run {source.path}; the same classes in another order: class heads "
                f"reordered to the data's class order: {', '.join(layers)}")
    if action == "carried":
        return (f"weights from run {source.path}; {why}: class heads keep the classes both have and start "
                f"afresh for the new ones: {', '.join(layers)}")
    if layers:
        because = f" ({why})" if why else ""
        return f"weights from run {source.path}; rebuilt for the new classes{because}: {', '.join(layers)}"
    return f"all weights from run {source.path}"
