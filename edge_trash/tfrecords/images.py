"""Decode one source image into the JPEG a record stores (runs in worker processes).

Order of work: read the header, check the size against the JSON and the pixel
limit, let the JPEG decoder downscale while decoding (``draft``: 1/2, 1/4 or 1/8,
much faster on 8 MP photos), apply the EXIF orientation, convert the colour mode to
RGB, shrink (area averaging) so the long side is at most ``max_size``, convert the
colours to sRGB when an RGB, RGBA or palette file embeds another colour profile
(iPhones tag their photos Display P3, cameras Adobe RGB), and encode as JPEG. A
baseline or progressive JPEG that needs none of this is stored byte for byte.

Pillow itself orients a TIFF by its Orientation tag as it loads it (and, since Pillow
11, reports the upright size at open); every other format is oriented here.

The stored JPEG has no colour profile: its pixels are sRGB, what ``tf.io.decode_jpeg``
and the device's camera pipeline assume. Left unconverted, a Display P3 photo's red
reads as a duller red, so the model would learn colours the camera never shows it.

JSON ``width``/``height`` are the displayed size. The output image always shows the
frame the annotations were drawn on, so boxes normalised by the JSON size stay valid.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageFile, JpegImagePlugin, TiffImagePlugin, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is skipped, never half-grey


def _register_heif() -> bool:
    """Let Pillow open HEIC/HEIF photos (iPhone's default) when pillow-heif is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()  # libheif applies the rotation and resets the EXIF orientation to 1
    return True


HEIF_SUPPORTED = _register_heif()
EXIF_ORIENTATION = 0x0112
ROTATES_90 = (5, 6, 7, 8)  # orientations that swap width and height
ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}  # stored pixels -> displayed picture
UNORIENT = {**ORIENT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}  # displayed -> stored
# Start-of-frame markers of the JPEGs stored unchanged: baseline, extended and progressive Huffman-coded DCT,
# which every JPEG reader decodes. TensorFlow cannot decode lossless JPEG (SOF3); those are re-encoded.
PASS_THROUGH_SOF = (0xC0, 0xC1, 0xC2)
ASPECT_TOLERANCE = 0.01
# HEIF-family brands in an ISO-BMFF 'ftyp' box (iPhone and recent Android photos).
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif")
# --max-pixels' default (build-tfrecords and analyze): a 100 MP drone mosaic passes, a bomb does not.
DEFAULT_MAX_PIXELS = 150_000_000


@dataclass(frozen=True)
class ImageJob:
    """What a worker needs to convert one image."""

    image_id: int
    path: str
    json_width: int
    json_height: int
    max_size: int = 640
    max_pixels: int = DEFAULT_MAX_PIXELS
    quality: int = 90


@dataclass
class ImageResult:
    """A converted image, or the reason it was skipped."""

    image_id: int
    jpeg: Optional[bytes] = None
    width: int = 0
    height: int = 0
    reason: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.jpeg is not None


HEAD_BYTES = 64  # what unidentified_reason needs of a file's start


def unidentified_reason(path: "str | Path", head: bytes) -> str:
    """Why Pillow recognised no image format in a file (``head``: its first bytes), with the
    fix where there is one: HEIC without its plug-in, a Git LFS pointer, a saved web page."""
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        if HEIF_SUPPORTED:
            return f"corrupt or unsupported HEIC/HEIF file (pillow-heif cannot read it): {path}"
        return (f"HEIC/HEIF photo, which Pillow cannot decode without a plug-in: {path}; pip install "
                "pillow-heif (edge-trash then reads it; Python >= 3.10) or convert it to JPEG")
    if head.startswith(b"version https://git-lfs"):
        return (f"a Git LFS pointer, not the picture: {path}; run 'git lfs pull' in the dataset's repository "
                "(cloned without Git LFS, or with GIT_LFS_SKIP_SMUDGE)")
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"{", b"<head")):
        what = "a JSON document" if start.startswith(b"{") else "a web page (HTML/XML)"
        return (f"{what}, not a picture: {path}; probably a failed download (an error or login page saved "
                "under the image's name): download it again")
    return f"not an image Pillow can decode: {path}"


def incomplete_jpeg_reason(path: "str | Path", data: bytes) -> str:
    """Why the JPEG ``data`` of ``path`` is an unfinished download ("" when it is not one): it ends in a run of
    zero bytes with no end-of-image marker before them, as a download into a file sized in advance (aria2, a
    torrent, a sync tool) leaves it. Pillow decodes such a file without a word, the missing part grey or garbage,
    so the boxes there would be trained on it. A complete JPEG ends in its marker (zeros after it are harmless)."""
    if not data.startswith(b"\xff\xd8"):
        return ""
    body = data.rstrip(b"\0")
    zeros = len(data) - len(body)
    if zeros < 64 or body.endswith(b"\xff\xd9"):
        return ""
    scan = body.find(b"\xff\xda")  # the first scan; an end marker after it ends the JPEG, whatever is appended
    if scan >= 0 and body.find(b"\xff\xd9", scan) >= 0:  # (a Motion Photo's video, say, that ends in zeros)
        return ""
    return (f"incomplete download: {path} ends in {zeros:,} zero bytes ({100.0 * zeros / len(data):.0f}% of the "
            "file) where the rest of the JPEG should be, so part of the picture would be grey; download it again")


def truncated_reason(path: "str | Path", exc: BaseException) -> str:
    """Why Pillow could not decode ``path`` (cut short or damaged), with the fix."""
    return (f"truncated or corrupt image data: {path}: {exc}; download or copy it again (open it in an image "
            "viewer to see the damage)")


def missing_file_reason(path: "str | Path") -> str:
    """Why a file cannot be found: missing, a symbolic link whose target is not there
    (git-annex and DVC keep datasets as links to content fetched separately), or links
    that lead round in a loop."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            via = f" (it points to {os.readlink(path)})" if os.path.islink(path) else ""
            return (f"symbolic link loop: {path}{via} leads through links back to itself, never to a file; "
                    "point the link at the picture")
    except ValueError:  # a NUL in the name
        pass
    if os.path.islink(path):
        target = os.readlink(path)
        store = (" (a git-annex file whose content is not here: run 'git annex get')" if ".git/annex/" in target
                 else " (a DVC or git-annex dataset not fetched? run 'dvc pull' or 'git annex get')")
        return f"broken symbolic link: {path} points to {target}, which does not exist{store}"
    return f"file not found: {path}"


def file_reason(path: "str | Path") -> str:
    """Why ``path`` cannot be read as a picture, from one ``stat``: missing, a link loop, not a
    regular file (a named pipe would block the reader forever), unreadable or empty; "" if it can."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return missing_file_reason(path)
    except OSError as exc:
        return missing_file_reason(path) if exc.errno == errno.ELOOP else f"cannot read {path}: {exc.strerror or exc}"
    except ValueError:  # a NUL in the name: no file can have it
        return f"file not found: {path!r} (its name holds a NUL character)"
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(info.st_mode)
                else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device")
        return f"not a regular file but {kind}: {path}; put the picture file there"
    if info.st_size == 0:
        return f"empty file (0 bytes): {path}; download or copy it again"
    return ""


@contextmanager
def pillow_pixel_limit(max_pixels: Optional[int]) -> Iterator[None]:
    """Within, Pillow's own decompression-bomb limit refuses nothing ``max_pixels`` allows.

    Pillow refuses more than 2 * ``Image.MAX_IMAGE_PIXELS`` (178,956,970) pixels by itself,
    before ``--max-pixels`` is checked; its limit is raised to fit ``max_pixels`` (it still
    stops a GIF frame that grows the canvas past it), never lowered. None lifts it, for
    reading a header whose size the caller checks. Its warning is silenced.
    """
    saved = Image.MAX_IMAGE_PIXELS
    if max_pixels is None or saved is None:
        Image.MAX_IMAGE_PIXELS = None
    else:
        Image.MAX_IMAGE_PIXELS = max(saved, -(-max_pixels // 2))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def bomb_reason(size: Tuple[int, int], max_pixels: int) -> str:
    """Why an image of ``size`` (width, height) is refused under ``--max-pixels``, or ""."""
    width, height = size
    if width * height <= max_pixels:
        return ""
    return (f"refused as a decompression bomb: {width}x{height} = {width * height:,} pixels, "
            f"more than --max-pixels {max_pixels:,}")


def _stored_size(img: Image.Image, orientation: int) -> Tuple[int, int]:
    """The size of the pixels as stored: Pillow (11 and later) reports the upright size of a
    TIFF its Orientation tag turns a quarter; the TIFF's own width and length tags keep the stored one."""
    if isinstance(img, TiffImagePlugin.TiffImageFile) and orientation in ROTATES_90:
        return img.tag_v2[TiffImagePlugin.IMAGEWIDTH], img.tag_v2[TiffImagePlugin.IMAGELENGTH]
    return img.size


def _sof_marker(data: bytes) -> Optional[int]:
    """The start-of-frame marker (0xC0..0xCF, which says how a JPEG is coded) found by walking
    the segment headers of JPEG ``data``; None when there is none before the scan."""
    at = 2  # after SOI
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # DHT, JPG and DAC are not frames
            return marker
        elif marker in (0xD9, 0xDA):  # end of image, start of scan
            return None
        else:
            at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None


def _exif_orientation(img: Image.Image, notes: List[str]) -> int:
    """The EXIF orientation 1..8 (1 when absent, unreadable or invalid, with a note). The EXIF block's alone:
    Pillow also takes an XMP ``tiff:Orientation`` when EXIF has none, which browsers (and so the web annotation
    tools that drew the boxes) ignore."""
    xmp = {key: img.info.pop(key) for key in ("xmp", "XML:com.adobe.xmp") if key in img.info}
    try:
        orientation = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a broken EXIF block must not cost the image
        notes.append("unreadable EXIF block ignored")
        return 1
    finally:
        img.info.update(xmp)
    if orientation not in range(1, 9):
        notes.append(f"invalid EXIF orientation {orientation} ignored")
        return 1
    return orientation


NO_EXIF_TURN = "and the file has no EXIF rotation"  # in the reason for a file its JSON size turned a quarter turn
MISMATCH_FIX = "fix width/height in the annotation file or the image"  # a size and aspect ratio unlike the JSON's


def match_json_size(stored: Tuple[int, int], orientation: int, json_size: Tuple[int, int]
                    ) -> Tuple[bool, str, str]:
    """How a file's pixels relate to the size its JSON entry gives: ``(apply_exif, note, reason)``.

    ``reason`` is set when the image cannot be used (different size and aspect ratio);
    ``note`` says what was done otherwise when the sizes differ: the EXIF rotation
    ignored because the JSON describes the stored pixels, or boxes scaled to a
    same-aspect image.
    """
    displayed = (stored[1], stored[0]) if orientation in ROTATES_90 else stored
    if displayed == json_size:
        return True, "", ""
    jw, jh = json_size
    if stored == json_size and orientation in ROTATES_90:
        return False, (f"JSON size {jw}x{jh} matches the stored pixels, not the EXIF-rotated picture: EXIF "
                       f"orientation {orientation} ignored"), ""
    if _same_aspect(displayed, json_size):
        return True, (f"decoded {displayed[0]}x{displayed[1]} but JSON says {jw}x{jh} (same aspect ratio): boxes "
                      "scaled to the decoded image"), ""
    if orientation in ROTATES_90 and _same_aspect(stored, json_size):
        return False, (f"decoded {stored[0]}x{stored[1]} (stored) but JSON says {jw}x{jh} (same aspect ratio as "
                       f"the stored pixels): EXIF orientation {orientation} ignored, boxes scaled"), ""
    if orientation not in ROTATES_90 and _same_aspect((displayed[1], displayed[0]), json_size):
        return True, "", (f"decoded size {displayed[0]}x{displayed[1]} is the JSON size {jw}x{jh} turned a quarter "
                          f"turn, {NO_EXIF_TURN}: it was probably annotated while its EXIF tag "
                          "turned it, and the tag was lost when the file was re-saved or stripped; which way it "
                          "turned cannot be told from the pixels: use the original photo, or rotate this one "
                          f"upright to {jw}x{jh}")
    return True, "", (f"decoded size {displayed[0]}x{displayed[1]} does not match the JSON size {jw}x{jh} (nor "
                      f"its aspect ratio): {MISMATCH_FIX}")


def read_size_and_orientation(path: "str | Path | BinaryIO"
                              ) -> Tuple[Optional[Tuple[Tuple[int, int], int]], str]:
    """``((stored_size, exif_orientation), "")`` from the header alone (of a file, or of
    bytes already read), or ``(None, reason)``. Pillow's pixel limit does not apply:
    ``--max-pixels`` is checked when the image is converted."""
    if isinstance(path, (str, os.PathLike)):
        reason = file_reason(path)
        if reason:
            return None, reason
    try:
        with pillow_pixel_limit(None), Image.open(path) as img:
            orientation = _exif_orientation(img, [])
            return (_stored_size(img, orientation), orientation), ""
    except FileNotFoundError:
        return None, missing_file_reason(path)
    except UnidentifiedImageError:
        if not isinstance(path, (str, os.PathLike)):
            return None, "not an image Pillow can decode"
        with open(path, "rb") as fh:
            return None, unidentified_reason(path, fh.read(HEAD_BYTES))
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"cannot open {path}: {exc}"


def read_displayed_size(path: "str | Path") -> Tuple[Optional[Tuple[int, int]], str]:
    """``((width, height), "")`` of the picture as displayed (EXIF rotation applied), read
    from the header alone; ``(None, reason)`` when the file cannot be opened."""
    found, reason = read_size_and_orientation(path)
    if found is None:
        return None, reason
    stored, orientation = found
    return ((stored[1], stored[0]) if orientation in ROTATES_90 else stored), ""


def _same_aspect(a: Tuple[int, int], b: Tuple[int, int]) -> bool:
    return abs(a[0] * b[1] - a[1] * b[0]) <= ASPECT_TOLERANCE * a[0] * b[1]


_SRGB_NAMES = ("srgb", "iec61966-2.1", "iec 61966-2.1", "iec61966-2-1")
_transforms: Dict[Tuple[bytes, str], Tuple[Optional[Any], str]] = {}  # per worker: one build per profile


def colour_transform(icc: bytes, mode: str) -> Tuple[Optional[Any], str]:
    """``(transform, note)`` for an image of ``mode`` that embeds the profile ``icc``.

    ``transform`` (an ``ImageCms`` transform to sRGB) is None when the profile is
    sRGB already or cannot be used; the note then says why (empty for sRGB).
    Transforms are cached per profile, so a dataset shot on one phone builds one.
    """
    key = (icc, mode)
    if key not in _transforms:
        _transforms[key] = _build_colour_transform(icc, mode)
    return _transforms[key]


def _build_colour_transform(icc: bytes, mode: str) -> Tuple[Optional[Any], str]:
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without littlecms
        return None, "embedded colour profile ignored: this Pillow has no ImageCms (littlecms)"
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        name = (ImageCms.getProfileDescription(profile) or "").strip() or "unnamed"
    except (OSError, ImageCms.PyCMSError) as exc:
        return None, f"embedded colour profile is unreadable ({exc}); colours used as sRGB"
    if any(tag in name.lower() for tag in _SRGB_NAMES):
        return None, ""
    try:
        transform = ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), mode, "RGB",
                                            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except ImageCms.PyCMSError as exc:
        return None, f"embedded colour profile '{name}' does not fit a {mode} image ({exc}); colours used as sRGB"
    return transform, f"converted colours from the embedded profile '{name}' to sRGB"


NARROW_16_BIT = 1 / 8  # 16-bit values spanning less of 0-65535 than this are stretched from their own range


def _value_range(mode: str, largest: float) -> float:
    """The top of the range a 16-bit, 32-bit or floating-point image's values live in:
    1 for floating-point images in 0-1, else 255, 65535 or, beyond that, the largest value."""
    if mode == "F" and largest <= 1.0:
        return 1.0
    if largest <= 255 and not mode.startswith("I;16"):
        return 255.0
    return 65535.0 if largest <= 65535 else largest


def to_rgb(img: Image.Image, notes: List[str]) -> Image.Image:
    """``img`` as 8-bit RGB: 16-bit, 32-bit and floating-point values scaled from their range,
    transparency flattened onto grey; what was done is appended to ``notes``."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        top = _value_range(mode, high)
        if mode != "F" and top == 65535.0 and 0 < high - low < top * NARROW_16_BIT:
            # 12-bit sensor data (0-4095) or thermal counts (7000-9000): scaled from 0-65535 they
            # would be stored nearly black or flat grey; their own range keeps their contrast
            arr = np.clip((arr - low) * (255.0 / (high - low)), 0, 255).astype(np.uint8)
            notes.append(f"stretched {mode} values {low:g}-{high:g} to 8-bit RGB 0-255: they use "
                         f"{(high - low) / top:.1%} of 0-65535 (12-bit sensor or thermal data?), which scaled as "
                         "16 bits would be nearly flat")
            return Image.fromarray(arr).convert("RGB")
        arr = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        notes.append(f"converted {mode} (values 0-{top:g}) to 8-bit RGB")
        return Image.fromarray(arr).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        notes.append("converted palette image to RGB")
        if img.mode == "RGB":
            return img
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        notes.append(f"flattened {mode} transparency onto grey")
        return Image.alpha_composite(background, rgba).convert("RGB")
    notes.append(f"converted {mode} to RGB")
    return img.convert("RGB")


def convert_image(job: ImageJob) -> ImageResult:
    """Convert one image; never raises for a bad file (the reason is in the result)."""
    with pillow_pixel_limit(job.max_pixels):  # --max-pixels rules, not Pillow's own limit
        return _convert(job)


def _convert(job: ImageJob) -> ImageResult:
    result = ImageResult(job.image_id)
    path = Path(job.path)
    result.reason = file_reason(path)  # never open a named pipe: it would block
    if result.reason:
        return result
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        result.reason = incomplete_jpeg_reason(path, data)
        if result.reason:
            return result
        with pillow_pixel_limit(None):  # the header only: the check below refuses with --max-pixels
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        result.reason = unidentified_reason(path, data[:HEAD_BYTES])
        return result
    except OSError as exc:
        result.reason = f"cannot open {path}: {exc}"
        return result

    result.reason = bomb_reason(img.size, job.max_pixels)
    if result.reason:
        return result
    try:  # counting a TIFF's or GIF's frames reads their headers, which may be damaged
        frames = getattr(img, "n_frames", 1)
    except Exception:  # noqa: BLE001 - the first frame is what is used either way
        frames = 1
        try:
            img.seek(0)
        except Exception:  # noqa: BLE001 - decoding then reports the damage
            pass
    if frames > 1 and img.format != "MPO":  # an MPO's second frame is the phone's depth map or preview
        result.notes.append(f"{frames} frames (an animation or multi-page file): the first was used")
    orientation = _exif_orientation(img, result.notes)
    stored = _stored_size(img, orientation)
    displayed = (stored[1], stored[0]) if orientation in ROTATES_90 else stored
    json_size = (job.json_width, job.json_height)

    apply_exif, note, reason = match_json_size(stored, orientation, json_size)
    if reason:
        result.reason = reason
        return result
    if note:
        result.notes.append(note)
    if orientation != 1 and apply_exif:
        result.notes.append(f"applied EXIF orientation {orientation}")

    frame = displayed if apply_exif else stored  # the size, in the annotation frame, before shrinking
    scale = min(1.0, job.max_size / max(frame))
    out_size = (max(1, round(frame[0] * scale)), max(1, round(frame[1] * scale)))
    rotate = apply_exif and orientation in ROTATES_90

    transform, colour_note = None, ""
    icc = img.info.get("icc_profile")
    if icc and img.mode in ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA"):  # RGB values, or a palette of them
        transform, colour_note = colour_transform(icc, "RGB")  # applied after to_rgb
        if colour_note:
            result.notes.append(colour_note)
    unchanged = (img.format == "JPEG" and img.mode == "RGB" and out_size == frame
                 and (orientation == 1 or not apply_exif) and transform is None
                 and _sof_marker(data) in PASS_THROUGH_SOF)
    if unchanged:
        try:
            img.load()  # detect truncation before trusting the bytes
        except (OSError, SyntaxError, ValueError) as exc:
            result.reason = truncated_reason(path, exc)
            return result
        result.jpeg, (result.width, result.height) = data, out_size
        return result
    try:
        # isinstance, not format == "JPEG": phone photos with a depth map or a second
        # frame open as MPO, a JPEG subclass whose decoder scales just the same.
        if isinstance(img, JpegImagePlugin.JpegImageFile) and out_size != frame:
            img.draft(None, (out_size[1], out_size[0]) if rotate else out_size)
        img.load()
    except Image.DecompressionBombError as exc:  # not an OSError; the header passed, so hardly ever
        result.reason = f"refused as a decompression bomb: {path}, more than --max-pixels {job.max_pixels:,} ({exc})"
        return result
    except (OSError, SyntaxError, ValueError) as exc:
        result.reason = truncated_reason(path, exc)
        return result
    oriented = isinstance(img, TiffImagePlugin.TiffImageFile)  # Pillow turned a TIFF upright as it loaded it
    if orientation != 1 and apply_exif != oriented:
        img = img.transpose(ORIENT[orientation] if apply_exif else UNORIENT[orientation])
    img = to_rgb(img, result.notes)
    if img.size != out_size:
        # Area averaging (OpenCV's INTER_AREA): anti-aliased at any shrink factor, and 30%
        # faster than Pillow's BILINEAR on what the decoder's 1/2..1/8 scaling leaves.
        img = img.resize(out_size, Image.Resampling.BOX)
    if transform is not None:  # after the shrink: the fewest pixels to transform
        from PIL import ImageCms

        img = ImageCms.applyTransform(img, transform)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=job.quality)
    result.jpeg, (result.width, result.height) = buf.getvalue(), out_size
    return result
