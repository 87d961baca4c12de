"""The `fer` package's pipeline (Haar cascade + its mini-Xception, TFLite by default) on given frames.

Runs in its own virtualenv, since `fer` needs TensorFlow (`make bench-fer-venv` builds .venv-fer);
`edge_throughput.py --fer-python .venv-fer/bin/python` calls it in the same run as the edge node, on
the same frames. It is a library, not a server: one frame at a time in this process, which is how
its users call it. Prints markdown table rows in the edge table's columns, and the accuracy of its
classifier on the given 48x48 faces (the whole crop as the face box, so detection does not count).

    .venv-fer/bin/python benchmarks/fer_pipeline.py frames.npz --seconds 10
    .venv-fer/bin/python benchmarks/fer_pipeline.py ../shared/data/fer2013/test_public.npz --accuracy-only
The second form classifies every face of a faces npz (x, y) and prints top-1, per-class and macro recall (the
comparison of issue #26: the edge model's macro recall must not be below fer's).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2
import numpy as np
from fer.fer import FER

FER2013_ORDER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def timed(fn, items: list, seconds: float) -> tuple[float, float, float]:
    """Frames/s and latency p50/p99 in ms of `fn` called on items in turn for `seconds` after a warm-up."""
    for item in items[:5]:
        fn(item)
    latencies: list[float] = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn(items[i % len(items)])
        latencies.append(time.perf_counter() - t)
        i += 1
    elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e3
    return len(lat) / elapsed, float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frames", help="npz with `jpeg_NNN` (encoded frames as uint8 arrays), `crops` (N,48,48) and `labels` (N,)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--accuracy-only", action="store_true", help="frames is a faces npz (x, y): classify them all")
    args = parser.parse_args()
    logging.getLogger("fer").setLevel(logging.ERROR)
    data = np.load(args.frames, allow_pickle=False)
    classifier = FER(mtcnn=False, offsets=(0, 0))  # a FER2013 crop is already the face: no margin added

    def crop(face: np.ndarray) -> list:
        return classifier.detect_emotions(cv2.cvtColor(face, cv2.COLOR_GRAY2BGR), face_rectangles=[(0, 0, 48, 48)])

    if args.accuracy_only:
        print_recall(crop, data["x"], data["y"])
        return
    jpegs = [data[k] for k in sorted(k for k in data.files if k.startswith("jpeg_"))]
    crops, labels = data["crops"], data["labels"]
    detector = FER(mtcnn=False)  # its defaults: Haar cascade, TFLite model, 10-pixel box offsets

    def scene(jpeg: np.ndarray) -> list:
        return detector.detect_emotions(cv2.imdecode(jpeg, cv2.IMREAD_COLOR))

    found = sum(len(scene(j)) for j in jpegs)
    rows = [("48x48 crops", timed(crop, list(crops), args.seconds)), ("640x480 JPEG + detection", timed(scene, jpegs, args.seconds))]
    for (name, (rate, p50, p99)), faces in zip(rows, (1.0, found / len(jpegs))):
        print(f"| fer ({name}) | 1 (in-process) | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {faces:.2f} |")
    accuracy = float(np.mean(predict(crop, crops) == labels))
    print(f"fer: {found} faces found in {len(jpegs)} scenes; classifier top-1 on {len(crops)} given crops: {accuracy * 100:.2f}%")


def predict(crop, faces: np.ndarray) -> np.ndarray:
    """fer's class (FER2013 order) for each given 48x48 face."""
    predicted = []
    for face in faces:
        scores = crop(face)[0]["emotions"]
        predicted.append(FER2013_ORDER.index(max(scores, key=scores.get)))
    return np.asarray(predicted)


def print_recall(crop, faces: np.ndarray, labels: np.ndarray) -> None:
    predicted = predict(crop, faces)
    recall = [float(np.mean(predicted[labels == k] == k)) for k in range(len(FER2013_ORDER))]
    print(f"fer's classifier on {len(faces)} faces: top-1 {100 * np.mean(predicted == labels):.2f}%, macro recall "
          f"{100 * np.mean(recall):.2f}%")
    print("per-class recall: " + ", ".join(f"{name} {100 * r:.1f}" for name, r in zip(FER2013_ORDER, recall)))


if __name__ == "__main__":
    main()
