"""Per-stream face tracks: faces matched across frames by box overlap, probabilities smoothed over time.

A label that flickers between frames is useless on a dashboard; an exponential moving average of the
class probabilities per track gives a steady `smoothed_label` while the raw label stays available.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.edge.detection import Box


@dataclass(eq=False)  # tracks are matched by identity
class Track:
    track_id: int
    box: Box
    probabilities: np.ndarray
    missed: int = 0


class FaceTracker:
    def __init__(self, smoothing: float = 0.6, min_iou: float = 0.3, max_missed: int = 5) -> None:
        self.smoothing = smoothing
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: list[Box], probabilities: np.ndarray) -> list[Track]:
        """Greedy IoU matching of this frame's faces to live tracks; returns one track per face, in order."""
        unmatched = list(self.tracks)
        result: list[Track] = []
        for box, probs in zip(boxes, probabilities):
            best, best_iou = None, self.min_iou
            for track in unmatched:
                overlap = box.iou(track.box)
                if overlap >= best_iou:
                    best, best_iou = track, overlap
            if best is None:
                best = Track(self._next_id, box, probs.copy())
                self._next_id += 1
                self.tracks.append(best)
            else:
                unmatched.remove(best)
                best.box, best.missed = box, 0
                best.probabilities *= self.smoothing
                best.probabilities += (1 - self.smoothing) * probs
            result.append(best)
        if unmatched:
            for track in unmatched:
                track.missed += 1
            self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return result
