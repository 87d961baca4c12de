"""One frame through the node: decode -> detect (or take the crop) -> one batched inference -> results."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgefer.labels import CLASSES
from edgefer.v1 import edge_pb2
from services.edge.detection import Box, FaceDetector, StreamDetector, crop_face, whole_image_face
from services.edge.frames import decode_gray
from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import LoadedModel
from services.edge.tracking import FaceTracker


class Inference(Protocol):
    async def run(self, faces: np.ndarray) -> tuple[np.ndarray, LoadedModel]: ...


@dataclass
class Located:
    """A frame's faces (boxes and 48x48 crops) and the seconds spent decoding and detecting."""

    boxes: list[Box]
    faces: np.ndarray
    decode_s: float
    detect_s: float


class FramePipeline:
    """Decode and detection run on `cpu_pool` threads (OpenCV releases the GIL); a raw 48x48 crop needs
    neither and stays on the event loop, which saves a thread hand-off per frame."""

    def __init__(self, detector: FaceDetector, inference: Inference, metrics: EdgeMetrics, cpu_pool: Executor,
                 redetect_every: int = 1) -> None:
        self.detector = detector
        self.inference = inference
        self.metrics = metrics
        self.cpu_pool = cpu_pool
        self.redetect_every = redetect_every

    def stream_detector(self) -> StreamDetector:
        """Detection state for one stream (whole-frame passes only every `redetect_every` frames)."""
        return StreamDetector(self.detector, self.redetect_every)

    def locate(self, frame: edge_pb2.Frame, detector: FaceDetector | StreamDetector | None = None) -> Located:
        """Raises FrameError for a malformed frame."""
        start = time.perf_counter()
        gray = decode_gray(frame)
        decoded = time.perf_counter()
        if frame.is_face_crop:
            box, face = whole_image_face(gray)
            boxes, faces = [box], face[None]
        else:
            boxes = (detector or self.detector).detect(gray)
            faces = np.stack([crop_face(gray, b) for b in boxes]) if boxes else np.zeros((0, 48, 48), np.uint8)
        return Located(boxes, faces, decoded - start, time.perf_counter() - decoded)

    async def process(self, frame: edge_pb2.Frame, model: LoadedModel, tracker: FaceTracker | None = None,
                      detector: StreamDetector | None = None) -> edge_pb2.FrameResult:
        """Raises FrameError for a malformed frame. `model` names the serving model for frames without faces;
        with faces, the result names the model that actually classified them (version and sha256: a number can
        name other bytes for a moment after a registry lost its data). A stream passes its tracker and detector."""
        start = time.perf_counter()
        raw_crop = _is_raw_face_crop(frame)
        if raw_crop:
            located = self.locate(frame)
        else:
            located = await asyncio.get_running_loop().run_in_executor(self.cpu_pool, self.locate, frame, detector)
        located_at = time.perf_counter()
        probabilities = np.zeros((0, len(CLASSES)), np.float32)
        if len(located.faces):
            probabilities, model = await self.inference.run(located.faces)
        inferred = time.perf_counter()
        boxes = located.boxes
        tracks = tracker.update(boxes, probabilities) if tracker is not None else [None] * len(boxes)
        result = edge_pb2.FrameResult(sequence=frame.sequence, status=edge_pb2.FRAME_STATUS_OK,
                                      model_version=model.version, model_sha256=model.sha256)
        for box, probs, track in zip(boxes, probabilities, tracks):
            result.faces.append(_face_result(box, probs, track))
        stages = self.metrics.stage_latency
        if not raw_crop:  # a raw crop is neither decoded nor searched: those stages would only record zeros
            stages["decode"].observe(located.decode_s)
            stages["detect"].observe(located.detect_s)
        stages["infer"].observe(inferred - located_at)
        self.metrics.faces.inc(len(boxes))
        self.metrics.frames_ok.inc()
        elapsed = time.perf_counter() - start
        stages["total"].observe(elapsed)
        self.metrics.record_field(model.version, probabilities, elapsed)
        result.server_latency_ms = elapsed * 1e3
        return result


def _is_raw_face_crop(frame: edge_pb2.Frame) -> bool:
    return frame.is_face_crop and frame.WhichOneof("image") == "raw" and frame.raw.width * frame.raw.height <= 96 * 96


def _face_result(box: Box, probs: np.ndarray, track) -> edge_pb2.FaceResult:
    label = CLASSES[int(probs.argmax())]
    return edge_pb2.FaceResult(
        box=edge_pb2.BoundingBox(x=box.x, y=box.y, width=box.width, height=box.height),
        probabilities=probs.tolist(),
        label=label,
        smoothed_label=CLASSES[int(track.probabilities.argmax())] if track is not None else label,
        track_id=track.track_id if track is not None else 0,
    )
