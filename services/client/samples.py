"""Sample face crops drawn on the fly (48x48 gray cartoon faces with varied expressions), so the
client and the demo stream something face-like on a machine with no camera, video or dataset."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from edgefer.labels import CLASSES, FACE_SIZE

MOUTHS = ("smile", "frown", "open", "flat")
MOUTH_CLASS = {"smile": "happy", "frown": "sad", "open": "surprise", "flat": "neutral"}  # labels for demo training data


def draw_face(rng: np.random.Generator, scale: int = 4) -> tuple[np.ndarray, str]:
    """One face and its mouth shape, drawn at `scale` times the crop size and shrunk, with random pose."""
    size = FACE_SIZE * scale
    img = np.full((size, size), int(rng.integers(40, 90)), np.uint8)
    cx, cy = size // 2 + int(rng.integers(-8, 9)), size // 2 + int(rng.integers(-6, 7))
    cv2.ellipse(img, (cx, cy), (int(size * 0.36), int(size * 0.46)), 0, 0, 360, int(rng.integers(150, 210)), -1)
    brow_tilt = int(rng.integers(-14, 15))
    for side in (-1, 1):
        ex = cx + side * int(size * 0.15)
        cv2.ellipse(img, (ex, cy - size // 10), (size // 14, size // 24 + int(rng.integers(0, 6))), 0, 0, 360, 35, -1)
        y0 = cy - size // 5
        cv2.line(img, (ex - size // 12, y0 - side * brow_tilt // 2), (ex + size // 12, y0 + side * brow_tilt // 2), 45, 5)
    mouth = MOUTHS[int(rng.integers(0, len(MOUTHS)))]
    my = cy + size // 5
    if mouth == "smile":
        cv2.ellipse(img, (cx, my - 8), (size // 7, size // 14), 0, 10, 170, 40, 5)
    elif mouth == "frown":
        cv2.ellipse(img, (cx, my + 10), (size // 8, size // 16), 0, 190, 350, 40, 5)
    elif mouth == "open":
        cv2.ellipse(img, (cx, my), (size // 16, size // 11), 0, 0, 360, 30, -1)
    else:
        cv2.line(img, (cx - size // 9, my), (cx + size // 9, my), 40, 5)
    return cv2.resize(img, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA), mouth


def sample_faces(seed: int = 0) -> Iterator[np.ndarray]:
    """An endless, seeded stream of face crops."""
    rng = np.random.default_rng(seed)
    while True:
        yield draw_face(rng)[0]


def labelled_sample_faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n drawn faces with FER2013 class indices (happy, sad, surprise, neutral by mouth shape)."""
    rng = np.random.default_rng(seed)
    faces, labels = zip(*(draw_face(rng) for _ in range(n)))
    return np.stack(faces), np.array([CLASSES.index(MOUTH_CLASS[m]) for m in labels], np.int64)
