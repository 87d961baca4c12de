"""Frame sources for the device client: a video file, a camera index, a folder of images (looped), the
faces of an .npz file (48x48 crops), or `samples` (cartoon face crops drawn on the fly, needing no files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edgefer.datasets import IMAGE_SUFFIXES, DatasetError, load_faces
from services.client.samples import sample_faces


class SourceError(ValueError):
    """A source that cannot be opened; the message names it."""


def open_source(spec: str, loop: bool = False) -> Iterator[np.ndarray]:
    """Frames from `spec`: a digit is a camera index, a folder is read image by image, an .npz gives its faces,
    `samples` draws faces, else a video file. 48x48 frames are face crops."""
    if spec == "samples":
        return sample_faces()
    if spec.isdigit():
        return _video(cv2.VideoCapture(int(spec)), f"camera {spec}", loop=False)
    path = Path(spec)
    if path.is_dir():
        return _folder(path, loop)
    if not path.exists():
        raise SourceError(f"{path}: no such video file, folder or camera index")
    if path.suffix == ".npz":
        return _faces(path, loop)
    return _video(cv2.VideoCapture(str(path)), str(path), loop)


def _video(capture: cv2.VideoCapture, name: str, loop: bool) -> Iterator[np.ndarray]:
    if not capture.isOpened():
        raise SourceError(f"{name}: cannot be opened as a video source")

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    if loop and capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
                        continue
                    return
                yield frame
        finally:
            capture.release()

    return frames()


def _folder(folder: Path, loop: bool) -> Iterator[np.ndarray]:
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SourceError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    def frames() -> Iterator[np.ndarray]:
        while True:
            for path in images:
                frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if frame is not None:
                    yield frame
            if not loop:
                return

    return frames()


def _faces(path: Path, loop: bool) -> Iterator[np.ndarray]:
    try:
        faces = load_faces(path).x
    except DatasetError as exc:
        raise SourceError(str(exc)) from exc

    def frames() -> Iterator[np.ndarray]:
        while True:
            yield from faces
            if not loop:
                return

    return frames()
