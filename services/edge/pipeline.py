"""One frame through the node: decode -> detect (or take the crop) -> one batched inference -> results."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from edgefer.labels import CLASSES
from edgefer.v1 import edge_pb2
from services.edge.detection import Box, FaceDetector, crop_face, whole_image_face
from services.edge.frames import decode_gray
from services.edge.metrics import EdgeMetrics
from services.edge.tracking import FaceTracker


class Inference(Protocol):
    def run(self, faces: np.ndarray) -> tuple[np.ndarray, str]: ...


class FramePipeline:
    def __init__(self, detector: FaceDetector, inference: Inference, metrics: EdgeMetrics) -> None:
        self.detector = detector
        self.inference = inference
        self.metrics = metrics

    def process(self, frame: edge_pb2.Frame, version: str, tracker: FaceTracker | None = None) -> edge_pb2.FrameResult:
        """Raises FrameError for a malformed frame. `version` names the serving model for frames without faces;
        with faces, the result names the model that actually classified them."""
        start = time.perf_counter()
        gray = decode_gray(frame)
        decoded = time.perf_counter()
        if frame.is_face_crop:
            box, face = whole_image_face(gray)
            boxes, faces = [box], face[None]
        else:
            boxes = self.detector.detect(gray)
            faces = np.stack([crop_face(gray, b) for b in boxes]) if boxes else np.zeros((0, 48, 48), np.uint8)
        detected = time.perf_counter()
        probabilities = np.zeros((0, len(CLASSES)), np.float32)
        if len(faces):
            probabilities, version = self.inference.run(faces)
        inferred = time.perf_counter()
        tracks = tracker.update(boxes, probabilities) if tracker is not None else [None] * len(boxes)
        result = edge_pb2.FrameResult(sequence=frame.sequence, status=edge_pb2.FRAME_STATUS_OK, model_version=version)
        for box, probs, track in zip(boxes, probabilities, tracks):
            result.faces.append(_face_result(box, probs, track))
        for stage, seconds in (("decode", decoded - start), ("detect", detected - decoded), ("infer", inferred - detected)):
            self.metrics.latency.labels(stage).observe(seconds)
        self.metrics.faces.inc(len(boxes))
        self.metrics.frames.labels("ok").inc()
        elapsed = time.perf_counter() - start
        self.metrics.latency.labels("total").observe(elapsed)
        result.server_latency_ms = elapsed * 1e3
        return result


def _face_result(box: Box, probs: np.ndarray, track) -> edge_pb2.FaceResult:
    label = CLASSES[int(probs.argmax())]
    return edge_pb2.FaceResult(
        box=edge_pb2.BoundingBox(x=box.x, y=box.y, width=box.width, height=box.height),
        probabilities=[float(p) for p in probs],
        label=label,
        smoothed_label=CLASSES[int(track.probabilities.argmax())] if track is not None else label,
        track_id=track.track_id if track is not None else 0,
    )
