"""Find the file an annotation's ``file_name`` means, the way real exports write it.

COCO files from other machines name their images in ways a plain ``images_dir /
file_name`` misses: Windows separators (``batch_1\\000006.jpg``), absolute paths from
the annotator's disk (``/home/ann/TACO/data/batch_1/000006.jpg``), a folder that is
already part of ``--images`` (``images/0001.jpg`` with ``--images data/images``), a
different case (``.JPG``), URL escapes (``my%20photo.jpg``, from web annotation tools),
URLs (``https://host/images/a.jpg?raw=true``, ``s3://bucket/a.jpg``, Label Studio's
``/data/local-files/?d=photos/a.jpg``), blanks around the name, accented letters in the
other Unicode form (``café.jpg`` typed on Linux or Windows is NFC; the same name
unpacked from a macOS archive is NFD, ``e`` plus a combining accent: the two look alike
and compare unequal) or, on disk, in a legacy encoding (a zip made on Windows stores
``café`` in cp437 or cp1252, and ``unzip`` writes those bytes, which are not UTF-8).
:class:`ImagePaths` tries, in order: the name as given; then each shorter tail of its
path (longest first, so ``batch_1/000006.jpg`` is preferred to a bare ``000006.jpg`` and
two sub-folders holding the same file name stay apart), each candidate exactly, then
ignoring case, Unicode form and legacy encoding; then the same for the URL-unescaped
name and for the path a URL holds. Last, a name found nowhere is looked up in every
sub-folder (linked folders followed, each once): a bare file name (a flat export's
``file_name`` with the photos still in ``batch_1/``, ``batch_2/``...) by its name, a
name with folders by its innermost folder and name (``batch_1/000006.jpg`` when
``--images`` is the dataset folder above ``images/batch_1/``), preferring the files that
match the most of its folders. It is used when exactly one file matches, otherwise the
note lists the candidates. A name with a folder is never matched to a file of that name
in another folder. Last of all, a name an annotation tool gave the upload (Label
Studio's ``cb0618f6-IMG_1.jpg``, Roboflow's ``IMG_1_jpg.rf.<hash>.jpg``) is looked up
under the photo's original name, for users who kept the originals and exported only the
JSON; then the one image file beside it of that name with another image extension
(``.HEIC`` photos converted to ``.jpg`` after annotation, or a file_name written without
an extension), in that folder only, so a mask of the same name elsewhere never stands
in. The first file found wins, with a note saying how it was found. A name with folders reads a file of its
bare name at the top of the images folder only when no other file has that name, and an absolute or ``../``
path that exists is read where it points unless a copy with its folder and name is under the images folder.
Over a whole annotation file, :func:`other_photos_of_one_name` then leaves out what such searches found that is
surely another photo (one another entry names, one in a folder the file names for other photos).
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from edge_trash.tfrecords.name_encodings import disk_spelling, legacy_spellings, not_utf8, utf8_text
from edge_trash.tfrecords.split_names import ANNOTATION_FOLDERS, split_in_name, split_of_path

_DRIVE = re.compile(r"^[A-Za-z]:$")
_ABSOLUTE = re.compile(r"^([/\\]|[A-Za-z]:[/\\])")  # a path from the root: /home/..., C:\...
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY = re.compile(r"^([^?]*\.[A-Za-z0-9]{2,5})\?.*$", re.DOTALL)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif", ".gif",
                  ".mpo")
TREE_INDEX_LIMIT = 500_000  # files indexed by name under --images (a mistaken --images / stops there)


# Names annotation tools give uploaded photos, as (pattern, tool); the groups joined by "."
# are the original name.
_EXPORT_RENAMES = (
    # 8 hex digits, not a date ('20230115-IMG_0001.jpg' is a camera's or a person's name, not an upload's)
    (re.compile(r"^(?!(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])-)[0-9a-f]{8}-(.+)$"),
     "Label Studio (it prefixes uploads with 8 hex digits and '-')"),
    (re.compile(r"^(.+)_([A-Za-z0-9]{2,5})\.rf\.[0-9a-f]{32}\.\w+$"),
     "Roboflow (it renames 'NAME.EXT' to 'NAME_EXT.rf.<hash>.jpg')"),
)


_PHOTO_ONLY = (".jpg", ".jpeg", ".jpe", ".heic", ".heif")  # formats a camera writes, never a label mask


MASK_LEVELS = 64  # a one-channel picture of this many values or fewer is a label mask (class ids), not a photo


def _label_mask(path: Path) -> bool:
    """Whether ``path`` is a segmentation mask or a depth map kept beside a photo under its name, not the photo
    converted to another format: not a JPEG (masks are never stored lossy), one channel, and 16-bit or float
    (depth) or of at most :data:`MASK_LEVELS` values (class ids; a grey X-ray or thermal photo has more)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG" or img.mode not in ("1", "L", "P", "I", "F") and not img.mode.startswith("I;"):
                return False
            if img.mode not in ("1", "L", "P"):
                return True
            colors = img.getcolors(MASK_LEVELS)  # None past that many
            return colors is not None
    except Exception:  # unreadable: the build says why when it reads it
        return False


def _upload_folder(folders: Sequence[str]) -> bool:
    """Whether ``folders`` are an annotation tool's (Label Studio's upload folder ``data/upload/3``,
    ``media/upload/3``, or the ``images`` folder of its COCO export), which say nothing of where the user keeps
    the photo."""
    return (any(f.casefold() in ("upload", "uploads") for f in folders[-2:])
            or folders[-1].casefold() in ("images", "media"))


def _loose(name: str) -> str:
    """``name`` compared without case or Unicode form (NFC and NFD spellings match), its UTF-8 bytes read as
    text where a legacy locale lists them escaped (``LC_ALL=C`` without UTF-8 mode)."""
    return unicodedata.normalize("NFC", utf8_text(name)).casefold()


def _parts(file_name: str) -> List[str]:
    """The path components of ``file_name``, with either separator and no drive or dots."""
    parts = [p for p in file_name.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and _DRIVE.match(parts[0]):
        parts = parts[1:]
    return parts


# Phrases of resolve()'s notes on a name it would not read, each with the kind the build's summary counts
# ("file not found (its name is in several sub-folders)"): the notes are written with these, so they match.
_SEVERAL = "write the sub-folder into file_name, or give --images as the folder it is relative to"
_OTHER_SPLIT = "in another split's folder, while this annotation file is for"
_CASE_TIE = "differ from it only in case or Unicode form"
_ANOTHER_PHOTO = "probably another photo of the same name"
NOT_FOUND_WHY = ((_SEVERAL, "its name is in several sub-folders"), (_OTHER_SPLIT, "only in another split's folder"),
                 (_CASE_TIE, "several files differ from it only in case"),
                 (_ANOTHER_PHOTO, "only another photo of that name"))


class _Tied(Exception):
    """A name found only ignoring case or Unicode form where several files match it so (``IMG_1.jpg`` and
    ``img_1.jpg`` for ``Img_1.jpg``): which one it means is unknowable. ``args[0]``: their relative paths."""
_SEVERAL_NOTE = re.compile(r"^\d+ files under the images folder (?:have its name|end in '[^']*') \((.*)\): "
                           + re.escape(_SEVERAL) + "$")


def folders_of_several(note: Optional[str]) -> List[str]:
    """The sub-folders of the images folder (``JPEGImages``, ``DepthImages``) that :meth:`ImagePaths.resolve`'s
    note names when a file's name is in several of them (the file then not read); [] for any other note."""
    found = _SEVERAL_NOTE.match(note or "")
    if not found:
        return []
    return list(dict.fromkeys(posixpath.dirname(rel) for rel in re.findall(r"'([^']+)'", found.group(1))))


# folders of masks, labels or depth maps that datasets keep beside their photos under the same names
_MASK_FOLDER = re.compile(r"^(sem[_-]?seg\w*|masks?|\w*segmentation\w*|seg|gt|ground[_-]?truth|annotations?|labels?|"
                          r"depths?|depth[_-]?(images?|maps?)|instance[_-]?ids?|panoptic\w*)$", re.IGNORECASE)


def _in_mask_folder(rel: str) -> bool:
    """Whether a file found by name sits in a folder of masks (``train/sem_seg/01_frame_0001.PNG``)."""
    return any(_MASK_FOLDER.match(folder) for folder in rel.split("/")[:-1])


def _in_split(candidates: List[str], split: Optional[str], folder_splits: set) -> Tuple[List[str], List[str]]:
    """``(usable, elsewhere)``: of files found by name in sub-folders, those in a folder of the
    annotation file's ``split`` when any is (``train/1.jpg`` for ``instances_train.json``, not
    ``val/1.jpg``), else those in no split's folder; ``elsewhere``: the ones left out for being in
    another split's folder (datasets that number each split from 1 reuse names across splits).
    Only when some sub-folder is named for ``split`` (``folder_splits``): a ``test.json`` beside
    photos in ``training_images/`` alone is not a dataset split into folders."""
    if split is None or split not in folder_splits:
        return candidates, []
    same = [c for c in candidates if split_of_path(c) == split]
    if same:
        return same, []
    return ([c for c in candidates if split_of_path(c) is None],
            [c for c in candidates if split_of_path(c) is not None])


def _cleaned(file_name: str) -> str:
    """``file_name`` as a path: URL-unescaped, without surrounding blanks, and for a URL its
    path alone (``https://host/images/a.jpg?raw=true`` and ``s3://bucket/images/a.jpg`` are
    ``images/a.jpg`` below a folder; Label Studio's local storage ``/data/local-files/?d=``
    names the file in its ``d`` parameter)."""
    if "?d=" in file_name:
        return unquote(file_name.split("?d=", 1)[1].split("&", 1)[0]).strip()
    name = file_name.strip()
    if _URL.match(name):
        try:
            path = urlsplit(name).path
        except ValueError:  # a malformed host ("http://[x/a.jpg"): what follows is still a path
            path = name.split("://", 1)[1].split("?", 1)[0]
        return unquote(path).strip()
    name = unquote(file_name).strip()
    query = _QUERY.match(name)  # a URL's path and query without its host ('photos/a.jpg?raw=1')
    return query.group(1) if query else name


class ImagePaths:
    """Resolves ``file_name`` entries under one images folder (folder listings are cached)."""

    def __init__(self, images_dir: "str | Path") -> None:
        self.images_dir = Path(images_dir)
        self._listings: Dict[Path, Optional[Dict[str, str]]] = {}
        self._ties: Dict[Path, Dict[str, List[str]]] = {}  # folder -> loose name -> its real names, when several
        self._stems: Dict[Path, Dict[str, List[str]]] = {}  # folder -> loose stem -> image file names
        self._by_name: Optional[Dict[str, List[str]]] = None  # loose file name -> relative paths
        # (loose file name, loose folder it is in) -> relative paths: a name many folders share (each video's
        # 000001.jpg) is looked up with its folder, not compared with every file of that name
        self._by_tail: Dict[Tuple[str, str], List[str]] = {}
        self._loose_parts: Dict[str, List[str]] = {}  # relative path -> its loose parts, innermost first
        self._index_complete = True
        self._folder_splits: set = set()  # the splits sub-folders name (val2017/: val), from the index
        self.under_original_name: set = set()  # file_names read under the name before a tool renamed the upload
        # the images folder's own name, loosely: 'images/0001.jpg' with --images data/images names it
        self._own_name = _loose(os.path.basename(os.path.abspath(self.images_dir)))

    def _name_index(self) -> Dict[str, List[str]]:
        """Every file under the images folder by its loose name (built on the first miss)."""
        if self._by_name is None:
            self._by_name, count = {}, 0
            seen_dirs = set()  # (device, inode): linked folders are followed, each once (a link loop ends)
            for folder, dirs, files in os.walk(self.images_dir, followlinks=True):
                try:
                    st = os.stat(folder)
                except OSError:
                    dirs[:] = []
                    continue
                if (st.st_dev, st.st_ino) in seen_dirs:
                    dirs[:] = []
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                dirs.sort()
                rel = Path(folder).relative_to(self.images_dir)
                self._folder_splits.add(split_of_path(f"{rel.as_posix()}/-"))
                for name in sorted(files):
                    for spelling in [name] + legacy_spellings(name):
                        path = (rel / name).as_posix()
                        self._by_name.setdefault(_loose(spelling), []).append(path)
                        if rel.parts:
                            self._by_tail.setdefault((_loose(spelling), _loose(rel.parts[-1])), []).append(path)
                    count += 1
                if count >= TREE_INDEX_LIMIT:
                    self._index_complete = False
                    break
        return self._by_name

    def _loose_listing(self, folder: Path) -> Optional[Dict[str, str]]:
        if folder not in self._listings:
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                self._listings[folder] = None
            else:
                listing: Dict[str, str] = {}
                spellings: Dict[str, List[str]] = {}
                for name in names:
                    listing.setdefault(_loose(name), name)
                    spellings.setdefault(_loose(name), []).append(name)
                self._ties[folder] = {key: real for key, real in spellings.items() if len(real) > 1}
                for name in names:  # after every real name, so none of those is shadowed
                    for spelling in legacy_spellings(name):
                        listing.setdefault(_loose(spelling), name)
                self._listings[folder] = listing
        return self._listings[folder]

    def _find(self, parts: List[str], folder_wanted: bool = False) -> Optional[Path]:
        """The file (or with ``folder_wanted`` the folder) ``parts`` names under the images
        folder, exactly or else ignoring case, Unicode form and legacy encoding."""
        def right_kind(p: Path) -> bool:
            return p.is_dir() if folder_wanted else p.is_file()

        path = self.images_dir.joinpath(*parts)
        if right_kind(path):
            return path
        folder = self.images_dir
        for i, part in enumerate(parts):  # one level at a time
            exact = folder / part
            if (exact.is_dir() if i < len(parts) - 1 else right_kind(exact)):
                folder = exact
                continue
            listing = self._loose_listing(folder)
            if listing is None or _loose(part) not in listing:
                return None
            tied = self._ties[folder].get(_loose(part))
            if tied:
                raise _Tied([(folder / name).relative_to(self.images_dir).as_posix() for name in tied])
            folder = folder / listing[_loose(part)]
        return folder if right_kind(folder) else None

    def _bare_name_stands_for(self, parts: List[str]) -> bool:
        """Whether a file directly under the images folder named like ``parts``' last, a name with folders not
        found with them, may be read for it: when its innermost folder is the images folder itself
        (``images/0001.jpg`` with ``--images data/images``), or no other file under the images folder has its
        name (with ``batch_2/000001.jpg`` there too, the top-level ``000001.jpg`` may be either)."""
        if _loose(parts[-2]) == self._own_name:
            return True
        return len(set(self._name_index().get(_loose(parts[-1]), []))) <= 1

    def _deeper(self, parts: List[str]) -> List[str]:
        """Files anywhere under the images folder that end in ``parts``' file name and,
        when ``parts`` has folders, in at least its innermost folder: those ending in the
        most of ``parts`` (ignoring case and Unicode form)."""
        want = [_loose(p) for p in reversed(parts)]
        best, found = 0, []
        index = self._name_index()
        for rel in index.get(want[0], []) if len(want) == 1 else self._by_tail.get((want[0], want[1]), []):
            have = self._loose_parts.get(rel)
            if have is None:
                have = self._loose_parts[rel] = [_loose(p) for p in reversed(rel.split("/"))]
            n = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
            if n < min(len(want), 2) or n < best:
                continue
            if n > best:
                best, found = n, []
            found.append(rel)
        return found

    def _flattened(self, file_name: str, parts: List[str]) -> Optional[Tuple[Path, str]]:
        """``batch_1/000006.jpg`` as the one file named ``batch_1_000006.jpg`` (a copy of the dataset with
        its folders flattened into the names, as Kaggle re-uploads of TACO have it), with the note."""
        if len(parts) < 2:
            return None
        flat = self._deeper(["_".join(parts)])
        if len(flat) != 1:
            return None
        return self.images_dir / flat[0], (f"file_name {file_name!r} not found as given; read {flat[0]!r}, its "
                                           "folders joined to its name with '_' (a copy with flattened folders)")

    def _image_stems(self, folder: Path, listing: Dict[str, str]) -> Dict[str, List[str]]:
        """The image files of ``folder`` by their loose name without the extension (cached)."""
        if folder not in self._stems:
            stems: Dict[str, List[str]] = {}
            for key, name in listing.items():
                stem, dot, suffix = key.rpartition(".")
                if dot and "." + suffix in IMAGE_SUFFIXES and name not in stems.get(stem, []):
                    stems.setdefault(stem, []).append(name)
            self._stems[folder] = stems
        return self._stems[folder]

    def _other_extension(self, file_name: str, parts: List[str]) -> Optional[Tuple[Path, str]]:
        """The one image file beside where ``parts`` points, with its name and another image
        extension (``.HEIC`` photos converted to ``.jpg``, ``.png`` to ``.jpg`` after annotation,
        or a file_name written without one), with the note. Only in that folder: a mask or a
        preview of the same name elsewhere (``masks/IMG_1.png``) must never stand in for it."""
        last = _loose(parts[-1])
        stem, dot, suffix = last.rpartition(".")
        if not dot or "." + suffix not in IMAGE_SUFFIXES:
            stem = last  # no extension, or a dot that is part of the name
        for start in range(len(parts)):  # the folder as given, then each shorter tail of it that keeps its folder
            if start and start == len(parts) - 1 and _loose(parts[-2]) != self._own_name:
                index = self._name_index()  # 'batch_1/1.jpg' is not the images folder's '1.png' while 'b/1.png' is
                if sum(len(set(index.get(stem + suffix, []))) for suffix in IMAGE_SUFFIXES) > 1:
                    break
            folder = self._find(parts[start:-1], folder_wanted=True) if parts[start:-1] else self.images_dir
            listing = self._loose_listing(folder) if folder is not None else None
            if not listing:
                continue
            found = [f for f in self._image_stems(folder, listing).get(stem, []) if _loose(f) != last]
            if len(found) == 1 and (folder / found[0]).is_file():
                used = (folder / found[0]).relative_to(self.images_dir).as_posix()
                if last.endswith(_PHOTO_ONLY) and _label_mask(folder / found[0]):
                    return self.images_dir / file_name, (
                        f"the only image file beside it with that name, {used!r}, is a label mask or depth map (one "
                        "channel, few values or 16-bit), not the photo: not read in its place")
                return folder / found[0], (f"file_name {file_name!r} not found as given; read {used!r}, the only "
                                           "image file beside it with that name and another extension "
                                           "(converted after annotation?)")
            if found:
                return None  # IMG_1.jpg and IMG_1.png both there: which one is unknowable
        return None

    def _before_export_rename(self, file_name: str, parts: List[str]) -> Optional[Tuple[Path, str]]:
        """The photo under the name it had before an annotation tool renamed it (Label Studio's
        ``cb0618f6-IMG_1.jpg``, Roboflow's ``IMG_1_jpg.rf.<32 hex>.jpg``), when exactly one file
        under the images folder has that name; with the note saying so."""
        for pattern, tool in _EXPORT_RENAMES:
            match = pattern.match(parts[-1])
            if match is None:
                continue
            original = ".".join(g for g in match.groups() if g)
            found = self._find(parts[:-1] + [original])
            # a name with folders of its own ('day2/...') is looked for in a folder of that name; one in the tool's
            # upload folder ('/data/upload/3/...', whose folders are the tool's) or with none, anywhere
            own = parts[:-1] if parts[:-1] and not _upload_folder(parts[:-1]) else []
            rel = ([found.relative_to(self.images_dir).as_posix()] if found is not None
                   else self._deeper(own[-1:] + [original]))
            if len(rel) == 1:
                self.under_original_name.add(file_name)
                return self.images_dir / rel[0], (f"file_name {file_name!r} not found as given; read {rel[0]!r}, "
                                                  f"its name before {tool} renamed it")
            if rel:
                shown = ", ".join(repr(r) for r in rel[:4]) + (", ..." if len(rel) > 4 else "")
                return self.images_dir / file_name, (
                    f"{len(rel)} files under the images folder have the name {original!r} it had before {tool} "
                    f"renamed it ({shown}): give --images as the folder of the right one")
        return None

    def folder_above(self, file_name: str, path: Path) -> Optional[Path]:
        """The folder ``file_name`` is relative to, when ``path`` (where it was found) is
        that name one or more folders below the images folder (an ``--images`` given too
        high); None otherwise."""
        file_name = disk_spelling(file_name)  # as resolve looked it up
        try:
            rel = path.relative_to(self.images_dir).parts
        except ValueError:
            return None
        parts = _parts(file_name)
        if not parts or len(rel) <= len(parts):
            return None
        if [_loose(p) for p in rel[-len(parts):]] != [_loose(p) for p in parts]:
            return None
        return self.images_dir.joinpath(*rel[:-len(parts)])

    def spelled_by_name(self, file_name: str, path: Path) -> Optional[str]:
        """The last components of ``path`` (where ``file_name`` was found) that spell ``file_name``, joined by
        ``/`` as they are on disk, when ``file_name`` is a relative path (no root, drive, URL or ``..``) whose
        every component matches them, case and Unicode form aside; None otherwise. The same whether
        ``--images`` is the folder ``file_name`` is relative to, one above it or one inside it."""
        name = disk_spelling(file_name)
        if name.startswith(("/", "\\")) or "://" in name or _DRIVE.match(name.replace("\\", "/").split("/")[0]):
            return None
        parts = _parts(name)
        if not parts or ".." in parts:
            return None
        tail = Path(os.path.abspath(path)).parts[-len(parts):]
        if len(tail) < len(parts) or [_loose(p) for p in tail] != [_loose(p) for p in parts]:
            return None
        return "/".join(tail)

    def resolve(self, file_name: str, split: Optional[str] = None) -> Tuple[Path, Optional[str]]:
        """:meth:`find`, where a folder that cannot be entered or a name too long for the file
        system gives the plain path, whose reading then says why, not an error for the whole run."""
        name = disk_spelling(file_name)
        try:
            return self.find(name, split)
        except (OSError, ValueError):  # PermissionError, ENAMETOOLONG; ValueError: a NUL, an unencodable name
            return self.images_dir / name, None

    def find(self, file_name: str, split: Optional[str] = None) -> Tuple[Path, Optional[str]]:
        """:meth:`_find_file`, where a name that only case or Unicode form tells from several files is not read
        (which one it means is unknowable: a guess could read another photo under its boxes), with a note naming
        them."""
        try:
            return self._find_file(file_name, split)
        except _Tied as tie:
            shown = ", ".join(repr(utf8_text(t)) for t in tie.args[0][:4]) + (", ..." if len(tie.args[0]) > 4 else "")
            return self.images_dir / file_name, (
                f"{len(tie.args[0])} files under the images folder {_CASE_TIE} ({shown}): which one it means is "
                "unknowable; write file_name as that file's exact name, or rename the other")

    def _find_file(self, file_name: str, split: Optional[str] = None) -> Tuple[Path, Optional[str]]:
        """``(path, note)``: the file to read and, when it was not ``images_dir/file_name``
        itself, a note saying what was used. A file found nowhere returns the plain path
        (reading it then reports "file not found") and a note only when it helps (several
        files of that name in sub-folders). ``split``: what the annotation file's name says
        (``instances_val2017.json``); a name searched for in sub-folders is then read from
        that split's folder, and never from another split's, unless ``file_name``'s own folder
        names that split (LVIS val's ``train2017/...``)."""
        direct = self.images_dir / file_name
        # a broken link: the name is right, its content is not here; a named pipe: the name is right, not its kind
        if direct.is_file() or direct.is_symlink() or (direct.exists() and not direct.is_dir()):
            if not self._outside(file_name, direct):
                return direct, None
            # an absolute path or one up out of the folder: a copy under --images, the folder given, comes first
            # when it has the name and innermost folder too (not merely a file of its name: another photo)
            found, note = self._search(file_name, split)
            if found != direct and found.is_file():
                if not any(_matched_less(file_name, found)):
                    return found, note
                used = found.relative_to(self.images_dir).as_posix()
                return direct, (f"file_name {utf8_text(file_name)!r} read where it points, outside the images "
                                f"folder; {utf8_text(used)!r} under it has its name: if that copy is meant, write "
                                "its path into file_name")
            return direct, None
        return self._search(file_name, split)

    def _outside(self, file_name: str, direct: Path) -> bool:
        """Whether ``direct``, the path ``file_name`` gives under the images folder, is outside it (an absolute
        path, or one with ``..``)."""
        if not (os.path.isabs(file_name) or ".." in _parts(file_name)):
            return False
        top = os.path.abspath(self.images_dir)
        return os.path.commonpath([os.path.abspath(direct), top]) != top

    def _search(self, file_name: str, split: Optional[str]) -> Tuple[Path, Optional[str]]:
        """:meth:`_find_file` for a name not found as given."""
        direct = self.images_dir / file_name
        cleaned = _cleaned(file_name)
        shared_name: List[str] = []  # the files of its bare name, when several made the bare name stand for none
        for name in dict.fromkeys((file_name, unquote(file_name), cleaned)):  # each spelling once, in order
            parts = _parts(name)
            for start in range(len(parts)):
                if ".." in parts[start:]:
                    continue
                if start == len(parts) - 1 and start and not self._bare_name_stands_for(parts):
                    top = self._find(parts[-1:])  # read before as the top-level file of its name: say why not now
                    if top is not None and not shared_name:
                        shared_name = [top.relative_to(self.images_dir).as_posix()] + sorted(
                            set(self._name_index().get(_loose(parts[-1]), [])) - {
                                top.relative_to(self.images_dir).as_posix()})
                    continue
                found = self._find(parts[start:])
                if found is not None:
                    used = found.relative_to(self.images_dir).as_posix()
                    form = ""
                    if not_utf8(used):
                        form = (" (its name on disk is not UTF-8 but a legacy encoding such as cp437 or cp1252, "
                                "as zips made on Windows store names; 'unzip -O cp437' or convmv renames such files)")
                    elif any(unicodedata.normalize("NFC", t) != t for t in map(utf8_text, (used, file_name))):
                        form = " (the same letters, one of them in Unicode NFD form as macOS writes names)"
                    return found, (f"file_name {utf8_text(file_name)!r} not found as given; read {utf8_text(used)!r}"
                                   f"{form} under the images folder")
        parts = _parts(cleaned)
        if not parts:
            return direct, None
        everywhere = self._deeper(parts)
        literal = _parts(file_name.strip())
        if not everywhere and literal and literal != parts:  # a name kept with its '%20' on disk, as wget saves it
            found = self._deeper(literal)
            if found:
                parts, everywhere = literal, found
        if not everywhere and len(parts) > 1 and _ABSOLUTE.match(cleaned):
            # another machine's absolute path ('/home/someone/data/a0.jpg'): its folders say nothing here
            parts = parts[-1:]
            everywhere = self._deeper(parts)
        # a file_name whose own folder names a split (LVIS val's 'train2017/...') is read from that split's folder
        named = split_of_path("/".join(parts)) if len(parts) > 1 else None
        candidates, elsewhere = _in_split(everywhere, named or split, self._folder_splits)
        if len(candidates) == 1 and len(everywhere) > 1:
            return self.images_dir / candidates[0], (
                f"file_name {file_name!r} not found as given; read {candidates[0]!r}, of the "
                f"{len(everywhere)} files of that name under the images folder the one in the folder of "
                + (f"the split its file_name names ({named})" if named else f"this annotation file's split ({split})"))
        if len(candidates) == 1:
            if len(parts) == 1:
                how = "the only file of that name under the images folder"
            else:  # its innermost folder and name (at least) matched, deeper down
                how = (f"the only file under the images folder whose path ends in {'/'.join(parts[-2:])!r}: "
                       "--images is probably a folder above the one file_name is relative to")
            return self.images_dir / candidates[0], (f"file_name {file_name!r} not found as given; read "
                                                     f"{candidates[0]!r}, {how}")
        if elsewhere and not candidates:
            shown = ", ".join(repr(c) for c in elsewhere[:4]) + (", ..." if len(elsewhere) > 4 else "")
            which = "the only file" if len(elsewhere) == 1 else f"all {len(elsewhere)} files"
            return direct, (f"{which} of that name under the images folder ({shown}) "
                            f"{'is' if len(elsewhere) == 1 else 'are'} {_OTHER_SPLIT} {split}: probably another "
                            "photo of the same name (datasets that number each split from 1 reuse names); if it is "
                            "this one, write its sub-folder into file_name")
        if not candidates:
            renamed = (self._before_export_rename(file_name, parts) or self._other_extension(file_name, parts)
                       or self._flattened(file_name, parts))
            if renamed is not None:
                return renamed
        pictures = [c for c in candidates if not _in_mask_folder(c)]
        if len(candidates) > 1 and len(pictures) == 1:  # ZeroWaste: train/data/x.PNG and its mask train/sem_seg/x.PNG
            others = ", ".join(repr(c) for c in candidates if c != pictures[0])
            return self.images_dir / pictures[0], (
                f"file_name {file_name!r} not found as given; read {pictures[0]!r}, the one file of that name under "
                f"the images folder outside a mask folder (not {others})")
        if candidates:
            shown = ", ".join(repr(c) for c in candidates[:4]) + (", ..." if len(candidates) > 4 else "")
            what = "have its name" if len(parts) == 1 else f"end in {'/'.join(parts[-2:])!r}"
            return direct, f"{len(candidates)} files under the images folder {what} ({shown}): {_SEVERAL}"
        if shared_name:
            shown = ", ".join(repr(utf8_text(c)) for c in shared_name[1:4]) + (", ..." if len(shared_name) > 4 else "")
            return direct, (f"{utf8_text(shared_name[0])!r} at the top of the images folder has its name, and so "
                            f"{'does' if len(shared_name) == 2 else 'do'} {shown}: which one it means is unknowable; "
                            "write its path into file_name")
        if not self._index_complete:
            return direct, (f"only the first {TREE_INDEX_LIMIT:,} files under the images folder were searched "
                            "by name: is --images the dataset's folder?")
        return direct, None


class SourceImages:
    """The images of one annotation file: its folder's :class:`ImagePaths` and the split its
    name or folder says (``instances_val2017.json``: val), which :meth:`resolve` passes on."""

    def __init__(self, paths: ImagePaths, split: Optional[str]) -> None:
        self.paths, self.split = paths, split

    def resolve(self, file_name: str) -> Tuple[Path, Optional[str]]:
        """:meth:`ImagePaths.resolve` with this file's split."""
        return self.paths.resolve(file_name, self.split)

    def folder_above(self, file_name: str, path: Path) -> Optional[Path]:
        """:meth:`ImagePaths.folder_above`."""
        return self.paths.folder_above(file_name, path)

    def spelled_by_name(self, file_name: str, path: Path) -> Optional[str]:
        """:meth:`ImagePaths.spelled_by_name`."""
        return self.paths.spelled_by_name(file_name, path)

    def found_under_original_name(self, file_name: str) -> bool:
        """Whether :meth:`resolve` read ``file_name``'s photo under the name it had before an annotation
        tool renamed the upload (so the entry may describe an edited copy of it)."""
        return disk_spelling(file_name) in self.paths.under_original_name  # as resolve stored it


def _matched_less(file_name: str, path: Path) -> Tuple[bool, bool]:
    """``(other name, other folder)``: whether ``path``, found for ``file_name``, has another name (the one before
    an upload's rename, another extension, flattened folders) and whether it is in a folder other than the
    innermost one ``file_name`` names (a name with a folder found by its name alone)."""
    name = disk_spelling(file_name)
    given = [_parts(n) for n in (name, _cleaned(name))]
    spellings = {_loose(n) for n in [path.name] + legacy_spellings(path.name)}
    other_name = not any(parts and _loose(parts[-1]) in spellings for parts in given)
    folder = _loose(path.parent.name)
    other_folder = all(len(parts) > 1 and _loose(parts[-2]) != folder for parts in given)
    return other_name, other_folder


def other_photos_of_one_name(images: Sequence[Any], located: Mapping[int, Tuple[Path, Optional[str]]],
                             paths: Sequence[SourceImages]) -> Dict[int, str]:
    """``{image id: why it is not read}`` for entries (``id``, ``file_name``, ``source``) that :meth:`SourceImages.
    resolve` (``located``) found only by a search matching less than their path says (in another folder, or under
    another name), where the file found is surely another photo: one another entry reaches by its own name and
    folder, or one in a folder the annotation files name for other photos (TACO numbers each ``batch_N/`` from 1:
    with ``batch_1/`` missing, ``batch_2/000006.jpg`` is the photo of the entry that names it, not of
    ``batch_1/000006.jpg``). Reading it would train one photo under another's boxes."""
    folders_named = set()
    for im in images:
        parts = _parts(_cleaned(disk_spelling(im.file_name)))
        if len(parts) > 1:
            folders_named.add(_loose(parts[-2]))
    owner: Dict[Path, Any] = {}  # a file -> the first entry that reaches it by its own name and folder
    weak = []
    for im in images:
        path, note = located[im.id]
        other_name, other_folder = _matched_less(im.file_name, path) if note is not None else (False, False)
        if other_name or other_folder:
            weak.append((im, path, other_folder))
        else:
            owner.setdefault(path, im)
    why: Dict[int, str] = {}
    # entries naming several folders that reach one file by its name alone ('train/0001.jpg' and 'val/0001.jpg',
    # the photos kept flat): at most one of them is right, and which cannot be told
    reached: Dict[Path, List[Any]] = {}
    for im, path, other_folder in weak:
        if other_folder:
            reached.setdefault(path, []).append(im)
    for path, ims in reached.items():
        folders = {_loose(_parts(_cleaned(disk_spelling(im.file_name)))[-2]) for im in ims}
        if len(folders) > 1 and path not in owner:
            names = ", ".join(repr(utf8_text(im.file_name)) for im in ims[:3]) + (", ..." if len(ims) > 3 else "")
            for im in ims:
                images_dir = paths[im.source].paths.images_dir
                why[im.id] = (f"file not found: {images_dir / disk_spelling(im.file_name)}; {len(ims)} entries in "
                              f"{len(folders)} folders ({names}) reach only {utf8_text(path.name)!r}, the one file "
                              f"of their name: at most one is that photo, {_ANOTHER_PHOTO} for the rest; write "
                              "each one's path into its file_name")
    for im, path, other_folder in weak:
        if im.id in why or not path.is_file():
            continue
        images_dir = paths[im.source].paths.images_dir
        try:
            rel = path.relative_to(images_dir).as_posix()
        except ValueError:
            rel = str(path)
        first = owner.get(path)
        if first is not None:
            whose = f"is the photo of image {first.id} ({utf8_text(first.file_name)!r})"
            twice = " (or this photo listed twice: then join its boxes to that entry)"
        elif other_folder and _loose(path.parent.name) in folders_named:
            whose = (f"is in {path.parent.name + '/'!r}, a folder the annotation file names for other photos "
                     "(datasets number the photos of each folder from 1)")
            twice = ""
        else:
            continue
        why[im.id] = (f"file not found: {images_dir / disk_spelling(im.file_name)}; the one file of its name found, "
                      f"{utf8_text(rel)!r}, {whose}: {_ANOTHER_PHOTO}{twice}; if it is this one, write its path "
                      "into file_name")
    return why


def source_images(image_dirs: Sequence[Path], annotation_files: Sequence[Path]) -> List[SourceImages]:
    """One :class:`SourceImages` per annotation file, in order. Files sharing an images folder
    share its :class:`ImagePaths`, so the folder is searched once."""
    by_folder: Dict[Path, ImagePaths] = {}
    return [SourceImages(by_folder.setdefault(Path(folder), ImagePaths(folder)), split_in_name(Path(annotations)))
            for folder, annotations in zip(image_dirs, annotation_files)]


FOLDERS_ABOVE_CHECKED = 2  # how far above --images a name not found under it is looked for, by the build's hint


def folders_above(images_dir: "str | Path") -> List[Path]:
    """The folders up to :data:`FOLDERS_ABOVE_CHECKED` above ``images_dir``, nearest first, spelled from it as
    given (``S/images/batch_1``: ``S/images``, ``S``; ``.``: ``..``, ``../..``); none above a root."""
    folders: List[Path] = []
    seen = {os.path.abspath(images_dir)}
    for level in range(1, FOLDERS_ABOVE_CHECKED + 1):
        folder = os.path.normpath(os.path.join(images_dir, *[os.pardir] * level))
        if os.path.abspath(folder) in seen:
            break
        seen.add(os.path.abspath(folder))
        folders.append(Path(folder))
    return folders


MISSING_SAMPLED = 200  # names looked for in each folder above --images before the hint is worth all of them


def missing_found_above(images_dir: "str | Path", file_names: Sequence[str]) -> Optional[Tuple[Path, int]]:
    """``(folder, count)``: of :func:`folders_above` ``images_dir``, the one under which the most of
    ``file_names`` (names not found under ``images_dir``) are files, the nearer on a tie, and how many, when
    that is half of ``file_names`` or more (the build's hint that ``--images`` is too deep: ``S/images/batch_1``
    for ``batch_2/000002.jpg``); else None. :data:`MISSING_SAMPLED` names spread over the list are looked for
    in each folder first, and all of them only in the folder chosen when half the sample is there: no listing,
    and 100,000 photos truly missing cost 400 stats. Exact spelling only; a path from the root, a URL or one
    with ``..`` says nothing of where ``--images`` should be and is not counted. Nothing is read from there."""
    relative = []
    for file_name in file_names:
        name = disk_spelling(file_name)
        parts = _parts(name)
        if parts and ".." not in parts and not _ABSOLUTE.match(name) and not _URL.match(name):
            relative.append(parts)
    sample = relative[::max(1, -(-len(relative) // MISSING_SAMPLED))]  # spread: a lost batch first is no reason
    best: Optional[Tuple[Path, int]] = None
    for folder in folders_above(images_dir) if relative else []:
        count = sum(1 for parts in sample if os.path.isfile(folder.joinpath(*parts)))
        if count and (best is None or count > best[1]):
            best = (folder, count)
    if best is None or 2 * best[1] < len(sample):
        return None
    if len(sample) < len(relative):
        best = (best[0], sum(1 for parts in relative if os.path.isfile(best[0].joinpath(*parts))))
    return best if 2 * best[1] >= len(file_names) else None


def holds_no_image(folder: Path) -> bool:
    """Whether ``folder`` surely holds none of a dataset's images: it has no image file and no
    sub-folder (a folder of annotation files alone, such as one the JSON was copied into)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return True
    return not any(e.is_dir() or e.name.casefold().endswith(IMAGE_SUFFIXES) for e in entries)


def default_images_folder(annotation_file: Path) -> Tuple[Path, str]:
    """``(folder, why)``: where an annotation file's ``file_name`` entries are relative to when
    ``--images`` is not given. Its own folder (TACO's ``data/annotations.json``, Roboflow's
    ``train/_annotations.coco.json``), except a folder named ``annotations`` (or ``labels``)
    holding no image and no sub-folder: then the one above it, as COCO, LVIS and UAVVaste lay
    out ``annotations/instances_val2017.json`` beside ``val2017/``."""
    folder = Path(annotation_file).parent
    if folder.name.casefold() in ANNOTATION_FOLDERS:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            entries = []
        if entries and not any(e.is_dir() or e.name.casefold().endswith(IMAGE_SUFFIXES) for e in entries):
            return folder.parent, (f"the folder above {folder.name}/, which holds only annotation files, as "
                                   "COCO lays datasets out")
    return folder, "the annotation file's folder"
