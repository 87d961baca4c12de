"""A paced StreamClassify call to one node: load for rollouts, benchmarks and tests on a local fleet."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np

from edgefer.v1 import edge_pb2, edge_pb2_grpc


class FaceStream(threading.Thread):
    """Sends `faces` (uint8 48x48 crops, cycled from `offset`) at `fps`; counts answered frames by the model
    version that answered them, and failures (a frame not OK, a broken call). With `reconnect`, a broken call
    is opened again (a node being restarted); without, the stream ends there."""

    def __init__(
        self,
        target: str,
        faces: np.ndarray,
        fps: float,
        stop: threading.Event | None = None,
        offset: int = 0,
        reconnect: bool = True,
    ) -> None:
        super().__init__(daemon=True)
        self.target, self.faces, self.period, self.offset, self.reconnect = target, faces, 1.0 / fps, offset, reconnect
        self.stop = stop or threading.Event()
        self.by_version: dict[str, int] = {}
        self.failed = 0

    @property
    def ok(self) -> int:
        return sum(self.by_version.values())

    def frames(self) -> Iterator[edge_pb2.Frame]:
        sequence = self.offset
        while not self.stop.is_set():
            face = self.faces[sequence % len(self.faces)]
            raw = edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=face.tobytes())
            yield edge_pb2.Frame(sequence=sequence, raw=raw, is_face_crop=True)
            sequence += 1
            time.sleep(self.period)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with grpc.insecure_channel(self.target) as channel:
                    for result in edge_pb2_grpc.EdgeFerStub(channel).StreamClassify(self.frames()):
                        if result.status == edge_pb2.FRAME_STATUS_OK:
                            self.by_version[result.model_version] = self.by_version.get(result.model_version, 0) + 1
                        else:
                            self.failed += 1
            except grpc.RpcError:
                self.failed += 1
                if not self.reconnect:
                    return
                time.sleep(0.2)
