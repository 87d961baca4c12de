"""One dataclass field per setting: the flags, the EDGEFER_* variables and the job-spec check all come from it."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import pytest

from compression_worker.cli import build_parser as worker_parser
from compression_worker.service.settings import WorkerServiceSettings
from compression_worker.settings import WorkerSettings
from compression_worker.training.run import DataConfig
from edgefer.cli.jobs import build_parser as jobs_parser
from edgefer.cli.jobs import job_from_flags
from edgefer.jobs.recipe import (
    AugmentConfig,
    ExportConfig,
    ITSConfig,
    MixConfig,
    OptimConfig,
    PruneConfig,
    TeacherConfig,
)
from edgefer.jobs.spec import JobError, JobSpec
from edgefer.settings_fields import add_dataclass_arguments, dataclass_from_namespace, option, setting_docs


@dataclass(frozen=True)
class Inner:
    depth: int = 3  # how deep


@dataclass(frozen=True)
class Example:
    name: str  # required name
    ratio: float = option(0.5, flag="share")  # a share
    on: bool = True  # switch
    paths: tuple[Path, ...] = option((), flag="path")  # repeatable
    span: tuple[float, float] = (0.0, 1.0)  # two numbers
    mode: str = option("a", choices=("a", "b"))  # one of two
    inner: Inner = field(default_factory=Inner)


def parse(cls: type, argv: list[str], **kwargs) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, cls, **kwargs)
    return parser.parse_args(argv)


def test_flags_follow_the_fields() -> None:
    args = parse(Example, ["--name", "x", "--share", "0.7", "--no-on", "--path", "a", "--path", "b",
                           "--span", "0.2", "0.8", "--mode", "b", "--depth", "5"])
    assert dataclass_from_namespace(Example, args) == Example("x", 0.7, False, (Path("a"), Path("b")), (0.2, 0.8), "b",
                                                              Inner(5))
    assert dataclass_from_namespace(Example, parse(Example, ["--name", "x"])) == Example("x")


def test_a_bad_value_names_the_setting(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse(Example, ["--name", "x", "--share", "half"])
    assert "setting ratio: cannot read 'half' as float" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(Example, ["--name", "x", "--mode", "c"])


def test_omit_unset_keeps_only_what_was_given() -> None:
    args = parse(Example, ["--name", "x", "--depth", "4"], omit_unset=True)
    assert vars(args) == {"name": "x", "depth": 4}


@pytest.mark.parametrize("cls", [OptimConfig, AugmentConfig, MixConfig, DataConfig, ITSConfig, PruneConfig, JobSpec,
                                 TeacherConfig, ExportConfig, WorkerSettings, WorkerServiceSettings])
def test_every_field_has_help(cls: type) -> None:
    docs = setting_docs(cls)
    nested = {"augment", "mix", "recipe", "teacher", "optim", "distill", "prune", "export"}
    assert not [f.name for f in fields(cls) if f.name not in nested and not docs.get(f.name)]


def test_worker_flags_default_to_the_config_defaults() -> None:
    parser = worker_parser(WorkerSettings())
    args = parser.parse_args(["prune", "--model", "m.pt"])
    assert dataclass_from_namespace(PruneConfig, args, "prune") == PruneConfig()
    optim = dataclass_from_namespace(OptimConfig, args, "optim")
    assert optim == OptimConfig(epochs=1, lr=0.02)  # the prune stage's own defaults, nothing else changed
    args = parser.parse_args(["prune", "--model", "m.pt", "--target", "0.6", "--no-local-retraining", "--teacher", "a.onnx",
                              "--teacher", "b.onnx", "--mixup", "0.2", "--erase-prob", "0.5"])
    cfg = dataclass_from_namespace(PruneConfig, args, "prune")
    assert (cfg.target_macs_reduction, cfg.local_retraining, cfg.teachers) == (0.6, False, ("a.onnx", "b.onnx"))
    optim = dataclass_from_namespace(OptimConfig, args, "optim")
    assert optim.mix == MixConfig(mixup_alpha=0.2) and optim.augment == AugmentConfig(erase_prob=0.5)


def test_distill_flags_build_its_config(tmp_path: Path) -> None:
    teacher = tmp_path / "t.onnx"
    teacher.write_bytes(b"")
    args = worker_parser(WorkerSettings()).parse_args(
        ["distill", "--arch", "ean-xs", "--rounds", "1", "--no-weight-transfer", "--teacher", str(teacher), "--mode", "consistent"])
    cfg = dataclass_from_namespace(ITSConfig, args, "distill", arch=args.arch)
    assert cfg == ITSConfig(arch="ean-xs", rounds=1, weight_transfer=False, teachers=(teacher,), mode="consistent")


def test_threads_zero_means_all_cores_for_both_worker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFER_THREADS", "0")
    assert WorkerSettings.from_env().threads == WorkerServiceSettings.from_env().threads == (os.cpu_count() or 1)
    monkeypatch.setenv("EDGEFER_THREADS", "-1")
    with pytest.raises(ValueError, match="threads must be >= 0"):
        WorkerSettings.from_env()


def test_job_submit_flags_are_the_job_spec() -> None:
    args = jobs_parser().parse_args(["submit", "--data", "d.npz", "--prune-target", "0.6", "--teacher-file", "t.onnx",
                                     "--no-quantize", "--set", "rounds=1"])
    given = job_from_flags(args)
    assert given == {"data": "d.npz", "recipe": {"prune": {"target_macs_reduction": 0.6}, "teacher": {"files": ["t.onnx"]},
                                                 "export": {"quantize": False}}, "rounds": 1}
    recipe = JobSpec.parse(json.dumps(given)).recipe
    assert (recipe.prune.target_macs_reduction, recipe.teacher.files, recipe.export.quantize, recipe.distill.rounds) == (
        0.6, ["t.onnx"], False, 1)


@pytest.mark.parametrize(("setting", "value"), [("rounds", "2"), ("teachers", "t.onnx"), ("teachers", [1]),
                                                ("quantize", 1), ("alpha", True), ("usage", 3)])
def test_job_settings_are_checked_against_the_field_types(setting: str, value: object) -> None:
    with pytest.raises(JobError, match=f"job setting {setting}"):
        JobSpec.parse(json.dumps({"data": "d.npz", setting: value}))
