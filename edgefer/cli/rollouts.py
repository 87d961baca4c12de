"""`edgefer-registry rollout ...`: start a progressive rollout, follow it, pause, resume or abort it."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from pathlib import Path

from edgefer.registry.store import ModelRegistry
from edgefer.rollouts.settle import settle
from edgefer.rollouts.spec import METRICS, RolloutSpec, merge_checks, parse_check, parse_steps
from edgefer.rollouts.start import start_rollout
from edgefer.rollouts.store import FINAL, RolloutError, RolloutRecord, RolloutStore
from edgefer.rollouts.verdict import check_lines
from edgefer.settings_fields import add_dataclass_arguments


def add_rollout_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollout", help="progressive delivery: canary steps judged on field statistics")
    actions = p.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="roll VERSION out step by step (the controller, edgefer-rollouts, acts)")
    start.add_argument("version", type=int, help="a published version number")
    start.add_argument("--spec", type=Path, help="a JSON rollout spec; flags given below override its fields")
    start.add_argument("--force", action="store_true", help="replace a rollout record that cannot be read")
    start.add_argument("--steps", help="canary steps: shares in percent ending at 100, each SHARE[:BAKE][:pause] "
                       "(e.g. 10,50:10m:pause,100; default 5,25,50,100)")
    start.add_argument("--bake", help="the longest bake of every step (a :BAKE in --steps wins; default 5m)")
    start.add_argument("--check", action="append", default=[], metavar="METRIC=EFFECT[@CONFIDENCE]",
                       help="set a check's effect floor (and confidence), or add one; metrics: " + ", ".join(METRICS))
    add_dataclass_arguments(start, RolloutSpec, exclude=("steps", "checks"), omit_unset=True)
    show = actions.add_parser("status", help="the rollout's state, step, last analysis and recent decisions")
    show.add_argument("--wait", action="store_true", help="until the rollout ends (exit 0 promoted, 1 otherwise)")
    show.add_argument("--timeout", type=float, default=600.0, help="with --wait: seconds (default: %(default)s)")
    for name, text in (
        ("pause", "hold the rollout at its step (the canary keeps serving)"),
        ("resume", "continue a paused or held rollout: the step's window opens again"),
        ("abort", "end the rollout: every node back to the stable version"),
    ):
        command = actions.add_parser(name, help=text)
    command.add_argument("--force", action="store_true",
                         help="remove a rollout record that cannot be read (the desired record is left as it is)")


def spec_from_args(args: argparse.Namespace) -> RolloutSpec:
    """The --spec file (or the defaults) with the flags given on top of it."""
    spec = (RolloutSpec.from_file(args.spec) if args.spec else RolloutSpec()).to_dict()
    spec.update({f.name: getattr(args, f.name) for f in fields(RolloutSpec)
                 if f.name not in ("steps", "checks") and hasattr(args, f.name)})
    if args.steps is not None:
        spec["steps"] = parse_steps(args.steps, args.bake)
    elif args.bake is not None:
        spec["steps"] = [{**step, "bake": args.bake} for step in spec["steps"]]
    spec["checks"] = merge_checks(list(spec["checks"]), [parse_check(text) for text in args.check])
    return RolloutSpec.from_dict(spec)


def run_rollout(args: argparse.Namespace, registry: ModelRegistry) -> int:
    store = RolloutStore(registry.client, registry.keys)
    if args.action == "start":
        record = start_rollout(registry, args.version, spec_from_args(args), "operator", args.force)
        print(
            f"rollout of version {record.version} against {record.stable} started: steps "
            f"{', '.join(f'{s.share:g}%' for s in record.rollout_spec().steps)}, checks "
            f"{', '.join(c.metric for c in record.rollout_spec().checks)} (edgefer-rollouts moves it on)"
        )
        return 0
    if args.action == "abort" and args.force:
        print(f"removed an unreadable rollout record ({store.discard_unreadable()}); the desired record is as it was")
        return 0
    if args.action in ("pause", "resume", "abort"):
        record = store.update(lambda old: _command(old, args.action))
        if record.state in FINAL:  # an abort takes the canary away now, controller or not
            record = settle(registry, store, record) or record
        print(f"rollout of version {record.version}: {record.state} ({record.reason})")
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        record = store.get()
        if record is None:
            print("no rollout")
            return 0
        if not args.wait or record.state in FINAL or time.monotonic() >= deadline:
            print(describe_rollout(record, store.decisions(5)))
            return 0 if not args.wait or record.state == "promoted" else 1
        time.sleep(1.0)


def _command(old: RolloutRecord | None, action: str) -> RolloutRecord:
    if old is None or not old.active:
        raise RolloutError(f"no active rollout to {action}" + (f" (the last one {old.state})" if old else ""))
    if action == "pause":
        return replace(old, state="paused", reason="paused by the operator")
    if action == "resume":
        return replace(
            old,
            state="running",
            baseline={},
            bake_started=0.0,
            look_faces=0,
            settle_until=time.time() + old.rollout_spec().settle_s(),
            reason="resumed by the operator: the window opens again",
        )
    return replace(old, state="aborted", reason="aborted by the operator")


def describe_rollout(record: RolloutRecord, decisions: list[dict]) -> str:
    lines = [
        (f"rollout of version {record.version} (stable {record.stable}): {record.state}, step {record.step + 1} of "
        f"{len(record.rollout_spec().shares())} ({record.share():g}%), canary nodes {', '.join(record.canary_nodes) or '-'}"),
        f"  {record.reason}",
    ]
    analysis = record.last_analysis
    if analysis:
        look = f" at look {analysis['look']}" if "look" in analysis else ""
        lines.append(f"  last analysis: {analysis['verdict']}{look}")
        lines.extend(f"    {line}" for line in check_lines(analysis))
    for entry in decisions:
        lines.append(
            f"  {time.strftime('%H:%M:%S', time.localtime(entry['time']))} step {entry['step']} "
            f"{entry['decision']}: {entry['reason']}"
        )
    return "\n".join(lines)
