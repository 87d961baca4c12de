"""Face detection and cropping: from a gray frame to 48x48 face crops for the classifier.

`FaceDetector` is the interface; `HaarFaceDetector` is the OpenCV Haar cascade shipped with
opencv-python-headless 4.x, run on a downscaled copy of the frame for speed. A better detector
(a small ONNX SSD, say) plugs in by implementing `detect`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edgefer.labels import FACE_SIZE


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x + self.width, other.x + other.width) - max(self.x, other.x))
        iy = max(0, min(self.y + self.height, other.y + other.height) - max(self.y, other.y))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union else 0.0


class FaceDetector(Protocol):
    def detect(self, gray: np.ndarray) -> list[Box]: ...

    def detect_near(self, gray: np.ndarray, box: Box, margin: float = 0.5) -> list[Box]: ...


class HaarFaceDetector:
    """Frontal-face Haar cascade on a frame downscaled to at most `detect_width` pixels wide.

    OpenCV's CascadeClassifier keeps per-call scale data inside itself, so two threads searching at
    once corrupt each other: every thread gets a cascade of its own.
    """

    PATH = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"

    def __init__(self, detect_width: int = 320, min_face: int = 24, scale_factor: float = 1.15, min_neighbors: int = 5) -> None:
        self._per_thread = threading.local()
        self._cascade()  # load now, so that a missing file fails at start, not at the first frame
        self.detect_width = detect_width
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def _cascade(self) -> cv2.CascadeClassifier:
        """This thread's cascade, loaded on its first search."""
        cascade = getattr(self._per_thread, "cascade", None)
        if cascade is None:
            cascade = cv2.CascadeClassifier(str(self.PATH))
            if cascade.empty():
                raise RuntimeError(f"{self.PATH}: Haar cascade missing; opencv-python-headless 4.x ships it, 5.x does not")
            self._per_thread.cascade = cascade
        return cascade

    def detect(self, gray: np.ndarray) -> list[Box]:
        scale = min(1.0, self.detect_width / gray.shape[1])
        return self._search(gray, 0, 0, scale, self.min_face, None)

    def detect_near(self, gray: np.ndarray, box: Box, margin: float = 0.5) -> list[Box]:
        """Faces of about `box`'s size within the box grown by `margin` on each side: a few pyramid
        levels over a small region, an order of magnitude cheaper than the whole frame."""
        grow_x, grow_y = int(box.width * margin), int(box.height * margin)
        x0, y0 = max(0, box.x - grow_x), max(0, box.y - grow_y)
        x1, y1 = min(gray.shape[1], box.x + box.width + grow_x), min(gray.shape[0], box.y + box.height + grow_y)
        side = max(box.width, box.height)
        scale = min(1.0, 2 * self.min_face / side)  # the expected face becomes twice the smallest window
        return self._search(gray[y0:y1, x0:x1], x0, y0, scale, max(self.min_face, int(0.6 * side * scale)), int(1.6 * side * scale))

    def _search(self, gray: np.ndarray, x0: int, y0: int, scale: float, min_side: int, max_side: int | None) -> list[Box]:
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        if min(small.shape) < min_side:
            return []
        found = self._cascade().detectMultiScale(
            cv2.equalizeHist(small), scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side), maxSize=(max_side, max_side) if max_side else (0, 0),
        )
        return [Box(x0 + int(x / scale), y0 + int(y / scale), int(w / scale), int(h / scale)) for x, y, w, h in found]


class StreamDetector:
    """One stream's detection: the whole frame every `redetect_every` frames, and at once when a known face
    is lost; in between, only the neighbourhood of each face of the previous frame (faces move little
    between frames), and nothing at all while no face is in the picture. A face entering the picture is
    found at the next whole-frame pass, at most `redetect_every` frames later (0.27 s at 30 frames/s
    for 8), and a board watching an empty room spends an eighth of the detection work."""

    def __init__(self, detector: FaceDetector, redetect_every: int) -> None:
        self.detector = detector
        self.redetect_every = redetect_every
        self._previous: list[Box] = []
        self._since_full = redetect_every  # the first frame gets a whole-frame pass

    def detect(self, gray: np.ndarray) -> list[Box]:
        if self._since_full < self.redetect_every:  # redetect_every <= 1: always whole frames
            found = [near for box in self._previous for near in self.detector.detect_near(gray, box)[:1]]
            if len(found) == len(self._previous):
                self._since_full += 1
                self._previous = found
                return found
        self._since_full = 1
        self._previous = self.detector.detect(gray)
        return self._previous


def crop_face(gray: np.ndarray, box: Box, margin: float = 0.1) -> np.ndarray:
    """A square crop around the box (with a margin, clamped to the frame), resized to 48x48."""
    side = int(max(box.width, box.height) * (1 + 2 * margin))
    cx, cy = box.x + box.width // 2, box.y + box.height // 2
    x0, y0 = max(0, cx - side // 2), max(0, cy - side // 2)
    x1, y1 = min(gray.shape[1], x0 + side), min(gray.shape[0], y0 + side)
    crop = gray[y0:y1, x0:x1]
    return cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


def whole_image_face(gray: np.ndarray) -> tuple[Box, np.ndarray]:
    """For frames marked as an already-cropped face: the whole image is the face."""
    face = gray if gray.shape == (FACE_SIZE, FACE_SIZE) else cv2.resize(gray, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    return Box(0, 0, gray.shape[1], gray.shape[0]), face
