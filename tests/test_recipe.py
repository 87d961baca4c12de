"""The compression recipe declared once: a job's nested JSON, the flat keys of earlier releases, the dotted flags
of the worker's stages, and the lineage key that covers every setting that made a student."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from compression_worker.cli import build_parser as worker_parser
from compression_worker.settings import WorkerSettings
from edgefer.jobs.recipe import ITSConfig, OptimConfig, Recipe
from edgefer.jobs.spec import FLAT_KEYS, JobError, JobSpec, recipe_field
from edgefer.settings_fields import dataclass_from_namespace


def test_a_nested_job_overrides_only_what_it_names_and_round_trips() -> None:
    spec = JobSpec.parse(json.dumps({"data": "d.npz", "recipe": {"distill": {"rounds": 2},
                                                                  "optim": {"augment": {"scale_range": [0.8, 1.2]}}}}))
    preset = Recipe()
    assert spec.recipe.distill == replace(preset.distill, rounds=2)
    assert spec.recipe.optim.augment.scale_range == (0.8, 1.2) and spec.recipe.optim.epochs == preset.optim.epochs
    assert spec.recipe.prune == preset.prune and JobSpec.parse(spec.to_json()) == spec


def test_flat_keys_of_earlier_releases_are_read_into_the_recipe_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="edgefer.jobs.spec"):
        spec = JobSpec.parse(json.dumps({"data": "d.npz", "temperature": 3.0, "round_epochs": 4, "mixup": 0.2}))
    assert spec.recipe.distill.temperature == spec.recipe.prune.temperature == 3.0
    assert (spec.recipe.optim.epochs, spec.recipe.optim.mix.mixup_alpha) == (4, 0.2)
    assert "job setting temperature is now recipe.distill.temperature and recipe.prune.temperature" in caplog.text
    assert "recipe.optim.mix.mixup_alpha" in caplog.text


def test_every_flat_key_names_a_recipe_setting() -> None:
    for paths in FLAT_KEYS.values():
        for path in paths:
            assert recipe_field(path).name == path.rsplit(".", 1)[-1]


@pytest.mark.parametrize(("job", "message"), [
    ({"recipe": {"distill": {"arch": "ean-huge"}}}, "unknown architecture 'ean-huge'"),
    ({"recipe": {"distill": {"mode": "live"}}}, "unknown recipe.distill.mode 'live'"),
    ({"recipe": {"optim": {"lr": "fast"}}}, "job setting recipe.optim.lr: 'fast' is not float"),
    ({"recipe": {"prune": {"lr": -1.0}}}, "the retraining lr must be positive"),
    ({"recipe": {"distill": {"teachers": ["t.onnx"]}}}, "a job's teachers are recipe.teacher"),
    ({"recipe": {"optim": {"warp": 1}}}, "unknown job settings: recipe.optim.warp"),
    ({"recipe": {"teacher": {"pick": "nonsense"}}}, "teacher must be best, train or an artefact's sha256"),
    ({"recipe": []}, "job recipe must be a JSON object"),
])
def test_a_bad_recipe_setting_is_named_at_parse(job: dict, message: str) -> None:
    with pytest.raises(JobError, match=message.replace("(", r"\(")):
        JobSpec.parse(json.dumps({"data": "d.npz", **job}))


def test_stage_flags_are_dotted_and_keep_their_short_names() -> None:
    parser = worker_parser(WorkerSettings())
    dotted = parser.parse_args(["distill", "--distill.temperature", "3", "--optim.lr", "0.05",
                                "--optim.augment.hflip-prob", "0.3", "--optim.mix.mixup", "0.2"])
    short = parser.parse_args(["distill", "--temperature", "3", "--lr", "0.05", "--hflip-prob", "0.3", "--mixup", "0.2"])
    for args in (dotted, short):
        assert dataclass_from_namespace(ITSConfig, args, "distill", arch=args.arch).temperature == 3.0
        optim = dataclass_from_namespace(OptimConfig, args, "optim")
        assert (optim.lr, optim.augment.hflip_prob, optim.mix.mixup_alpha, optim.epochs) == (0.05, 0.3, 0.2, 20)


def test_the_student_key_changes_with_any_setting_that_made_the_student_and_no_other() -> None:
    recipe = Recipe()
    key = recipe.student_key("t" * 64)
    assert recipe.student_key("u" * 64) != key
    assert replace(recipe, optim=replace(recipe.optim, label_smoothing=0.1)).student_key("t" * 64) != key
    assert replace(recipe, distill=replace(recipe.distill, restart_lr=0.01)).student_key("t" * 64) != key
    assert replace(recipe, prune=replace(recipe.prune, finetune_epochs=2)).student_key("t" * 64) == key
