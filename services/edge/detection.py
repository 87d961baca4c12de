"""Face detection and cropping: from a gray frame to 48x48 face crops for the classifier.

`FaceDetector` is the interface; `HaarFaceDetector` is the OpenCV Haar cascade shipped with
opencv-python-headless 4.x, run on a downscaled copy of the frame for speed. A better detector
(a small ONNX SSD, say) plugs in by implementing `detect`.
"""

from __future__ import annotations

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


class HaarFaceDetector:
    """Frontal-face Haar cascade on a frame downscaled to at most `detect_width` pixels wide."""

    def __init__(self, detect_width: int = 320, min_face: int = 24, scale_factor: float = 1.15, min_neighbors: int = 5) -> None:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"{path}: Haar cascade missing; opencv-python-headless 4.x ships it, 5.x does not")
        self.detect_width = detect_width
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, gray: np.ndarray) -> list[Box]:
        scale = min(1.0, self.detect_width / gray.shape[1])
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(small), scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_face, self.min_face),
        )
        return [Box(int(x / scale), int(y / scale), int(w / scale), int(h / scale)) for x, y, w, h in found]


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
