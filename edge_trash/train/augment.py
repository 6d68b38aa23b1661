"""Bbox-safe, seeded training augmentation (albumentations), configured by named YAML presets.

The presets live in ``augment_presets.yaml`` beside this module (``none``, ``light``,
``default``, ``strong``, ``trashnet``). :class:`AugmentConfig` is the typed form of one
preset; :meth:`AugmentConfig.validate` rejects a bad value naming its key (and the YAML
line when it came from a file). :class:`Augmenter` applies a config to one image:
same seed in, same image and boxes out, whatever thread or process runs it.

Boxes are ``[ymin, xmin, ymax, xmax]`` normalized to [0, 1] (the TFRecord layout);
albumentations works on ``[xmin, ymin, xmax, ymax]`` internally. Every output image is
``size x size`` (a plain stretch, like the device's resize of a camera frame).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

PRESETS_FILE = Path(__file__).with_name("augment_presets.yaml")
DEFAULT_PRESET = "default"


@dataclass(frozen=True)
class AffineConfig:
    """Shift, scale (zoom in/out) and rotate. ``translate`` is a fraction of the side."""

    p: float = 0.0
    translate: float = 0.0
    scale: Tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0


@dataclass(frozen=True)
class CropConfig:
    """Bbox-safe random crop zoomed to the input size (keeps every box)."""

    p: float = 0.0
    erosion: float = 0.0


@dataclass(frozen=True)
class ColorConfig:
    """Colour jitter: +- fractions of brightness, contrast, saturation; hue shift in [0, 0.5]."""

    p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0


@dataclass(frozen=True)
class DarkConfig:
    """Random gamma ``>= 1`` to darken (dark scenes)."""

    p: float = 0.0
    gamma: Tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True)
class BlurConfig:
    """Gaussian or motion blur with an odd kernel up to ``max_kernel``."""

    p: float = 0.0
    max_kernel: int = 3


@dataclass(frozen=True)
class BoxesConfig:
    """What happens to boxes pushed out of the image (albumentations ``BboxParams``)."""

    min_visibility: float = 0.0
    min_area: float = 0.0


_SECTIONS = {
    "affine": AffineConfig, "crop": CropConfig, "color": ColorConfig,
    "dark": DarkConfig, "blur": BlurConfig, "boxes": BoxesConfig,
}


@dataclass(frozen=True)
class AugmentConfig:
    """One augmentation preset. All transforms off by default (the ``none`` preset)."""

    name: str = "none"
    flip_horizontal: float = 0.0
    flip_vertical: float = 0.0
    affine: AffineConfig = field(default_factory=AffineConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    color: ColorConfig = field(default_factory=ColorConfig)
    dark: DarkConfig = field(default_factory=DarkConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    boxes: BoxesConfig = field(default_factory=BoxesConfig)
    # Where the preset came from, for error messages: file and line of each key.
    source: str = field(default="", compare=False, repr=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_identity(self) -> bool:
        """True when no transform can fire (only the resize to the input size happens)."""
        return not any([self.flip_horizontal, self.flip_vertical, self.affine.p, self.crop.p,
                        self.color.p, self.dark.p, self.blur.p])

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict in the YAML layout (for config.json)."""
        out: Dict[str, Any] = {"name": self.name, "flip_horizontal": self.flip_horizontal,
                               "flip_vertical": self.flip_vertical}
        for key in _SECTIONS:
            section = dataclasses.asdict(getattr(self, key))
            out[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "custom", source: str = "",
                  lines: Optional[Mapping[str, int]] = None) -> "AugmentConfig":
        """Build and validate a config from the YAML layout; unknown keys are errors."""
        lines = dict(lines or {})
        where = _Where(name, source, lines)
        if not isinstance(data, Mapping):
            raise ValueError(where.msg("", f"expected a mapping of transforms, got {data!r}"))
        kwargs: Dict[str, Any] = {"name": str(data.get("name", name))}
        for key, value in data.items():
            if key == "name":
                continue
            if key in ("flip_horizontal", "flip_vertical"):
                kwargs[key] = _number(value, key, where)
            elif key in _SECTIONS:
                kwargs[key] = _section(_SECTIONS[key], value, key, where)
            else:
                valid = ["flip_horizontal", "flip_vertical", *_SECTIONS]
                raise ValueError(where.msg(key, f"unknown key, expected one of {valid}"))
        return cls(source=source, lines=lines, **kwargs).validate()

    def validate(self) -> "AugmentConfig":
        """Raise ``ValueError`` naming the first bad key (preset, file:line); return self."""
        w = _Where(self.name, self.source, dict(self.lines))
        for key in ("flip_horizontal", "flip_vertical", "affine.p", "crop.p", "color.p",
                    "dark.p", "blur.p", "boxes.min_visibility"):
            _check(w, key, self._get(key), 0.0, 1.0, "a probability in [0, 1]")
        _check(w, "affine.translate", self.affine.translate, 0.0, 0.5, "a fraction in [0, 0.5]")
        _check(w, "affine.rotate", self.affine.rotate, 0.0, 45.0, "degrees in [0, 45]")
        lo, hi = self.affine.scale
        if not (0.1 <= lo <= hi <= 4.0):
            raise ValueError(w.msg("affine.scale", f"got [{lo}, {hi}], expected [lo, hi] with "
                                   "0.1 <= lo <= hi <= 4"))
        _check(w, "crop.erosion", self.crop.erosion, 0.0, 0.99, "a fraction in [0, 1)")
        for key in ("brightness", "contrast", "saturation"):
            _check(w, f"color.{key}", getattr(self.color, key), 0.0, 1.0, "a fraction in [0, 1]")
        _check(w, "color.hue", self.color.hue, 0.0, 0.5, "a hue shift in [0, 0.5]")
        glo, ghi = self.dark.gamma
        if not (0.1 <= glo <= ghi <= 5.0):
            raise ValueError(w.msg("dark.gamma", f"got [{glo}, {ghi}], expected [lo, hi] with "
                                   "0.1 <= lo <= hi <= 5 (> 1 darkens)"))
        k = self.blur.max_kernel
        if int(k) != k or k < 3 or k % 2 == 0 or k > 31:
            raise ValueError(w.msg("blur.max_kernel", f"got {k}, expected an odd integer 3..31"))
        if float(self.boxes.min_area) < 0:
            raise ValueError(w.msg("boxes.min_area", f"got {self.boxes.min_area}, expected "
                                   "pixels >= 0"))
        return self

    def _get(self, dotted: str) -> Any:
        obj: Any = self
        for part in dotted.split("."):
            obj = getattr(obj, part)
        return obj


class _Where:
    """Formats 'FILE:LINE: augment preset NAME, key K: ...' messages."""

    def __init__(self, name: str, source: str, lines: Dict[str, int]) -> None:
        self.name, self.source, self.lines = name, source, lines

    def msg(self, key: str, text: str) -> str:
        prefix = ""
        if self.source:
            line = self.lines.get(key) or self.lines.get(key.split(".")[0]) or self.lines.get("")
            prefix = f"{self.source}:{line}: " if line else f"{self.source}: "
        target = f", key {key!r}" if key else ""
        return f"{prefix}augment preset {self.name!r}{target}: {text}"


def _number(value: Any, key: str, where: _Where) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(where.msg(key, f"got {value!r}, expected a number"))
    return float(value)


def _section(cls: type, value: Any, key: str, where: _Where) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(where.msg(key, f"got {value!r}, expected a mapping like "
                                   f"{{{', '.join(f.name for f in dataclasses.fields(cls))}}}"))
    kwargs: Dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for sub, raw in value.items():
        dotted = f"{key}.{sub}"
        if sub not in fields:
            raise ValueError(where.msg(dotted, f"unknown key, expected one of {list(fields)}"))
        default = fields[sub].default
        if isinstance(default, tuple):
            if not isinstance(raw, (list, tuple)) or len(raw) != 2:
                raise ValueError(where.msg(dotted, f"got {raw!r}, expected a pair [lo, hi]"))
            kwargs[sub] = (_number(raw[0], dotted, where), _number(raw[1], dotted, where))
        elif isinstance(default, int) and not isinstance(default, bool):
            number = _number(raw, dotted, where)
            if number != int(number):
                raise ValueError(where.msg(dotted, f"got {raw!r}, expected an integer"))
            kwargs[sub] = int(number)
        else:
            kwargs[sub] = _number(raw, dotted, where)
    return cls(**kwargs)


def _check(where: _Where, key: str, value: float, lo: float, hi: float, expected: str) -> None:
    if not lo <= float(value) <= hi:
        raise ValueError(where.msg(key, f"got {value}, expected {expected}"))


def _key_lines(text: str) -> Dict[str, Dict[str, int]]:
    """Line (1-based) of each preset and each key in it: {preset: {"": l, "a": l, "a.b": l}}."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    out: Dict[str, Dict[str, int]] = {}
    if not isinstance(root, yaml.MappingNode):
        return out
    for key_node, value_node in root.value:
        lines = {"": key_node.start_mark.line + 1}
        if isinstance(value_node, yaml.MappingNode):
            for k, v in value_node.value:
                lines[str(k.value)] = k.start_mark.line + 1
                if isinstance(v, yaml.MappingNode):
                    for k2, _ in v.value:
                        lines[f"{k.value}.{k2.value}"] = k2.start_mark.line + 1
        out[str(key_node.value)] = lines
    return out


def load_presets(path: Optional[Path] = None) -> Dict[str, AugmentConfig]:
    """Every preset in a presets YAML (default: the packaged one), validated."""
    import yaml

    path = Path(path) if path is not None else PRESETS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read augmentation presets ({exc})") from exc
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a mapping of preset names to transforms")
    return {str(name): AugmentConfig.from_dict(body or {}, name=str(name), source=str(path),
                                               lines=lines.get(str(name), {}))
            for name, body in data.items()}


def get_augment_config(spec: str) -> AugmentConfig:
    """Resolve ``NAME`` (a packaged preset), ``FILE.yaml:NAME`` or ``FILE.yaml`` (one preset)."""
    presets = load_presets()
    if spec in presets:
        return presets[spec]
    path, _, name = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not path.endswith((".yaml", ".yml")):
        raise ValueError(f"augment: unknown preset {spec!r}; expected one of {sorted(presets)} "
                         "or FILE.yaml[:NAME]")
    user = load_presets(Path(path))
    if name:
        if name not in user:
            raise ValueError(f"{path}: no preset {name!r}; it defines {sorted(user)}")
        return user[name]
    if len(user) != 1:
        raise ValueError(f"{path}: defines {sorted(user)}; pick one with {path}:NAME")
    return next(iter(user.values()))


def stretch_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``size x size`` (bilinear, aspect not kept): as training's augmentation,
    evaluate, the export's calibration and the device's ``Preprocessor`` (stretch) resize."""
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)


def _build_compose(config: AugmentConfig, size: int) -> Any:
    import albumentations as A
    import cv2

    steps: List[Any] = []
    resize = A.Resize(height=size, width=size, interpolation=cv2.INTER_LINEAR, p=1.0)
    if config.crop.p > 0:
        # Crops at full resolution and zooms to size x size; when it does not fire, resize does.
        steps.append(A.RandomSizedBBoxSafeCrop(height=size, width=size,
                                               erosion_rate=config.crop.erosion, p=config.crop.p))
    steps.append(resize)
    if config.flip_horizontal:
        steps.append(A.HorizontalFlip(p=config.flip_horizontal))
    if config.flip_vertical:
        steps.append(A.VerticalFlip(p=config.flip_vertical))
    if config.affine.p:
        a = config.affine
        steps.append(A.Affine(translate_percent=(-a.translate, a.translate), scale=a.scale,
                              rotate=(-a.rotate, a.rotate), border_mode=cv2.BORDER_CONSTANT,
                              fill=114, p=a.p))
    if config.color.p:
        c = config.color
        steps.append(A.ColorJitter(brightness=(1 - c.brightness, 1 + c.brightness),
                                   contrast=(1 - c.contrast, 1 + c.contrast),
                                   saturation=(1 - c.saturation, 1 + c.saturation),
                                   hue=(-c.hue, c.hue), p=c.p))
    if config.dark.p:
        lo, hi = config.dark.gamma
        steps.append(A.RandomGamma(gamma_limit=(lo * 100, hi * 100), p=config.dark.p))
    if config.blur.p:
        k = config.blur.max_kernel
        steps.append(A.OneOf([A.GaussianBlur(blur_limit=(3, k), p=1.0),
                              A.MotionBlur(blur_limit=(3, k), p=1.0)], p=config.blur.p))
    bbox_params = A.BboxParams(format="albumentations", label_fields=["class_ids"],
                               min_visibility=config.boxes.min_visibility,
                               min_area=config.boxes.min_area, clip=True,
                               filter_invalid_bboxes=True)
    return A.Compose(steps, bbox_params=bbox_params, seed=0)


def _reseed(compose: Any, seed: int) -> None:
    """Point every transform at ONE fresh random stream seeded with ``seed``.

    albumentations' ``set_random_seed`` hands every child its own generator with the SAME
    seed, so two transforms with p=0.5 would always fire together. A shared stream makes the
    transforms draw one after another: independent, and reproducible for a seed.
    """
    import random

    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))


class Augmenter:
    """Applies one :class:`AugmentConfig` at output ``size``; thread-safe and seeded per call."""

    def __init__(self, config: AugmentConfig, size: int) -> None:
        config.validate()
        if size < 1:
            raise ValueError(f"input_size: got {size}, expected >= 1")
        self.config = config
        self.size = int(size)
        self._local = threading.local()

    def _compose(self) -> Any:
        compose = getattr(self._local, "compose", None)
        if compose is None:
            compose = self._local.compose = _build_compose(self.config, self.size)
        return compose

    def __call__(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
                 seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Augment one sample; returns (uint8 [S,S,3], float32 [K',4] yxyx, int32 [K']).

        The input arrays are not modified. Same inputs and seed give the same outputs.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        classes = np.asarray(classes, dtype=np.int32).reshape(-1)
        if self.config.is_identity:
            return (stretch_resize(image, self.size), np.clip(boxes, 0.0, 1.0),
                    classes.copy())
        compose = self._compose()
        _reseed(compose, int(seed) % (2**32))
        out = compose(image=image, bboxes=boxes[:, [1, 0, 3, 2]], class_ids=classes)
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]
        out_classes = np.asarray(out["class_ids"], dtype=np.int32).reshape(-1)
        out_image = out["image"]
        if out_image.shape[:2] != (self.size, self.size):  # never expected; keeps the contract
            out_image = stretch_resize(out_image, self.size)
        return np.ascontiguousarray(out_image, dtype=np.uint8), out_boxes, out_classes
