"""`edgefer-registry`: the operator's view of a fleet's model registry.

keygen, publish a model file (with its card), list versions, show or set the desired record (promote,
canary, rollback), show or set the fleet's device class (profile) and a fleet status table that can wait
until every live node serves its target.
Errors are one line naming the file or version and the problem, with exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import redis

from edgefer.cli.rollouts import add_rollout_commands, describe_rollout, run_rollout
from edgefer.env_settings import EnvSettings
from edgefer.onnx_model import ModelFileError, OnnxFaceClassifier
from edgefer.registry.connection import RegistryAccess, connect, describe_redis_error
from edgefer.registry.desired import DesiredRecord
from edgefer.registry.manifest import EXPECTED_INPUT, Manifest, card_metrics
from edgefer.registry.profile import FleetProfile, ProfileError
from edgefer.registry.signing import KeyFileError, ManifestSigner, generate_keypair
from edgefer.registry.status import fleet_converged
from edgefer.registry.store import ModelRegistry, RegistryError
from edgefer.registry.version import version_label
from edgefer.rollouts.spec import RolloutSpecError
from edgefer.rollouts.store import RolloutError, RolloutStore
from edgefer.settings_fields import add_dataclass_arguments


@dataclass(frozen=True)
class RegistryCliSettings(RegistryAccess, EnvSettings):
    signing_key: Path | None = None  # Ed25519 private key (publish only)
    stale_after_s: float = 15.0  # a node whose heartbeat is older is shown stale


class CliError(Exception):
    pass


def read_model(path: Path, card_path: Path | None) -> tuple[bytes, dict, dict]:
    """Model bytes, declared input and card metrics, refusing what no node would serve."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read model file ({exc.strerror})") from exc
    try:
        input_spec = OnnxFaceClassifier(blob).input_spec()
    except ModelFileError as exc:
        raise CliError(f"{path}: {exc}") from exc
    if input_spec != EXPECTED_INPUT:
        raise CliError(f"{path}: input {input_spec} is not the {EXPECTED_INPUT} every node serves")
    card_path = card_path or path.with_suffix(".json")
    if not card_path.exists():
        return blob, input_spec, {}
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{card_path}: unreadable model card ({exc})") from exc
    if card.get("file_sha256") not in (None, hashlib.sha256(blob).hexdigest()):
        raise CliError(f"{card_path}: the card describes another file (file_sha256 differs from {path})")
    return blob, input_spec, card_metrics(card)


def _print_versions(manifests: list[Manifest], desired: DesiredRecord | None) -> None:
    print(f"{'version':>7}  {'name':<20} {'created':<20} {'parent':>6}  {'size':>9}  {'test acc':>8}  state")
    for m in manifests:
        state = []
        if desired and m.version == desired.version:
            state.append("desired")
        if desired and desired.canary and m.version == desired.canary.version:
            state.append("canary")
        acc = m.metrics.get("test_public_accuracy")
        acc_text = f"{100 * acc:.2f}%" if isinstance(acc, float) else "-"
        parent = str(m.parent) if m.parent is not None else "-"
        print(f"{m.version:>7}  {m.name:<20} {m.created:<20} {parent:>6}  {m.size:>9}  {acc_text:>8}  {','.join(state)}")


def _print_desired(desired: DesiredRecord | None) -> None:
    if desired is None:
        print("no desired version yet (publish with --promote, or promote a version)")
        return
    print(f"desired version {desired.version} (revision {desired.revision}, updated {desired.updated})")
    if desired.canary:
        c = desired.canary
        print(f"canary version {c.version} on nodes {c.nodes or '-'} and {c.percent:g}% of the rest")
    if desired.previous is not None:
        print(f"rollback target {desired.previous}")


CLOCK_SKEW_SHOWN_S = 2.0  # a board clock this far off the server's is shown in `status` (liveness ignores it)


def _print_status(registry: ModelRegistry, stale_after_s: float) -> bool:
    """The fleet table; "converged" only when every live node serves its target's bytes (sha256)."""
    desired, problem = registry.desired_or_problem()
    if problem:
        print(f"desired record: {problem}; `promote VERSION --force` replaces it")
    now = registry.server_time()  # heartbeats by the server's clock; the board's own is the `clock` column
    rows = registry.fleet_view(desired, stale_after_s, now)
    epoch = registry.current_epoch()
    print(f"{'node':<24} {'serving':>8} {'target':>7} {'sha256':<12} {'epoch':<8} {'heartbeat':>10} {'clock':>8}  "
          f"{'state':<10} last error")
    for r in rows:
        status = r.status
        serving = status.version if status and status.version is not None else "-"
        target = version_label(r.target) if r.target is not None else "-"
        node_epoch = status.epoch[:8] if status and status.epoch else "-"
        if status and status.epoch and status.epoch != epoch:
            node_epoch += "!"  # a version of a registry that has since lost its data
        error = r.unreadable or "; ".join(e for e in ((status.last_error, status.local_error) if status else ()) if e)
        sha = status.sha256[:12] if status and status.sha256 else "-"
        skew = r.clock_skew_s
        clock = "-" if skew is None else ("ok" if abs(skew) < CLOCK_SKEW_SHOWN_S else f"{skew:+.0f}s")
        print(f"{r.node_id:<24} {serving:>8} {target:>7} {sha:<12} {node_epoch:<8} {now - r.last_seen:>9.1f}s {clock:>8}  "
              f"{r.state:<10} {error}")
    converged = fleet_converged(rows)
    print(f"{len(rows)} nodes, {sum(not r.stale for r in rows)} live, converged: {'yes' if converged else 'no'}"
          f" (registry epoch {epoch[:8] or '-'})")
    if registry.latest_version() is None:
        print(f"the registry of fleet {registry.keys.fleet} holds no version: "
              "`edgefer-registry publish MODEL.onnx --promote` stores and rolls out one")
    elif desired is None:
        print("no desired version: `edgefer-registry promote VERSION` rolls one out")
    if not rows:
        print("no node has reported to this fleet yet (nodes need the same --fleet and --redis-url)")
    try:
        rollout = RolloutStore(registry.client, registry.keys).get()
    except RolloutError as exc:  # shown, not fatal: the exit code says whether the fleet converged
        print(f"rollout record: {exc}")
    else:
        if rollout is not None and rollout.active:
            print(describe_rollout(rollout, []))
    try:
        registry.stored_profile()
    except ProfileError as exc:
        print(f"fleet profile: {exc}")
    return converged


def _profile(registry: ModelRegistry, args: argparse.Namespace) -> None:
    """Show the fleet's device class, or change the fields given (the rest stay as stored)."""
    try:
        stored, unreadable = registry.stored_profile(), ""
    except ProfileError as exc:
        if args.action != "set":
            raise
        stored, unreadable = None, str(exc)  # `set` replaces it, starting from the default device class
    if args.action == "set":
        changes = {f.name: getattr(args, f.name) for f in fields(FleetProfile) if hasattr(args, f.name)}
        if not changes:
            raise CliError("profile set: give at least one field to change (see `profile set --help`)")
        registry.set_profile(replace(stored or FleetProfile(), **changes))
        if unreadable:
            print(f"replaced an unreadable profile ({unreadable}); fields not given are the defaults")
        stored = registry.stored_profile()
    shown = stored or FleetProfile()
    origin = "" if stored else " (none stored: the default device class)"
    print(f"fleet {registry.keys.fleet}{origin}: {shown.describe()}")


def run(args: argparse.Namespace, settings: RegistryCliSettings) -> int:
    if args.command == "keygen":
        print(f"key {generate_keypair(args.private, args.public)}: private {args.private}, public {args.public}")
        return 0
    registry = ModelRegistry(connect(settings), settings.fleet)
    if args.command == "publish":
        if settings.signing_key is None:
            raise CliError("publish needs --signing-key (or EDGEFER_SIGNING_KEY)")
        signer = ManifestSigner(settings.signing_key)
        blob, input_spec, metrics = read_model(args.model, args.card)
        manifest = registry.publish(blob, args.name or args.model.stem, input_spec, metrics, signer, promote=args.promote)
        print(f"published {args.model} as version {manifest.version} (sha256 {manifest.sha256[:12]}, key {manifest.key_id})")
        if args.promote:
            print(f"version {manifest.version} is now desired on fleet {settings.fleet}")
    elif args.command == "versions":
        _print_versions(registry.versions(), registry.desired())
        print(f"registry epoch {registry.current_epoch() or '- (nothing published yet)'}")
    elif args.command == "desired":
        _print_desired(registry.desired())
    elif args.command == "promote":
        _print_desired(registry.promote(args.version, force=args.force))
    elif args.command == "canary":
        _print_desired(registry.set_canary(args.version, args.nodes, args.percent))
    elif args.command == "rollback":
        _print_desired(registry.rollback(args.version))
    elif args.command == "rollout":
        return run_rollout(args, registry)
    elif args.command == "profile":
        _profile(registry, args)
    elif args.command == "forget":
        registry.forget_node(args.node)
        print(f"node {args.node} forgotten (a node that heartbeats again reappears)")
    elif args.command == "status":
        deadline = time.monotonic() + args.timeout
        while not _print_status(registry, settings.stale_after_s):
            if not args.wait or time.monotonic() >= deadline:
                return 1 if args.wait else 0
            time.sleep(args.interval)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefer-registry", description=__doc__.splitlines()[0])
    RegistryCliSettings.add_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="write a new Ed25519 signing key pair")
    p.add_argument("--private", type=Path, required=True, help="where the private key goes (mode 0600; the worker keeps it)")
    p.add_argument("--public", type=Path, required=True, help="where the public key goes (every node gets a copy)")
    p = sub.add_parser("publish", help="store a signed new version of an ONNX model")
    p.add_argument("model", type=Path, help="the ONNX file (input faces: float32 [N, 1, 48, 48])")
    p.add_argument("--card", type=Path, help="model card JSON (default: the model path with .json)")
    p.add_argument("--name", help="model name (default: the file stem)")
    p.add_argument("--promote", action="store_true", help="make it the desired version at once")
    sub.add_parser("versions", help="list the published versions")
    sub.add_parser("desired", help="show the desired record")
    p = sub.add_parser("promote", help="serve a version on every node")
    p.add_argument("version", type=int, help="a published version number")
    p.add_argument("--force", action="store_true", help="replace a desired record that cannot be read")
    p = sub.add_parser("canary", help="serve a version on some nodes only")
    p.add_argument("version", type=int, help="a published version number")
    p.add_argument("--nodes", type=lambda s: [n for n in s.split(",") if n], default=[], help="comma-separated node ids")
    p.add_argument("--percent", type=float, default=0.0, help="share of nodes, chosen stably by node id")
    p = sub.add_parser("rollback", help="back to a version (default: the one before the last promotion)")
    p.add_argument("version", type=int, nargs="?", help="a published version (default: the rollback target)")
    p = sub.add_parser("status", help="fleet status table")
    p.add_argument("--wait", action="store_true", help="until every live node serves its target (exit 1 on timeout)")
    p.add_argument("--timeout", type=float, default=60.0, help="with --wait: seconds to wait (default: %(default)s)")
    p.add_argument("--interval", type=float, default=1.0, help="with --wait: seconds between looks (default: %(default)s)")
    add_rollout_commands(sub)
    p = sub.add_parser("profile", help="the fleet's device class: MAC, size and latency budgets of its models")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("show", help="the stored profile (or the default one)")
    add_dataclass_arguments(actions.add_parser("set", help="store the fields given, keep the rest"), FleetProfile,
                            omit_unset=True)
    p = sub.add_parser("forget", help="drop a decommissioned node from the status table and the stale count")
    p.add_argument("node", help="the node id, as `status` shows it")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run(args, RegistryCliSettings.from_namespace(args))
    except (CliError, RegistryError, KeyFileError, ProfileError, RolloutError, RolloutSpecError, ValueError) as exc:
        print(f"edgefer-registry: error: {exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"edgefer-registry: error: {describe_redis_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
