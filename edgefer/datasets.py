"""Loading 48x48 gray faces from the formats users have: compact npz, Kaggle fer2013.csv, a folder per class.

Every loader returns the same `Faces` record (uint8 N x 48 x 48, int64 labels in FER2013 order) and
raises `DatasetError` naming the file and the problem, so a CLI can print one clear line.
"""

from __future__ import annotations

import csv
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefer.labels import CLASSES, FACE_SIZE, NUM_CLASSES

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp"})
CSV_USAGES = ("Training", "PublicTest", "PrivateTest")


class DatasetError(ValueError):
    """A data file or folder that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class Faces:
    """A labelled set of faces: x uint8 (N, 48, 48), y int64 (N,) in FER2013 class order."""

    x: np.ndarray
    y: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.x.ndim != 3 or self.x.shape[1:] != (FACE_SIZE, FACE_SIZE) or self.x.dtype != np.uint8:
            raise DatasetError(f"{self.source}: faces must be uint8 (N, 48, 48), got {self.x.dtype} {self.x.shape}")
        if self.y.shape != (len(self.x),):
            raise DatasetError(f"{self.source}: {len(self.x)} faces but labels of shape {self.y.shape}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= NUM_CLASSES):
            raise DatasetError(f"{self.source}: labels must be in 0..{NUM_CLASSES - 1}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Faces:
        return Faces(self.x[indices], self.y[indices], self.source)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=NUM_CLASSES)


def load_faces(path: str | Path, usage: str | None = None) -> Faces:
    """Load faces from an .npz file, a Kaggle-style .csv (optionally one Usage split) or a class folder."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.is_dir():
        return load_image_folder(p)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return load_npz(p)
    if suffix == ".csv":
        return load_fer_csv(p, usage)
    raise DatasetError(f"{p}: unsupported data format {suffix or '(no suffix)'}; use .npz, .csv or a class folder")


def load_npz(path: Path) -> Faces:
    """Arrays x (N,48,48) uint8 and y (N,) as in ../shared/data/fer2013; no pickle is ever loaded."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x", "y"} - set(archive.files)
            if missing:
                raise DatasetError(f"{path}: missing array(s) {sorted(missing)}; expected x and y")
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"{path}: not a readable npz archive ({exc})") from exc
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or x.min(initial=0) < 0 or x.max(initial=0) > 255:
            raise DatasetError(f"{path}: x must hold pixel values 0..255, got dtype {x.dtype}")
        x = x.astype(np.uint8)
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{path}: y must be integer labels, got dtype {y.dtype}")
    return Faces(np.ascontiguousarray(x), y.astype(np.int64), str(path))


def load_fer_csv(path: Path, usage: str | None = None) -> Faces:
    """The Kaggle fer2013.csv: columns emotion, pixels (2304 space-separated values) and optional Usage."""
    if usage is not None and usage not in CSV_USAGES:
        raise DatasetError(f"{path}: unknown Usage {usage!r}; expected one of {', '.join(CSV_USAGES)}")
    faces: list[np.ndarray] = []
    labels: list[int] = []
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            if not {"emotion", "pixels"} <= columns:
                raise DatasetError(f"{path}: header must have columns emotion and pixels, got {sorted(columns)}")
            if usage is not None and "Usage" not in columns:
                raise DatasetError(f"{path}: no Usage column to select {usage!r} from")
            for line, row in enumerate(reader, start=2):
                if usage is not None and row["Usage"] != usage:
                    continue
                faces.append(_parse_pixels(row["pixels"], path, line))
                labels.append(_parse_label(row["emotion"], path, line))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text CSV file ({exc.reason})") from exc
    if not faces:
        raise DatasetError(f"{path}: no faces" + (f" with Usage {usage!r}" if usage else ""))
    return Faces(np.stack(faces), np.asarray(labels, dtype=np.int64), str(path))


def _parse_pixels(text: str | None, path: Path, line: int) -> np.ndarray:
    values = (text or "").split()
    if len(values) != FACE_SIZE * FACE_SIZE:
        raise DatasetError(f"{path}:{line}: pixels has {len(values)} values, expected {FACE_SIZE * FACE_SIZE}")
    try:
        pixels = np.array(values, dtype=np.int64)
    except ValueError as exc:
        raise DatasetError(f"{path}:{line}: pixels must be integers ({exc})") from exc
    if pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError(f"{path}:{line}: pixel values must be in 0..255")
    return pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE)


def _parse_label(text: str | None, path: Path, line: int) -> int:
    try:
        label = int(text or "")
    except ValueError as exc:
        raise DatasetError(f"{path}:{line}: emotion {text!r} is not an integer") from exc
    if not 0 <= label < NUM_CLASSES:
        raise DatasetError(f"{path}:{line}: emotion {label} is outside 0..{NUM_CLASSES - 1}")
    return label


def load_image_folder(root: Path) -> Faces:
    """One sub-folder per class, named as in CLASSES (any case); images are read gray and resized to 48x48."""
    import cv2  # OpenCV is only needed for this format.

    class_dirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    unknown = sorted(set(class_dirs) - set(CLASSES))
    if unknown:
        raise DatasetError(f"{root}: unknown class folder(s) {unknown}; expected names from {list(CLASSES)}")
    faces: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(CLASSES):
        folder = class_dirs.get(name)
        if folder is None:
            continue
        for image_path in sorted(folder.iterdir()):
            if image_path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
            if image is None or image.size == 0:
                raise DatasetError(f"{image_path}: not a readable image")
            if image.shape != (FACE_SIZE, FACE_SIZE):
                image = cv2.resize(image, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
            faces.append(image)
            labels.append(label)
    if not faces:
        raise DatasetError(f"{root}: no images found in class folders {list(CLASSES)}")
    return Faces(np.stack(faces), np.asarray(labels, dtype=np.int64), str(root))


def concat_faces(parts: list[Faces]) -> Faces:
    """Several labelled sets as one (a base data set and the extra faces merged into it)."""
    if len(parts) == 1:
        return parts[0]
    return Faces(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                 "+".join(p.source for p in parts))


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split, so that validation keeps the class balance of rare 'disgust'."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val = int(round(len(members) * val_fraction))
        if len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def data_sha256(path: str | Path) -> str:
    """Content hash of a data file, or of a folder's relative paths and bytes, for model cards and caches."""
    p = Path(path)
    digest = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with f.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
