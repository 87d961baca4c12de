"""One job through the pipeline: teacher -> ITS -> prune -> export (+INT8) -> evaluate -> gate -> publish.

The teacher comes from the lineage store when it holds one for this data (`teacher=best`, the default) and is
trained (and stored) otherwise; the distilled student is stored too. Pruning aims at the job's fleet's MAC
budget, and the gate uses that fleet's budgets and compares with what that fleet serves.

Every stage writes its outputs into the job's work directory and records itself in stages.json when
it is complete, so a worker that was killed resumes the job at the first unfinished stage (and the
training stages resume at their last epoch). Publishing is idempotent by job id.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import torch

from compression_worker.complexity import onnx_complexity
from compression_worker.distill.its import run_its
from compression_worker.latency import latency_ms
from compression_worker.lineage_store import LineageStore, file_sha256, trained_within
from compression_worker.prune.run import run_prune
from compression_worker.prune.structure import reduction_to_budget
from compression_worker.release import export_checkpoint, quantize_model
from compression_worker.service.gate import GateConfig, decide
from compression_worker.service.metrics import WorkerMetrics
from compression_worker.training.checkpoint import load_model
from compression_worker.training.progress import epoch_listener
from compression_worker.training.resumable import write_json_atomic
from compression_worker.training.run import DataConfig, DataSplits, load_splits, train_model
from edgefer.classification_report import ClassificationReport
from edgefer.datasets import Faces
from edgefer.jobs.lineage import Artefact, LineageError
from edgefer.jobs.spec import JobError, JobSpec
from edgefer.jobs.status import JobStatusStore
from edgefer.labels import CLASSES
from edgefer.onnx_model import OnnxFaceClassifier
from edgefer.registry.manifest import EXPECTED_INPUT, card_metrics
from edgefer.registry.signing import ManifestSigner
from edgefer.registry.store import ModelRegistry
from edgefer.rollouts.spec import RolloutSpec
from edgefer.rollouts.start import start_rollout
from edgefer.rollouts.store import FINAL, RolloutStore

MAX_PRUNE = 0.9


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
    lineage: LineageStore
    threads: int  # torch's and onnxruntime's (resolved: 0 already means all cores)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


class JobRunner:
    """Runs (or resumes) one job; returns its outcome: published or rejected (errors raise)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.spec = ctx.spec
        self.recipe = ctx.spec.recipe
        self.dir = ctx.workdir
        s, r = self.spec, self.recipe
        self.data = DataConfig(Path(s.data), None, 0.1, s.held_back_seed, s.usage, Path(s.extra_data) if s.extra_data else None)
        self._ledger = self.dir / "stages.json"
        self._done: dict[str, dict] = json.loads(self._ledger.read_text()) if self._ledger.exists() else {}
        self._weights = {
            "teacher": r.teacher.epochs, "distill": r.distill.rounds * r.optim.epochs,
            "prune": r.prune.local_epochs + r.prune.finetune_epochs,
            "export": 2, "evaluate": 1, "gate": 0, "publish": 0, "rollout": 0,
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
        evaluation = self._stage("evaluate", lambda: self._evaluate(Path(candidate["onnx"]), candidate.get("held_back")))
        gate = self._stage("gate", lambda: decide(self.ctx.gate, evaluation["candidate"], evaluation["serving"]).to_dict())
        self.ctx.status.update(self.spec.job_id, gate=gate)
        if not gate["passed"]:
            return "rejected"
        lineage = {"teacher": teacher.get("sha256"), "student": self._done["distill"].get("sha256"),
                   "data": self._identity, "split": self.data.split_rule()}
        published = self._stage("publish", lambda: self._publish(Path(candidate["onnx"]), evaluation["candidate"], lineage))
        self.ctx.status.update(self.spec.job_id, published_version=published["version"])
        metrics, fleet = self.ctx.metrics, self.ctx.registry.keys.fleet
        metrics.last_published_accuracy.labels(fleet).set(evaluation["candidate"]["accuracy"])
        metrics.last_published_version.labels(fleet).set(published["version"])
        if self.spec.rollout is None:
            if self.spec.promote:
                metrics.last_promoted_version.labels(fleet).set(published["version"])
            return "published"
        rollout = self._stage("rollout", lambda: self._rollout(published["version"]))
        if rollout["state"] != "promoted":
            return "rolled_back"
        metrics.last_promoted_version.labels(fleet).set(published["version"])
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
    def _identity(self) -> str:
        return self.data.identity()

    @cached_property
    def _splits(self) -> DataSplits:
        """The job's train/held-back split, read once for the stages after training (export, evaluate)."""
        return load_splits(self.data)

    # -- stages -----------------------------------------------------------------------------------

    def _teacher(self) -> dict:
        s, given = self.spec, self.recipe.teacher
        if given.files:
            return {"models": list(given.files), "source": "given", "sha256": file_sha256(Path(given.files[0]))}
        if given.pick != "train" and (stored := self._stored_teachers()):
            first = stored[0]
            found = {"sha256": first.sha256, "source": "lineage", "arch": first.arch, "val_acc": first.held_back_accuracy}
            if len(stored) == 1:
                return {"model": str(self.ctx.lineage.path(first.sha256)), **found}
            return {"models": [str(self.ctx.lineage.path(a.sha256)) for a in stored],
                    "members": [a.sha256 for a in stored], **found}
        arch = given.arch or self.recipe.distill.arch
        optim = replace(self.recipe.optim, epochs=given.epochs)
        summary = train_model(arch, self.data, optim, self.dir / "teacher", self.ctx.device)
        artefact = self.ctx.lineage.add(self.dir / "teacher" / "model.pt", kind="teacher", arch=arch, data=self._identity,
                                        split=self.data.split_rule(), held_back_accuracy=summary["best_val_acc"],
                                        job_id=s.job_id)
        return {"model": str(self.dir / "teacher" / "model.pt"), "sha256": artefact.sha256, "source": "trained",
                "arch": arch, "val_acc": summary["best_val_acc"]}

    def _stored_teachers(self) -> list[Artefact]:
        """teacher=best: the most accurate stored models this job's held-back faces can judge, up to `ensemble` of
        them, best first (none: train one); teacher=<sha256>: that artefact, refused when it may have trained
        on this job's held-back faces."""
        split = self.data.split_rule()
        if self.recipe.teacher.pick == "best":
            return self.ctx.lineage.best(self._identity, split, self.recipe.teacher.ensemble)
        try:
            artefact = self.ctx.lineage.find(self.recipe.teacher.pick)
        except LineageError as exc:
            raise JobError(str(exc)) from exc
        if not trained_within(artefact, self._identity, split):
            raise JobError(f"teacher {artefact.sha256[:12]} trained on other data or another split ({artefact.split}): "
                           "it may have seen this job's held-back faces")
        return [artefact]

    def _distill(self, teachers: list[str]) -> dict:
        """ITS from the teacher, or the student an earlier job distilled with the same recipe (then nothing trains)."""
        r = self.recipe
        if r.distill.rounds == 0:
            return {"model": teachers[0]}
        recipe = r.student_key(self._teacher_identity(teachers))
        split = self.data.split_rule()
        if (stored := self.ctx.lineage.student(recipe, self._identity, split)) is not None:
            return {"model": str(self.ctx.lineage.path(stored.sha256)), "val_acc": stored.held_back_accuracy,
                    "sha256": stored.sha256, "source": "lineage"}
        cfg = replace(r.distill, teachers=tuple(Path(t) for t in teachers),
                      view_cache=self._view_cache(teachers, r.distill.views) if r.distill.mode == "views" else None)
        summary = run_its(cfg, self.data, r.optim, self.dir / "distill", self.ctx.device, self.ctx.threads)
        val_acc = summary["rounds"][-1]["val_acc"]
        artefact = self.ctx.lineage.add(Path(summary["final_model"]), kind="student", arch=cfg.arch, data=self._identity,
                                        split=split, held_back_accuracy=val_acc, recipe=recipe,
                                        parent=self._done["teacher"].get("sha256"), job_id=self.spec.job_id)
        return {"model": summary["final_model"], "val_acc": val_acc, "sha256": artefact.sha256, "source": "trained"}

    def _teacher_identity(self, teachers: list[str]) -> str:
        """The teacher's bytes, as the lineage knows them (an ensemble: each file's)."""
        teacher = self._done["teacher"]
        if len(teachers) == 1:
            return teacher.get("sha256") or file_sha256(Path(teachers[0]))
        return ",".join(teacher.get("members") or map(file_sha256, map(Path, teachers)))

    def _prune(self, distilled: str) -> dict:
        target = self._prune_target(Path(distilled))
        if target is None:
            return {"model": distilled, "target": 0.0, "note": "the distilled model fits the fleet's MAC budget"}
        teachers = self._prune_teachers()
        cfg = replace(self.recipe.prune, target_macs_reduction=target, teachers=teachers)
        if cfg.distill_mode == "views" and teachers:  # the job's teacher: the distillation's views when they match
            cfg = replace(cfg, view_cache=self._view_cache(list(teachers), cfg.views))
        summary = run_prune(Path(distilled), cfg, self.data, replace(self.recipe.optim, epochs=1), self.dir / "prune",
                            self.ctx.device, self.ctx.threads)
        return {"model": summary["final_model"], "val_acc": summary["steps"][-1]["val_acc"], "target": target}

    def _view_cache(self, teachers: list[str], views: int) -> Path:
        """Where the views of this job's faces by these teacher files are kept: beside the lineage, so the next job
        with the same teacher, data and augmentation starts training at once (its first job makes them)."""
        made_by = [self._teacher_identity(teachers), views, self.recipe.optim.augment.to_dict(), self._identity,
                   self.data.split_rule()]
        return self.ctx.lineage.views_folder(hashlib.sha256(json.dumps(made_by).encode()).hexdigest()[:16])

    def _prune_teachers(self) -> tuple[str, ...]:
        """Pruning keeps distilling from the better of the job's teacher and its distilled student (the student
        itself when it is the better: the ITS refinement; given teacher files always)."""
        teacher, student = self._done["teacher"], self._done["distill"]
        if "models" in teacher:
            return tuple(teacher["models"])
        if teacher.get("val_acc", 0.0) > student.get("val_acc", 0.0):
            return (teacher["model"],)
        return ()

    def _prune_target(self, distilled: Path) -> float | None:
        """The job's share of MACs to remove, or what reaches the fleet's budget (None: it fits already)."""
        if self.recipe.prune.target_macs_reduction is not None:
            return self.recipe.prune.target_macs_reduction
        needed = reduction_to_budget(load_model(distilled).config, self.ctx.gate.budgets.max_macs)
        if needed <= 0:
            return None
        if needed >= MAX_PRUNE:
            raise JobError(f"the fleet's budget of {self.ctx.gate.budgets.max_macs:,} MACs needs {100 * needed:.0f}% of "
                           f"{self.recipe.distill.arch} pruned (at most {100 * MAX_PRUNE:.0f}%): choose a smaller arch")
        return needed

    def _export(self, pruned: str) -> dict:
        eval_data = Path(self.spec.test_data or self.spec.data)
        onnx_path = self.dir / f"ean-job-{self.spec.job_id}.onnx"
        release = self.recipe.export
        export_checkpoint(Path(pruned), onnx_path, eval_data, parity_faces=release.parity_faces, threads=self.ctx.threads)
        if not release.quantize:
            return {"onnx": str(onnx_path), "float_onnx": str(onnx_path)}
        int8_path = onnx_path.with_name(onnx_path.stem + "-int8.onnx")
        quantize_model(onnx_path, int8_path, self._splits.train, release.calibration_faces, eval_data, self.ctx.threads)
        scores = {p: _scores(OnnxFaceClassifier(p, intra_op_threads=self.ctx.threads), self._splits.val)
                  for p in (onnx_path, int8_path)}
        float_acc, int8_acc = scores[onnx_path]["accuracy"], scores[int8_path]["accuracy"]
        kept = int8_path if int8_acc >= float_acc - release.int8_tolerance else onnx_path
        return {"onnx": str(kept), "float_onnx": str(onnx_path), "int8_onnx": str(int8_path),
                "held_back_float": float_acc, "held_back_int8": int8_acc, "held_back": scores[kept]}

    def _evaluate(self, onnx_path: Path, scored: dict | None = None) -> dict:
        """The candidate and the version the fleet serves, on the same held-back faces (the validation split);
        `scored`: the candidate's scores on them when the export stage already measured it (INT8 or float)."""
        held_back = self._splits.val
        candidate_model = OnnxFaceClassifier(onnx_path, intra_op_threads=self.ctx.gate.budgets.latency_threads)
        p50, _ = latency_ms(candidate_model, held_back.x[:64], runs=300)
        complexity = onnx_complexity(onnx_path)
        candidate = {
            **(scored or _scores(candidate_model, held_back)),
            "latency_ms": p50,
            "size_bytes": onnx_path.stat().st_size,
            "macs": complexity.macs,
            "params": complexity.params,
        }
        desired = self.ctx.registry.desired()
        serving = None
        if desired is not None:
            _, blob = self.ctx.registry.fetch(desired.version)
            serving = {"version": desired.version, **_scores(OnnxFaceClassifier(blob, intra_op_threads=1), held_back)}
        self.ctx.status.update(self.spec.job_id, evaluation={"candidate": candidate, "serving": serving})
        return {"candidate": candidate, "serving": serving, "held_back_faces": len(held_back)}

    def _publish(self, onnx_path: Path, candidate: dict, lineage: dict) -> dict:
        card_path = onnx_path.with_suffix(".json")
        metrics = card_metrics(json.loads(card_path.read_text())) if card_path.exists() else {}
        metrics.update(held_back_accuracy=candidate["accuracy"], macs_per_face=candidate["macs"],
                       params=candidate["params"], size_bytes=candidate["size_bytes"], job_id=self.spec.job_id)
        manifest = self.ctx.registry.publish(
            onnx_path.read_bytes(), onnx_path.stem, EXPECTED_INPUT, metrics, self.ctx.signer,
            promote=self.spec.promote and self.spec.rollout is None, idempotency_key=self.spec.job_id, lineage=lineage,
        )
        return {"version": manifest.version}

    def _rollout(self, version: int) -> dict:
        """Hand the version to the rollout controller and wait until it is promoted or rolled back (a worker
        restarted meanwhile finds the rollout running and waits again)."""
        spec = RolloutSpec.from_dict(self.spec.rollout or {})
        store = RolloutStore(self.ctx.registry.client, self.ctx.registry.keys)
        record = store.get()
        if record is None or record.version != version:
            record = start_rollout(self.ctx.registry, version, spec, f"job {self.spec.job_id}")
        limit_s = rollout_deadline_s(spec)
        deadline = time.monotonic() + limit_s
        while True:
            summary = {"state": record.state, "step": record.step + 1, "reason": record.reason}
            self.ctx.status.update(self.spec.job_id, rollout=summary)
            if record.state in FINAL:
                return {"state": record.state, "reason": record.reason}
            if time.monotonic() > deadline:
                raise JobError(f"the rollout of version {version} did not end in {limit_s:.0f}s "
                               f"({record.state}: {record.reason}); is edgefer-rollouts running for this fleet?")
            self.ctx.keep_alive()
            time.sleep(1.0)
            record = store.get()


def rollout_deadline_s(spec: RolloutSpec) -> float:
    """Long enough for every step to settle and bake to its end, with room for slow convergence."""
    return 2 * spec.longest_s() + 120


def _scores(model: OnnxFaceClassifier, faces: Faces) -> dict:
    """Top-1, per-class recall (FER2013 order) and macro recall on the held-back faces."""
    report = ClassificationReport.from_predictions(faces.y, model.predict(faces.x))
    return {"accuracy": report.accuracy, "recall": [report.per_class_recall[name] for name in CLASSES],
            "macro_recall": report.macro_recall}


