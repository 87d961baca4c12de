"""Loaders for npz, Kaggle CSV and class folders, their error messages, and the stratified split."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefer.datasets import DatasetError, data_sha256, load_faces, stratified_split
from tests.conftest import synthetic_faces


def write_csv(path: Path, rows: list[tuple[str, str, str]], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text(header + "\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    return path


def pixels(value: int) -> str:
    return " ".join([str(value)] * 2304)


def test_npz_round_trip(toy_npz: Path) -> None:
    faces = load_faces(toy_npz)
    assert faces.x.shape == (420, 48, 48) and faces.x.dtype == np.uint8
    assert faces.class_counts().tolist() == [60] * 7


def test_csv_loads_and_filters_by_usage(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "fer2013.csv", [("3", pixels(10), "Training"), ("5", pixels(200), "PublicTest")])
    everything = load_faces(path)
    assert everything.y.tolist() == [3, 5]
    public = load_faces(path, "PublicTest")
    assert public.y.tolist() == [5] and public.x[0, 0, 0] == 200


def test_image_folder_loads_and_resizes(tmp_path: Path) -> None:
    for name, value in [("happy", 50), ("Sad", 90)]:
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.full((96, 96), value, np.uint8))
    faces = load_faces(tmp_path)
    assert faces.x.shape == (2, 48, 48)
    assert faces.y.tolist() == [3, 4]


@pytest.mark.parametrize(
    "rows,header,message",
    [
        ([("3", "1 2 3", "Training")], "emotion,pixels,Usage", "pixels has 3 values"),
        ([("9", pixels(1), "Training")], "emotion,pixels,Usage", "outside 0..6"),
        ([("x", pixels(1), "Training")], "emotion,pixels,Usage", "not an integer"),
        ([("3", pixels(300), "Training")], "emotion,pixels,Usage", "0..255"),
        ([("3", pixels(1), "Training")], "label,image,Usage", "header must have columns"),
    ],
)
def test_malformed_csv_errors_name_the_file_and_line(tmp_path: Path, rows, header, message) -> None:
    path = write_csv(tmp_path / "bad.csv", rows, header)
    with pytest.raises(DatasetError, match=message) as info:
        load_faces(path)
    assert str(path) in str(info.value)


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_faces(tmp_path / "absent.npz")
    (tmp_path / "faces.txt").write_text("hello")
    with pytest.raises(DatasetError, match="unsupported data format"):
        load_faces(tmp_path / "faces.txt")


def test_corrupt_and_incomplete_npz(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="corrupt.npz: not a readable npz"):
        load_faces(corrupt)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x=np.zeros((2, 48, 48), np.uint8))
    with pytest.raises(DatasetError, match="missing array"):
        load_faces(partial)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, x=np.zeros((2, 32, 32), np.uint8), y=np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match="uint8 \\(N, 48, 48\\)"):
        load_faces(wrong_shape)


def test_bad_image_folder(tmp_path: Path) -> None:
    (tmp_path / "smiling").mkdir()
    with pytest.raises(DatasetError, match="unknown class folder"):
        load_faces(tmp_path)
    (tmp_path / "smiling").rmdir()
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png: not a readable image"):
        load_faces(tmp_path)


def test_stratified_split_is_deterministic_and_keeps_class_balance() -> None:
    _, y = synthetic_faces(700)
    train_a, val_a = stratified_split(y, 0.1, seed=3)
    train_b, val_b = stratified_split(y, 0.1, seed=3)
    assert np.array_equal(val_a, val_b) and np.array_equal(train_a, train_b)
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == 700
    assert np.bincount(y[val_a]).tolist() == [10] * 7
    _, val_c = stratified_split(y, 0.1, seed=4)
    assert not np.array_equal(val_a, val_c)


def test_data_hash_changes_with_content(tmp_path: Path, toy_npz: Path) -> None:
    copy = tmp_path / "copy.npz"
    copy.write_bytes(toy_npz.read_bytes())
    assert data_sha256(copy) == data_sha256(toy_npz)
    copy.write_bytes(toy_npz.read_bytes() + b"x")
    assert data_sha256(copy) != data_sha256(toy_npz)
