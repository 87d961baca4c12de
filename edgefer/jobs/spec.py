"""What a job asks for: its data, where it ships, and the compression recipe (edgefer/jobs/recipe.py), checked
when it is parsed, before any work starts.

A job's JSON nests like the recipe: `{"data": "train.npz", "recipe": {"distill": {"rounds": 2}}}`. The flat keys
of earlier releases (`rounds`, `temperature`, ...) are still read, each into the recipe settings it meant, with a
warning that names them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from edgefer.jobs.recipe import Recipe
from edgefer.rollouts.spec import RolloutSpec, RolloutSpecError
from edgefer.settings_fields import check_json_value, from_json, option

log = logging.getLogger(__name__)

# The flat job keys of earlier releases -> the recipe settings each one sets (temperature, alpha and the
# distillation mode applied to distillation and pruning alike).
FLAT_KEYS: dict[str, tuple[str, ...]] = {
    "arch": ("distill.arch",),
    "teacher": ("teacher.pick",),
    "teacher_arch": ("teacher.arch",),
    "teacher_epochs": ("teacher.epochs",),
    "teachers": ("teacher.files",),
    "rounds": ("distill.rounds",),
    "round_epochs": ("optim.epochs",),
    "temperature": ("distill.temperature", "prune.temperature"),
    "alpha": ("distill.alpha", "prune.alpha"),
    "distill_mode": ("distill.mode", "prune.distill_mode"),
    "ema_decay": ("optim.ema_decay",),
    "mixup": ("optim.mix.mixup_alpha",),
    "prune_target": ("prune.target_macs_reduction",),
    "local_epochs": ("prune.local_epochs",),
    "finetune_epochs": ("prune.finetune_epochs",),
    "quantize": ("export.quantize",),
    "int8_tolerance": ("export.int8_tolerance",),
    "seed": ("optim.seed",),
}


class JobError(ValueError):
    """A job that cannot run as given; the message goes into the job's status."""


@dataclass(frozen=True)
class JobSpec:
    data: str  # npz, fer2013.csv or a class folder, as the worker sees the path
    job_id: str = ""  # the job's name and idempotency key: resubmitting one id publishes once (unset: a random id)
    target_fleet: str = ""  # the fleet it compresses for: its device class, serving model, registry (unset: the worker's)
    usage: str | None = None  # with a fer2013.csv: the rows to train on
    extra_data: str | None = None  # more faces (npz, csv or class folder) merged into the data, split by the same rule
    test_data: str | None = None  # reported in the card, never used to decide
    held_back_seed: int = 0  # seed of the held-back split (keep it: stored teachers and the serving model share it)
    recipe: Recipe = field(default_factory=Recipe)
    promote: bool = True  # roll out a version that passes the gate (no: publish only)
    rollout: dict | None = option(None, doc="roll out step by step instead of promoting at once: a rollout spec "
                                  "(edgefer/rollouts/spec.py fields, {} for the defaults); the job ends when it is "
                                  "promoted or rolled back (edgefer-rollouts must run)")

    @classmethod
    def parse(cls, raw: str | bytes) -> JobSpec:
        """From the JSON a client submitted; unknown, mistyped or impossible settings are named."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise JobError(f"job is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise JobError("job must be a JSON object")
        if "data" not in data:
            raise JobError("job needs a data path")
        try:
            spec = from_json(cls, nest_flat_keys(data), "job")
        except ValueError as exc:
            raise JobError(str(exc)) from exc
        if spec.rollout is not None:
            try:
                RolloutSpec.from_dict(spec.rollout)
            except RolloutSpecError as exc:
                raise JobError(f"job setting rollout: {exc}") from exc
        return spec if spec.job_id else dataclasses.replace(spec, job_id=uuid.uuid4().hex[:12])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def nest_flat_keys(data: dict[str, Any], warn: bool = True) -> dict[str, Any]:
    """The job with its flat keys of earlier releases moved into `recipe` (a value given there wins); each one is
    checked against the setting it now sets, under the name it was given by."""
    flat = {key: value for key, value in data.items() if key in FLAT_KEYS}
    if not flat:
        return data
    nested = {key: value for key, value in data.items() if key not in FLAT_KEYS}
    recipe = nested.setdefault("recipe", {})
    if not isinstance(recipe, dict):
        raise JobError("job setting recipe must be a JSON object")
    for key, value in flat.items():
        for path in FLAT_KEYS[key]:
            try:
                check_json_value(key, recipe_field(path), value, "job")
            except ValueError as exc:
                raise JobError(str(exc)) from exc
            set_dotted(recipe, path, value, overwrite=False)
        if warn:
            log.warning("job setting %s is now %s (flat keys are read until the next release)",
                        key, " and ".join(f"recipe.{path}" for path in FLAT_KEYS[key]))
    return nested


def set_dotted(job: dict[str, Any], path: str, value: object, overwrite: bool = True) -> None:
    """Put `value` at a dotted path of a nested JSON object (`recipe.distill.rounds`), making the levels it needs."""
    *sections, name = path.split(".")
    part = job
    for section in sections:
        part = part.setdefault(section, {})
        if not isinstance(part, dict):
            raise JobError(f"job setting {section} must be a JSON object")
    if overwrite or name not in part:
        part[name] = value


def recipe_part(path: str) -> type:
    """The settings class that holds the recipe field a dotted path names (`optim.mix.mixup_alpha` -> MixConfig)."""
    part: Any = Recipe()
    for section in path.split(".")[:-1]:
        part = getattr(part, section)
    return type(part)


def recipe_field(path: str) -> dataclasses.Field:
    """The recipe field a dotted path names (`optim.mix.mixup_alpha`)."""
    name = path.rsplit(".", 1)[-1]
    return next(f for f in dataclasses.fields(recipe_part(path)) if f.name == name)
