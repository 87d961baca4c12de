"""`edgefer-jobs`: submit a compression job and follow it with a progress bar, or look at jobs.

    edgefer-jobs submit --data /data/fer2013/train.npz --prune.target 0.6 --distill.rounds 2 --follow
    edgefer-jobs status JOB_ID
    edgefer-jobs list
    edgefer-jobs lineage
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, fields
from typing import Any

import redis
from tqdm import tqdm

from edgefer.env_settings import EnvSettings
from edgefer.jobs.client import follow_job, submit_job
from edgefer.jobs.lineage import LineageIndex, format_lineage
from edgefer.jobs.recipe import Recipe
from edgefer.jobs.spec import FLAT_KEYS, JobError, JobSpec, nest_flat_keys, recipe_field, recipe_part, set_dotted
from edgefer.jobs.status import JobStatusStore
from edgefer.registry.connection import RegistryAccess, connect, describe_redis_error
from edgefer.settings_fields import add_dataclass_arguments, add_field_flag, flag_of, setting_docs


@dataclass(frozen=True)
class JobsCliSettings(RegistryAccess, EnvSettings):
    pass


def _add_job_flags(p: argparse.ArgumentParser) -> None:
    """A job's flags: its own fields, the flags of earlier releases (first, so they keep their meaning, e.g.
    --temperature for distillation and pruning), then every recipe setting dotted (--distill.temperature)."""
    add_dataclass_arguments(p, JobSpec, omit_unset=True, exclude=("recipe",))
    for key, paths in FLAT_KEYS.items():
        f = recipe_field(paths[0])
        flag = "--teacher-file" if key == "teachers" else "--" + key.replace("_", "-")
        dotted = [f"--{path.rsplit('.', 1)[0]}.{flag_of(recipe_field(path))[2:]}" for path in paths]
        text = f"{setting_docs(recipe_part(paths[0])).get(f.name, '')} (sets {', '.join(dotted)})"
        add_field_flag(p, f, [flag], f"flat.{key}", text, None, omit_unset=True)
    preset = Recipe()
    for part in fields(Recipe):
        add_dataclass_arguments(p, type(getattr(preset, part.name)), omit_unset=True, section=part.name,
                                dest_root="recipe.", base=getattr(preset, part.name),
                                exclude=("teachers", "student_init"), aliases=False)


def job_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The job's JSON from the flags given (dotted ones nested into `recipe`), then --set on top."""
    job: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("flat."):
            flat[dest[5:]] = value
        elif dest.startswith("recipe."):
            set_dotted(job, dest, list(value) if isinstance(value, tuple) else value)
        elif any(f.name == dest for f in fields(JobSpec)):
            job[dest] = value
    job = nest_flat_keys({**job, **flat}, warn=False)
    for key, value in args.set:
        set_dotted(job, key, value)
    return job


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def follow_with_bar(status: JobStatusStore, job_id: str) -> dict:
    """follow_job with a progress bar: stage, share done and the last validation accuracy."""
    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}") as bar:

        def show(record: dict) -> None:
            bar.n = record.get("percent", 0.0)
            bar.set_description(f"{job_id} {record.get('stage', record.get('state', 'queued'))}")
            last = record.get("last_epoch") or {}
            if "val_acc" in last:
                bar.set_postfix_str(f"epoch {record.get('epoch')}/{record.get('epochs')} val {100 * last['val_acc']:.1f}%")
            bar.refresh()

        return follow_job(status, job_id, show)


def describe(job_id: str, record: dict) -> str:
    lines = [f"job {job_id}: {record.get('state', 'unknown')} (stage {record.get('stage', '-')}, {record.get('percent', 0)}%)"]
    if record.get("error"):
        lines.append(f"  error: {record['error']}")
    evaluation = record.get("evaluation") or {}
    if candidate := evaluation.get("candidate"):
        line = f"  held back: candidate {_scores(candidate)}"
        if serving := evaluation.get("serving"):
            line += f" vs serving version {serving['version']} {_scores(serving)}"
        lines.append(line)
    gate = record.get("gate")
    if gate:
        lines.append(f"  gate: {'passed' if gate['passed'] else 'failed'} {'; '.join(gate['reasons'])}".rstrip())
    if record.get("published_version") is not None:
        lines.append(f"  published as version {record['published_version']}")
    return "\n".join(lines)


def _scores(result: dict) -> str:
    macro = f" (macro recall {100 * result['macro_recall']:.2f}%)" if "macro_recall" in result else ""
    return f"{100 * result['accuracy']:.2f}%{macro}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefer-jobs", description=__doc__.splitlines()[0])
    JobsCliSettings.add_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("submit", help="queue a job (its settings: the flags below, or --set key=value)")
    _add_job_flags(p)
    p.add_argument("--set", type=_setting, action="append", default=[],
                   help="a job setting by its JSON name, dotted into the recipe (recipe.distill.rounds=2), key=value "
                        "(repeatable; wins over the flag)")
    p.add_argument("--follow", action="store_true", help="show a progress bar until the job ends")
    p = sub.add_parser("status", help="one job")
    p.add_argument("job_id", help="the job's id, as `submit` or `list` printed it")
    sub.add_parser("list", help="recent jobs")
    sub.add_parser("lineage", help="the stored teachers and students jobs start from (sha256, accuracy, parent)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = JobsCliSettings.from_namespace(args)
    try:
        client = connect(settings)
        status = JobStatusStore(client, settings.fleet)
        if args.command == "submit":
            spec = JobSpec.parse(json.dumps(job_from_flags(args), default=str))
            submit_job(client, spec, settings.fleet)
            print(f"submitted job {spec.job_id}")
            if args.follow:
                record = follow_with_bar(status, spec.job_id)
                print(describe(spec.job_id, record))
                return 0 if record.get("state") == "published" else 1
        elif args.command == "status":
            record = status.get(args.job_id)
            if record is None:
                raise JobError(f"no job {args.job_id}")
            print(describe(args.job_id, record))
        elif args.command == "lineage":
            artefacts = LineageIndex(client).all()
            print(format_lineage(artefacts) if artefacts else "no stored teachers or students yet (a job stores its own)")
        else:
            for job_id, record in status.recent():
                print(describe(job_id, record).splitlines()[0])
    except JobError as exc:
        print(f"edgefer-jobs: error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"edgefer-jobs: error: {describe_redis_error(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
