"""Which images move between train, val and test together: runs of video frames, or folders.

Frames next to each other in a video are near copies of one another. With one of them in train and
its neighbour in val, the val score measures how well the model remembers, early stopping and the
int8 parity check trust it, and the sorter disappoints on the belt. Datasets in this field are often
video frames (TrashCan's ``vid_000002_frame0000001.jpg``, ZeroWaste's ``01_frame_001440.PNG``, CVAT's
``frame_000123.PNG`` from a video task, a user's own conveyor recordings), so ``auto`` takes the
image entry's ``video_id`` and ``frame_id`` (as COCO-VID, TAO and MOT converters write them) or
recognises a file name that says ``frame`` and a number, and keeps runs of consecutive frames of one
video in one split: whole videos when there are enough of them, else each video cut into runs of at
least ``MIN_RUN`` frames so that there are about ``RUNS`` units to split. A Roboflow export made with
augmentation holds each training photo several times (``IMG_1_jpg.rf.<hash>.jpg``, flipped or
recoloured): ``auto`` keeps a photo's variants together too. Other images stay units of their own.
``folder`` makes every folder of ``file_name`` one unit (one recording session per folder); ``image``
splits image by image.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

SPLIT_BY = ("auto", "image", "folder")
RUNS = 40  # units to aim for when a few long videos are cut into runs of consecutive frames
# more files of one original name than an augmented export makes of one photo (usually 2-5): photos
# uploaded under one generic name (image.jpg from phones), not variants, so they are split one by one
MAX_VARIANTS = 20
MIN_RUN = 10  # frames in a run at least: a held-out run touches train at its two ends only
_FRAME_NAME = re.compile(r"^(?P<video>.*?)[ _.\-]*frames?[ _.\-]*(?P<number>\d+)$", re.IGNORECASE)
_FRAMES_FOLDER = re.compile(r"(^|[^a-z])frames?($|[^a-z])", re.IGNORECASE)
# Roboflow's frames of an uploaded video: "belt_mp4-12" ("belt.mp4", frame 12), before its _jpg.rf.<hash>
_VIDEO_FILE_FRAME = re.compile(r"^(?P<video>.+)_(?:mp4|mov|avi|mkv|webm|m4v|wmv|mpe?g|3gp)-(?P<number>\d+)$",
                               re.IGNORECASE)
_ROBOFLOW_NAME = re.compile(r"^(?P<stem>.+)_(?P<ext>jpe?g|png|bmp|webp|tiff?|heic)\.rf\.[0-9a-f]{8,}$",
                            re.IGNORECASE)


def roboflow_original(file_name: str) -> Optional[str]:
    """The photo a Roboflow export's file was made from, without case (``IMG_1_jpg.rf.<hash>.jpg``:
    ``img_1.jpg``), else None. An export with augmentation writes each training photo several
    times, flipped, rotated or recoloured, under one such name and different hashes."""
    match = _ROBOFLOW_NAME.match(PurePosixPath(file_name.replace("\\", "/")).stem)
    return f"{match['stem']}.{match['ext']}".casefold() if match else None


def video_frame(file_name: str) -> Optional[Tuple[str, int]]:
    """``(video, frame number)`` when ``file_name`` names a video frame (``vid_2_frame0001.jpg``,
    ``01_frame_001440.PNG``, ``clip3/frame_000123.png``, ``clip3_frames/000123.jpg``, Roboflow's
    ``belt_mp4-12_jpg.rf.<hash>.jpg`` for frame 12 of an uploaded ``belt.mp4``; a Roboflow
    ``_jpg.rf.<hash>`` suffix is ignored), else None. The video is the folder and what precedes
    ``frame`` (or the video's extension) in the name."""
    path = PurePosixPath(file_name.replace("\\", "/"))
    roboflow = _ROBOFLOW_NAME.match(path.stem)
    stem = roboflow["stem"] if roboflow else path.stem
    if stem.isdigit() and _FRAMES_FOLDER.search(path.parent.name):  # ffmpeg into clip1_frames/000123.jpg
        return str(path.parent), int(stem)
    match = _FRAME_NAME.match(stem) or _VIDEO_FILE_FRAME.match(stem)
    if match is None:
        return None
    return str(path.parent / match["video"]), int(match["number"])


Entry = Tuple[Any, ...]  # (image id, annotation file index, file_name[, (video, frame) from the JSON])


def _frame(entry: Entry) -> Optional[Tuple[str, int]]:
    """The entry's ``(video, frame)``: the JSON's ``video_id``/``frame_id`` when given, else from the name."""
    given = entry[3] if len(entry) > 3 else None
    return (f"video_id {given[0]}", given[1]) if given is not None else video_frame(entry[2])


@dataclass
class SplitUnits:
    """``unit_of`` maps an image id to the unit it moves with (ids not in it move alone)."""

    split_by: str
    unit_of: Dict[int, Hashable] = field(default_factory=dict)
    videos: int = 0  # videos recognised (auto)
    frames: int = 0  # images recognised as frames of them
    units: int = 0  # runs, videos or folders that hold them
    example: str = ""  # one recognised file_name, for the summary
    same_files: int = 0  # groups of entries whose files hold the same bytes, each kept in one split
    variants: int = 0  # images that are Roboflow variants (augmented copies) of a photo with others (auto)
    variant_photos: int = 0  # the photos they were made from, each kept in one split
    variant_example: str = ""
    generic_names: int = 0  # original names shared by more than MAX_VARIANTS images: split one by one

    def as_report(self) -> Dict[str, Any]:
        """The ``split_units`` entry of report.json."""
        return {"split_by": self.split_by, "videos": self.videos, "frames": self.frames, "units": self.units,
                "example": self.example, "same_files": self.same_files, "variants": self.variants,
                "variant_photos": self.variant_photos, "variant_example": self.variant_example,
                "generic_names": self.generic_names}

    def join(self, groups: Sequence[Sequence[int]]) -> None:
        """Keep each group of image ids (copies of one file) in one split, with the units its members
        are in (a copy that bridges two runs of frames joins them)."""
        for group in groups:
            joined = [self.unit_of[i] for i in group if i in self.unit_of]
            unit = joined[0] if joined else ("same file", group[0])
            for other in set(joined) - {unit}:
                for iid in [k for k, u in self.unit_of.items() if u == other]:
                    self.unit_of[iid] = unit
            for iid in group:
                self.unit_of[iid] = unit
        self.same_files = len(groups)


def summary_line(entry: Optional[Dict[str, Any]], near: Optional[Dict[str, Any]] = None) -> str:
    """One line for the build summary from report.json's ``split_units`` (and ``frames_next_to_train``),
    or "" when every image was split on its own."""
    if not entry:
        return ""
    if entry["split_by"] == "folder":
        return f"splits by folder: {entry['units']} folders, each in one split (--split-by folder)"
    variants = ""
    if entry.get("variant_photos"):
        variants = (f"note: {entry['variants']} images are Roboflow variants of {entry['variant_photos']} photos "
                    f"(augmented copies, file names like {entry['variant_example']!r}), each photo's variants kept in "
                    "one split")
    if entry.get("generic_names"):
        variants += ("\n" if variants else "") + (
            f"note: {entry['generic_names']} original {'name is' if entry['generic_names'] == 1 else 'names are'} "
            f"shared by more than {MAX_VARIANTS} Roboflow files each: photos uploaded under one name (image.jpg), "
            "not variants of one photo, so split one by one")
    if not entry["frames"]:
        return variants
    videos = f"{entry['videos']} {'video' if entry['videos'] == 1 else 'videos'}"
    kept = "whole videos" if entry["units"] == entry["videos"] else f"{entry['units']} runs of consecutive frames"
    touching = ""
    if near and near["held_out_frames"] and not near["next_to_train"]:
        touching = ": no val/test frame sits next to a training frame (a near copy)"
    elif near and near["held_out_frames"]:
        touching = (f": only {near['next_to_train']} of {near['held_out_frames']} val/test frames sit next to a "
                    "training frame (a near copy), where runs meet")
    return (f"note: {entry['frames']} images are frames of {videos} (file names like {entry['example']!r}), split "
            f"as {kept}, not frame by frame (--split-by image){touching}" + (f"\n{variants}" if variants else ""))


def _runs(frames: Dict[str, List[Tuple[int, int]]], runs: int) -> Dict[int, Hashable]:
    """Image id -> unit: whole videos when there are ``runs`` or more, else each video cut into runs
    of consecutive frames, about ``runs`` in all, in proportion to each video's length, and none
    shorter than ``MIN_RUN`` frames (a short video stays whole)."""
    total = sum(len(f) for f in frames.values())
    unit_of: Dict[int, Hashable] = {}
    for video, items in frames.items():  # each in frame order
        pieces = 1 if len(frames) >= runs else max(1, min(len(items) // MIN_RUN, round(runs * len(items) / total)))
        for k, (_, iid) in enumerate(items):
            unit_of[iid] = ("frames", video, k * pieces // len(items))
    return unit_of


def _videos(images: Sequence[Entry]) -> Tuple[Dict[str, List[Tuple[int, Any]]], Dict[Any, str]]:
    """``({video: [(frame number, image id)] in frame order}, {image id: file_name})`` for the entries
    that are video frames. A video is one across annotation files (a Roboflow export deals one video's
    frames to its train, valid and test files), unless a frame number comes in two of them: then each
    file's frames are a video of their own (a CVAT project names every task's frames frame_000000.PNG)."""
    found: Dict[str, List[Tuple[int, Any, Any]]] = {}  # video -> (frame number, image id, annotation file)
    names: Dict[Any, str] = {}
    for entry in images:
        frame = _frame(entry)
        if frame is not None:
            found.setdefault(frame[0], []).append((frame[1], entry[0], entry[1]))
            names[entry[0]] = entry[2]
    videos: Dict[str, List[Tuple[int, Any]]] = {}
    for video, items in found.items():
        files_of: Dict[int, set] = {}
        for number, _, source in items:
            files_of.setdefault(number, set()).add(source)
        apart = any(len(files) > 1 for files in files_of.values())
        for number, iid, source in items:
            videos.setdefault(f"{video} (annotation file {source + 1})" if apart else video, []).append((number, iid))
    for items in videos.values():
        items.sort()
    return videos, names


def split_units(images: Sequence[Entry], split_by: str, runs: int = RUNS) -> SplitUnits:
    """The units of ``images`` (``(image id, annotation file index, file_name[, (video, frame)])``)
    for ``split_by``."""
    if split_by not in SPLIT_BY:
        raise ValueError(f"--split-by must be one of {', '.join(SPLIT_BY)}, got {split_by!r}")
    result = SplitUnits(split_by)
    if split_by == "image":
        return result
    if split_by == "folder":
        result.unit_of = {iid: ("folder", source, str(PurePosixPath(name.replace("\\", "/")).parent))
                          for iid, source, name, *_ in images}
        result.units = len(set(result.unit_of.values()))
        return result
    frames, names = _videos(images)
    frames = {video: items for video, items in frames.items() if len(items) > 1}  # a lone frame moves alone
    if frames:
        result.example = names[next(iter(frames.values()))[0][1]]
        result.unit_of = _runs(frames, runs)
        result.videos, result.frames = len(frames), len(result.unit_of)
        result.units = len(set(result.unit_of.values()))
    variants: Dict[str, List[Entry]] = {}
    for entry in images:
        original = roboflow_original(entry[2]) if entry[0] not in result.unit_of else None
        if original is not None:
            variants.setdefault(original, []).append(entry)
    for original, entries in variants.items():
        if len(entries) > MAX_VARIANTS:
            result.generic_names += 1
        elif len(entries) > 1:  # augmented copies of one photo: one unit
            result.unit_of.update((entry[0], ("variants", original)) for entry in entries)
            result.variants += len(entries)
            result.variant_photos += 1
            result.variant_example = result.variant_example or entries[0][2]
    return result


def variants_across_splits(names: Sequence[Tuple[Any, str]], split_of: Dict[Any, str]) -> Dict[str, Any]:
    """How many photos have Roboflow variants (``names``: ``(id, file_name)``) in more than one split:
    a flipped or recoloured copy of a training photo in val/test inflates its score. A name on more
    than ``MAX_VARIANTS`` files is photos uploaded under one name, not variants."""
    splits: Dict[str, List[str]] = {}
    example: Dict[str, str] = {}
    for iid, name in names:
        original = roboflow_original(name)
        if original is not None and iid in split_of:
            splits.setdefault(original, []).append(split_of[iid])
            example.setdefault(original, name)
    shared = [original for original, found in splits.items() if len(set(found)) > 1 and len(found) <= MAX_VARIANTS]
    return {"photos": len(shared), "example": example[shared[0]] if shared else ""}


def frames_next_to_train(images: Sequence[Entry], split_of: Dict[Any, str]) -> Dict[str, Any]:
    """How many val/test video frames have a neighbouring frame of the same video in train: near copies
    that inflate held-out scores (a split made frame by frame, as a Roboflow export's is). Frames are
    matched by name across annotation files, since an export's train and valid files share videos."""
    videos, names = _videos([entry for entry in images if entry[0] in split_of])
    held = near = 0
    example = ""
    for items in videos.values():
        for k, (_, iid) in enumerate(items):
            if split_of[iid] == "train":
                continue
            held += 1
            if any(split_of[items[j][1]] == "train" for j in (k - 1, k + 1) if 0 <= j < len(items)):
                near += 1
                example = example or names[iid]
    return {"held_out_frames": held, "next_to_train": near, "example": example}


def variants_leak_message(found: Dict[str, Any], fix: str) -> str:
    """What ``variants_across_splits`` means for held-out scores, ending with ``fix`` when given."""
    photos = found["photos"]
    return (f"{photos} {'photo has' if photos == 1 else 'photos have'} Roboflow variants (augmented copies) in more "
            f"than one split (e.g. {found['example']!r}): val/test scores count flipped or recoloured copies of "
            "training photos" + (f"; {fix}" if fix else ""))


def frames_leak_message(near: Dict[str, Any], fix: str) -> str:
    """What ``frames_next_to_train`` means for held-out scores, ending with ``fix``."""
    return (f"{near['next_to_train']} of {near['held_out_frames']} val/test video frames sit next to a frame of the "
            f"same video in train (e.g. {near['example']!r}): near copies, so held-out scores are inflated; {fix}")


def split_frame_by_frame(near: Dict[str, Any]) -> bool:
    """Whether ``frames_next_to_train`` shows a split made frame by frame: half or more of the held-out
    frames beside a training one (runs of ``MIN_RUN`` frames or more touch train at two ends at most)."""
    return 2 * near.get("next_to_train", 0) >= near.get("held_out_frames", 0) > 0


def _digest(path: str, limit: Optional[int] = None) -> bytes:
    """BLAKE2b of the file's first ``limit`` bytes (all of it without one)."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        if limit is not None:
            h.update(f.read(limit))
        else:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.digest()


def identical_files(files: Mapping[int, Tuple[str, int]]) -> List[List[int]]:
    """Groups of image ids whose files (``{image id: (path, size in bytes)}``) hold the same bytes: a
    photo copied under two names, or one file named by two entries. Only files of equal size are read
    (their first 64 KiB, then all of those that still agree), so photos of distinct sizes cost nothing."""
    by_size: Dict[int, List[int]] = {}
    for iid, (_, size) in files.items():
        by_size.setdefault(size, []).append(iid)
    paths = {iid: path for iid, (path, _) in files.items()}
    groups: List[List[int]] = []
    for ids in by_size.values():
        candidates = [ids]
        for limit in (1 << 16, None):
            narrowed = []
            for members in candidates:
                if len(members) < 2:
                    continue
                by_digest: Dict[bytes, List[int]] = {}
                for iid in members:
                    try:
                        by_digest.setdefault(_digest(paths[iid], limit), []).append(iid)
                    except OSError:  # unreadable: its conversion says why
                        continue
                narrowed += [m for m in by_digest.values() if len(m) > 1]
            candidates = narrowed
        groups += candidates
    return sorted(sorted(g) for g in groups)
