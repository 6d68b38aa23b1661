"""Frame sources behind one interface, and the capture thread with a bounded queue.

Sources: ``camera:N`` / ``camera:/dev/videoN`` (OpenCV) or ``gst:PIPELINE`` (OpenCV with
GStreamer), ``dir:PATH`` (sorted images: .npy, .ppm/.pgm with numpy alone; .jpg/.png with Pillow
or OpenCV), ``video:PATH`` (OpenCV). Every frame gets a sequence number. When inference falls
behind a LIVE source, the oldest queued frames are dropped and reported (never silently);
replayed files apply back-pressure instead, unless paced with ``?fps=N`` (then they act live).
"""

import collections
import logging
import os
import threading
import time
from typing import Callable, List, Optional, Tuple

import numpy as np

LOG = logging.getLogger(__name__)
INSTALL_OPENCV = "sudo apt-get install python3-opencv"  # what camera: and video: sources read through

IMAGE_EXTENSIONS = (".npy", ".ppm", ".pgm", ".jpg", ".jpeg", ".png", ".bmp")


class FrameReadError(Exception):
    """One frame could not be read (the source continues)."""


class SourceError(Exception):
    """The source cannot be opened or is lost."""


class SourceSpecError(SourceError):
    """The ``--source`` value itself is wrong, or the package it needs is not installed: no restart can open it
    (the service exits 78)."""


class Frame:
    """A captured frame: ``image`` is HxWx3 uint8 RGB, or None with ``error`` set. ``prepared``
    holds what the capture thread's ``prepare`` made of it (the model input), ``prep_ms`` its cost."""

    __slots__ = ("seq", "t", "image", "error", "prepared", "prep_ms")

    def __init__(self, seq: int, t: float, image: Optional[np.ndarray], error: Optional[str] = None):
        self.seq, self.t, self.image, self.error = seq, t, image, error
        self.prepared = None
        self.prep_ms = 0.0


class FrameSource:
    """Interface: ``open(start_index)``, ``read()`` -> RGB frame, None at the end, or raises
    ``FrameReadError``; ``close()``. ``live`` sources drop frames when the consumer is slow."""

    live = False
    description = ""

    def open(self, start_index: int = 0) -> None:
        """Prepare; file sources skip the first ``start_index`` frames (resume after a restart)."""

    def read(self) -> Optional[np.ndarray]:
        """The next frame."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""


def _ppm_header(data: bytes, path: str) -> Tuple[int, int, int, int]:
    """``(channels, width, height, offset of the pixels)`` of a binary PPM/PGM from its first bytes."""
    tokens, pos = [], 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] not in (b"\n", b"\r"):
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise FrameReadError("%s: truncated PPM header" % path)
        tokens.append(data[start:pos])
    magic, width, height, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    if magic not in (b"P5", b"P6") or maxval != 255:
        raise FrameReadError("%s: only binary 8-bit PPM/PGM (P6/P5, maxval 255) is supported" % path)
    return (3 if magic == b"P6" else 1), width, height, pos + 1


def read_ppm(path: str) -> np.ndarray:
    """A binary PPM (P6) or PGM (P5) with maxval 255 as HxWx3 uint8 (numpy only)."""
    with open(path, "rb") as f:
        data = f.read()
    channels, width, height, offset = _ppm_header(data, path)
    pixels = np.frombuffer(data, np.uint8, offset=offset)
    if pixels.size < width * height * channels:
        raise FrameReadError("%s: truncated image data (%d of %d bytes)" % (path, pixels.size, width * height * channels))
    image = pixels[:width * height * channels].reshape(height, width, channels)
    return np.repeat(image, 3, axis=2) if channels == 1 else image


def ppm_cut_short(path: str) -> Optional[str]:
    """Why the PPM/PGM ``path`` cannot be read whole, from its header and its size alone (a copy made while it
    was written), or None."""
    with open(path, "rb") as f:
        head = f.read(4096)
    try:
        channels, width, height, offset = _ppm_header(head, path)
    except (FrameReadError, ValueError) as exc:
        return str(exc)
    size = os.path.getsize(path) - offset
    if size < width * height * channels:
        return "%s: truncated image data (%d of %d bytes)" % (path, size, width * height * channels)
    return None


def ppm_bytes(image: np.ndarray) -> bytes:
    """HxWx3 uint8 as a binary PPM file's bytes (what ``read_image`` reads back without Pillow)."""
    return b"P6\n%d %d\n255\n" % (image.shape[1], image.shape[0]) + np.ascontiguousarray(image, np.uint8).tobytes()


def read_image(path: str) -> np.ndarray:
    """Read one image file as HxWx3 uint8 RGB; ``FrameReadError`` when it cannot be decoded."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            image = np.load(path, allow_pickle=False)
        elif ext in (".ppm", ".pgm"):
            image = read_ppm(path)
        else:
            try:
                from PIL import Image
                with Image.open(path) as im:
                    image = np.asarray(im.convert("RGB"))
            except ImportError:
                try:
                    import cv2
                except ImportError:
                    raise FrameReadError("%s: reading %s needs Pillow (`sudo apt-get install python3-pil`) or "
                                         "OpenCV; or store frames as .npy/.ppm" % (path, ext))
                bgr = cv2.imread(path)
                if bgr is None:
                    raise FrameReadError("%s: OpenCV cannot decode it" % path)
                image = bgr[:, :, ::-1]
    except FrameReadError:
        raise
    except Exception as exc:  # truncated/corrupt files raise many different errors
        raise FrameReadError("%s: cannot read image (%s: %s)" % (path, type(exc).__name__, exc))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FrameReadError("%s: expected an HxWx3 uint8 image, got shape %s dtype %s" % (path, image.shape, image.dtype))
    return image


class DirectorySource(FrameSource):
    """Images of a directory in sorted name order; ``fps`` > 0 paces them like a camera."""

    def __init__(self, path: str, fps: float = 0.0, loop: bool = False):
        self.path, self.fps, self.loop = path, fps, loop
        self.live = fps > 0
        self.description = "dir:%s" % path
        self.files = []  # type: List[str]
        self._i = 0
        self._next_t = 0.0

    def open(self, start_index: int = 0) -> None:
        if not os.path.isdir(self.path):
            raise SourceError("dir source %s is not a directory: check --source dir:PATH (a folder of frames; "
                              "a disk not mounted yet is retried under systemd)" % self.path)
        self.files = sorted(f for f in os.listdir(self.path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise SourceError("dir source %s has no images (%s)" % (self.path, ", ".join(IMAGE_EXTENSIONS)))
        if start_index >= len(self.files):  # a replay into the log of an earlier one (files: at least one)
            LOG.warning("dir source %s: nothing left to replay: a file source resumes after the event log's last "
                        "frame (%d), and it holds %d; to replay it again, give another --log", self.path,
                        start_index - 1, len(self.files))
        self._i = start_index
        self._next_t = time.monotonic()

    def read(self) -> Optional[np.ndarray]:
        if self._i >= len(self.files):
            if not self.loop:
                return None
            self._i = 0
        if self.fps > 0:
            self._next_t += 1.0 / self.fps
            delay = self._next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        name = self.files[self._i % len(self.files)]
        self._i += 1
        return read_image(os.path.join(self.path, name))


class OpenCVSource(FrameSource):
    """A camera (index or device path), GStreamer pipeline or video file through OpenCV."""

    def __init__(self, target, live: bool, api: Optional[str] = None, width: int = 640, height: int = 480,
                 max_consecutive_errors: int = 30):
        self.target, self.live, self.api = target, live, api
        self.width, self.height = width, height
        self.max_consecutive_errors = max_consecutive_errors
        self.description = "%s:%s" % ("camera" if live else "video", target)
        self.cap = None
        self._errors = 0

    def open(self, start_index: int = 0) -> None:
        try:
            import cv2
        except ImportError:
            raise SourceSpecError("%s needs OpenCV: `%s`" % (self.description, INSTALL_OPENCV))
        if self.api == "gstreamer":
            self.cap = cv2.VideoCapture(self.target, cv2.CAP_GSTREAMER)
        else:
            self.cap = cv2.VideoCapture(self.target)
        if not self.cap.isOpened():
            raise SourceError("cannot open %s (is the camera connected? `ls /dev/video*`; for a file, does it "
                              "exist and can OpenCV decode it?)" % self.description)
        if self.live and self.api != "gstreamer":
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        elif start_index:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, start_index)

    def read(self) -> Optional[np.ndarray]:
        ok, bgr = self.cap.read()
        if not ok or bgr is None:
            if not self.live:
                return None
            self._errors += 1
            if self._errors >= self.max_consecutive_errors:
                raise SourceError("%s: %d consecutive read failures; the camera is lost" % (self.description, self._errors))
            raise FrameReadError("%s: read failed (%d in a row)" % (self.description, self._errors))
        self._errors = 0
        if bgr.ndim == 2 and bgr.dtype == np.uint8:  # a GRAY8 pipeline, or CONVERT_RGB off: grey in all three
            return np.repeat(bgr[:, :, None], 3, axis=2)
        if bgr.ndim != 3 or bgr.shape[2] not in (3, 4) or bgr.dtype != np.uint8:
            raise FrameReadError("%s: a frame of shape %s and type %s; the service takes height x width x 3 "
                                 "uint8 (BGR, or BGRA); check the camera's pixel format or the gst: pipeline's "
                                 "last caps (video/x-raw,format=BGR)" % (self.description, bgr.shape, bgr.dtype))
        return bgr[:, :, 2::-1]  # BGR or BGRA -> RGB

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def open_source(spec: str) -> FrameSource:
    """The source for ``camera:0``, ``camera:/dev/video1``, ``gst:PIPELINE``, ``dir:PATH[?fps=N]`` or
    ``video:PATH``."""
    kind, _, rest = spec.partition(":")
    if kind == "camera":
        return OpenCVSource(int(rest) if rest.isdigit() else rest or 0, live=True)
    if kind == "gst":
        return OpenCVSource(rest, live=True, api="gstreamer")
    if kind == "dir":
        path, _, query = rest.partition("?")
        fps = 0.0
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key != "fps":
                raise SourceSpecError("--source %s: unknown option %r (only fps=N)" % (spec, key))
            try:
                fps = float(value)
            except ValueError:
                fps = -1.0
            if not fps >= 0:  # also NaN
                raise SourceSpecError("--source %s: fps=%s is not a frame rate; give a number >= 0 (0: as fast as "
                                      "the loop runs)" % (spec, value))
        return DirectorySource(path, fps)
    if kind == "video":
        return OpenCVSource(rest, live=False)
    raise SourceSpecError("--source %r: expected camera:N, gst:PIPELINE, dir:PATH or video:PATH" % spec)


class FrameCapture:
    """Reads ``source`` in its own thread into a bounded queue.

    Live sources: when the queue is full the OLDEST frame is dropped and its sequence number
    kept for ``get`` to report. File sources block instead. ``get`` returns (frame or None,
    dropped seqs); frame None with ``finished`` True means the source ended.
    """

    def __init__(self, source: FrameSource, start_seq: int = 0, queue_size: int = 2,
                 max_frames: Optional[int] = None, clock: Callable[[], float] = time.monotonic,
                 prepare: Optional[Callable] = None):
        self.source = source
        self.prepare = prepare  # runs in the capture thread, overlapping the previous frame's inference
        self.seq = start_seq
        self.queue_size = max(1, queue_size)
        self.max_frames = max_frames
        self.clock = clock
        self._queue = collections.deque()
        self._dropped = []  # type: List[int]
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.finished = False
        self.error = None  # type: Optional[str]
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        """Open the source (at ``start_seq`` for files) and start reading."""
        self.source.open(self.seq)
        self._thread.start()

    def _put(self, frame: Frame) -> None:
        with self._cond:
            if not self.source.live:
                while len(self._queue) >= self.queue_size and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif len(self._queue) >= self.queue_size:
                self._dropped.append(self._queue.popleft().seq)
            self._queue.append(frame)
            self._cond.notify_all()

    def _run(self) -> None:
        count = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and count >= self.max_frames:
                    break
                try:
                    image = self.source.read()
                    # the frame's time is when it came: read() waits for the camera's next frame or the replay's
                    # pace (taken before it, every time was early by up to a frame period: late actuations)
                    t = self.clock()
                    if image is None:
                        break
                    frame = Frame(self.seq, t, image)
                except FrameReadError as exc:
                    t = self.clock()
                    frame = Frame(self.seq, t, None, str(exc))
                if frame.image is not None and self.prepare is not None:
                    start = time.perf_counter()
                    try:
                        frame.prepared = self.prepare(frame.image)
                    except Exception as exc:  # a frame that cannot become a model input is a bad frame
                        frame = Frame(self.seq, t, None, "%s: frame %d cannot be pre-processed: %s" % (
                            self.source.description, self.seq, exc))
                    frame.prep_ms = (time.perf_counter() - start) * 1000.0
                self.seq += 1
                count += 1
                self._put(frame)
        except SourceError as exc:
            self.error = str(exc)
        except Exception as exc:  # keep the reason: the service logs it as a fault
            self.error = "%s: %s: %s" % (self.source.description, type(exc).__name__, exc)
        finally:
            with self._cond:
                self.finished = True
                self._cond.notify_all()

    def get(self, timeout: float = 0.5):
        """(oldest queued frame or None, dropped seqs since the last call)."""
        with self._cond:
            if not self._queue and not self.finished:
                self._cond.wait(timeout)
            frame = self._queue.popleft() if self._queue else None
            dropped, self._dropped = self._dropped, []
            self._cond.notify_all()
        return frame, dropped

    @property
    def done(self) -> bool:
        """True when the source ended and every frame was taken."""
        with self._cond:
            return self.finished and not self._queue

    def stop(self, wait_s: float = 5.0) -> List[int]:
        """Stop reading (waiting ``wait_s`` at most for a read in progress); returns the seqs still queued or
        dropped (the caller logs them)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(wait_s)
        with self._cond:
            rest = self._dropped + [f.seq for f in self._queue]
            self._dropped, self._queue = [], collections.deque()
        if self._thread.is_alive():  # stuck in a read: releasing the camera under it (OpenCV) may crash the
            # process before the pending actuations fire and the log is flushed; its exit closes the camera
            LOG.warning("%s: a read has not returned for %g s; the source is left open until the service exits",
                        self.source.description, wait_s)
        else:
            self.source.close()
        return sorted(rest)
