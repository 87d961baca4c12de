"""One job through the pipeline: teacher -> ITS -> prune -> export (+INT8) -> evaluate -> gate -> publish.

Every stage writes its outputs into the job's work directory and records itself in stages.json when
it is complete, so a worker that was killed resumes the job at the first unfinished stage (and the
training stages resume at their last epoch). Publishing is idempotent by job id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from compression_worker.complexity import onnx_complexity
from compression_worker.data.mixing import MixConfig
from compression_worker.distill.its import ITSConfig, run_its
from compression_worker.latency import latency_ms
from compression_worker.prune.run import PruneConfig, run_prune
from compression_worker.release import export_checkpoint, quantize_model
from compression_worker.service.gate import GateConfig, decide
from compression_worker.service.metrics import WorkerMetrics
from compression_worker.training.progress import epoch_listener
from compression_worker.training.resumable import write_json_atomic
from compression_worker.training.run import DataConfig, DataSplits, load_splits, train_model
from compression_worker.training.trainer import OptimConfig
from edgefer.jobs.spec import JobSpec
from edgefer.jobs.status import JobStatusStore
from edgefer.onnx_model import OnnxFaceClassifier
from edgefer.registry.manifest import EXPECTED_INPUT, card_metrics
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.store import ModelRegistry


@dataclass
class JobContext:
    spec: JobSpec
    workdir: Path
    registry: ModelRegistry
    signer: ManifestSigner
    gate: GateConfig
    status: JobStatusStore
    metrics: WorkerMetrics
    keep_alive: Callable[[], None]
    device: torch.device = torch.device("cpu")


class JobRunner:
    """Runs (or resumes) one job; returns its outcome: published or rejected (errors raise)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.dir = ctx.workdir
        self.data = DataConfig(Path(self.spec.data), None, 0.1, self.spec.seed, self.spec.usage)
        self._ledger = self.dir / "stages.json"
        self._done: dict[str, dict] = json.loads(self._ledger.read_text()) if self._ledger.exists() else {}
        s = self.spec
        self._weights = {
            "teacher": s.teacher_epochs, "distill": s.rounds * s.round_epochs, "prune": s.local_epochs + s.finetune_epochs,
            "export": 2, "evaluate": 1, "gate": 0, "publish": 0,
        }
        self._started = time.monotonic()
        self._epochs_seen = 0

    def run(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        teacher = self._stage("teacher", self._teacher)
        teachers = teacher.get("models") or [teacher["model"]]
        distilled = self._stage("distill", lambda: self._distill(teachers))["model"]
        pruned = self._stage("prune", lambda: self._prune(distilled))["model"]
        candidate = self._stage("export", lambda: self._export(pruned))
        evaluation = self._stage("evaluate", lambda: self._evaluate(Path(candidate["onnx"])))
        gate = self._stage("gate", lambda: decide(self.ctx.gate, evaluation["candidate"], evaluation["serving"]).to_dict())
        self.ctx.status.update(self.spec.job_id, gate=gate)
        if not gate["passed"]:
            return "rejected"
        published = self._stage("publish", lambda: self._publish(Path(candidate["onnx"]), evaluation["candidate"]))
        self.ctx.status.update(self.spec.job_id, published_version=published["version"])
        self.ctx.metrics.last_published_accuracy.set(evaluation["candidate"]["accuracy"])
        return "published"

    # -- bookkeeping ------------------------------------------------------------------------------

    def _stage(self, name: str, work: Callable[[], dict]) -> dict:
        if name in self._done:
            return self._done[name]
        self.ctx.metrics.stage.state(name)
        self.ctx.status.update(self.spec.job_id, state="running", stage=name, epoch=0, epochs=self._weights[name])
        started = time.monotonic()
        with epoch_listener(lambda epoch, epochs, log: self._on_epoch(name, epoch, epochs, log)):
            outputs = work()
        seconds = time.monotonic() - started
        self.ctx.metrics.stage_seconds.labels(name).observe(seconds)
        self._done[name] = {**outputs, "seconds": seconds}
        write_json_atomic(self._ledger, self._done)
        self._progress(name, 0)
        self.ctx.keep_alive()
        return self._done[name]

    def _on_epoch(self, stage: str, epoch: int, epochs: int, log: dict) -> None:
        self._epochs_seen += 1
        self._progress(stage, epoch, epochs, log)
        self.ctx.keep_alive()

    def _progress(self, stage: str, epoch: int, epochs: int = 0, log: dict | None = None) -> None:
        total = sum(self._weights.values()) or 1
        done = sum(self._weights[s] for s in self._done) + (min(epoch, self._weights[stage]) if stage not in self._done else 0)
        fraction = min(1.0, done / total)
        rate = (time.monotonic() - self._started) / self._epochs_seen if self._epochs_seen else None
        eta = rate * (total - done) if rate else None
        fields: dict = {"stage": stage, "epoch": epoch, "epochs": epochs, "percent": round(100 * fraction, 1), "eta_s": eta}
        if log:
            fields["last_epoch"] = {k: log[k] for k in ("train_loss", "val_acc", "lr", "seconds") if k in log}
        self.ctx.status.update(self.spec.job_id, **fields)
        self.ctx.metrics.progress.set(fraction)

    @cached_property
    def _splits(self) -> DataSplits:
        """The job's train/held-back split, read once for the stages after training (export, evaluate)."""
        return load_splits(self.data)

    # -- stages -----------------------------------------------------------------------------------

    def _optim(self, epochs: int, lr: float = 0.1) -> OptimConfig:
        s = self.spec
        return OptimConfig(epochs=epochs, lr=lr, seed=s.seed, ema_decay=s.ema_decay, mix=MixConfig(mixup_alpha=s.mixup))

    def _teacher(self) -> dict:
        if self.spec.teachers:
            return {"models": list(self.spec.teachers)}
        summary = train_model(self.spec.arch, self.data, self._optim(self.spec.teacher_epochs), self.dir / "teacher", self.ctx.device)
        return {"model": str(self.dir / "teacher" / "model.pt"), "val_acc": summary["best_val_acc"]}

    def _distill(self, teachers: list[str]) -> dict:
        if self.spec.rounds == 0:
            return {"model": teachers[0]}
        s = self.spec
        cfg = ITSConfig(arch=s.arch, rounds=s.rounds, temperature=s.temperature, alpha=s.alpha,
                        teachers=tuple(Path(t) for t in teachers), mode=s.distill_mode)
        summary = run_its(cfg, self.data, self._optim(s.round_epochs), self.dir / "distill", self.ctx.device)
        return {"model": summary["final_model"], "val_acc": summary["rounds"][-1]["val_acc"]}

    def _prune(self, distilled: str) -> dict:
        s = self.spec
        cfg = PruneConfig(target_macs_reduction=s.prune_target, local_epochs=s.local_epochs, finetune_epochs=s.finetune_epochs,
                          temperature=s.temperature, alpha=s.alpha, teachers=tuple(s.teachers or ()),
                          distill_mode=s.distill_mode)
        summary = run_prune(Path(distilled), cfg, self.data, self._optim(1, lr=0.02), self.dir / "prune", self.ctx.device)
        return {"model": summary["final_model"], "val_acc": summary["steps"][-1]["val_acc"]}

    def _export(self, pruned: str) -> dict:
        eval_data = Path(self.spec.test_data or self.spec.data)
        onnx_path = self.dir / f"ean-job-{self.spec.job_id}.onnx"
        card, _ = export_checkpoint(Path(pruned), onnx_path, eval_data, parity_faces=256, threads=torch.get_num_threads())
        if not self.spec.quantize:
            return {"onnx": str(onnx_path), "float_onnx": str(onnx_path)}
        int8_path = onnx_path.with_name(onnx_path.stem + "-int8.onnx")
        quantize_model(onnx_path, int8_path, self._splits.train, 700, eval_data, torch.get_num_threads())
        return {"onnx": str(int8_path), "float_onnx": str(onnx_path)}

    def _evaluate(self, onnx_path: Path) -> dict:
        """The candidate and the version the fleet serves, on the same held-back faces (the validation split)."""
        held_back = self._splits.val
        candidate_model = OnnxFaceClassifier(onnx_path, intra_op_threads=1)
        p50, _ = latency_ms(candidate_model, held_back.x[:64], runs=300)
        complexity = onnx_complexity(onnx_path)
        candidate = {
            "accuracy": _accuracy(candidate_model, held_back.x, held_back.y),
            "latency_ms": p50,
            "size_bytes": onnx_path.stat().st_size,
            "macs": complexity.macs,
            "params": complexity.params,
        }
        desired = self.ctx.registry.desired()
        serving = None
        if desired is not None:
            _, blob = self.ctx.registry.fetch(desired.version)
            accuracy = _accuracy(OnnxFaceClassifier(blob, intra_op_threads=1), held_back.x, held_back.y)
            serving = {"version": desired.version, "accuracy": accuracy}
        self.ctx.status.update(self.spec.job_id, evaluation={"candidate": candidate, "serving": serving})
        return {"candidate": candidate, "serving": serving, "held_back_faces": len(held_back)}

    def _publish(self, onnx_path: Path, candidate: dict) -> dict:
        card_path = onnx_path.with_suffix(".json")
        metrics = card_metrics(json.loads(card_path.read_text())) if card_path.exists() else {}
        metrics.update(held_back_accuracy=candidate["accuracy"], macs_per_face=candidate["macs"],
                       params=candidate["params"], size_bytes=candidate["size_bytes"], job_id=self.spec.job_id)
        manifest = self.ctx.registry.publish(
            onnx_path.read_bytes(), onnx_path.stem, EXPECTED_INPUT, metrics, self.ctx.signer,
            promote=self.spec.promote, idempotency_key=self.spec.job_id,
        )
        return {"version": manifest.version}


def _accuracy(model: OnnxFaceClassifier, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x) == y))


