"""Initial weights for training: Keras ImageNet MobileNetV2 ``.h5``, a previous run, or scratch.

Nothing is downloaded. ``imagenet`` looks the Keras file up in ``~/.keras/models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from edge_trash.models.config import SSDConfig

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


def load_from_run(model, run_dir: Path, config: SSDConfig) -> List[str]:
    """Copy weights from a previous run: every layer whose shapes match (backbone, extra
    layers, box heads; class heads too when the class count is the same).

    Returns the names of the layers left freshly initialised (the rebuilt class heads).
    """
    from edge_trash.models.run_dir import WEIGHTS_H5, read_run_config
    from edge_trash.models.ssd import build_ssd

    old_config = SSDConfig.from_dict(read_run_config(run_dir)["model"])
    for key in ("width_multiplier", "head", "extra_layer_depths", "aspect_ratios",
                "reduce_boxes_in_lowest_layer", "interpolated_scale_aspect_ratio"):
        if getattr(old_config, key) != getattr(config, key):
            raise InitError(f"--init {run_dir}: model.{key} is {getattr(old_config, key)!r} there "
                            f"but {getattr(config, key)!r} here; they must match to carry "
                            "weights over")
    weights = Path(run_dir) / WEIGHTS_H5
    if not weights.is_file():
        raise InitError(f"--init {run_dir}: {weights} not found (the run never evaluated)")
    old = build_ssd(old_config.replace(input_size=config.input_size))
    old.load_weights(str(weights))
    rebuilt = []
    for layer in model.layers:
        if not layer.weights:
            continue
        source = old.get_layer(layer.name)
        if [w.shape for w in source.weights] == [w.shape for w in layer.weights]:
            layer.set_weights(source.get_weights())
        else:
            rebuilt.append(layer.name)
    return rebuilt


def initialise(model, source: InitSource, config: SSDConfig) -> str:
    """Apply ``source`` to a freshly built model; return a one-line description."""
    if source.kind == SCRATCH:
        return "random initialisation (--init scratch): expect poor accuracy on real data"
    if source.kind == "keras_h5":
        n = load_backbone_h5(model, source.path, config)
        return f"backbone from {source.path} ({n} layers)"
    rebuilt = load_from_run(model, source.path, config)
    if rebuilt:
        return f"weights from run {source.path}; rebuilt for the new classes: {', '.join(rebuilt)}"
    return f"all weights from run {source.path}"
