"""The rollout controller: walks a version through its canary steps and promotes, waits or rolls back.

Each `tick` reads the rollout record, the desired record and the nodes' status records, makes the registry
match an active record (so a controller killed between the two writes finishes the job on restart), and moves
the rollout on by at most one decision:
    start a step     the first ceil(share x live nodes) nodes in stable node-id order serve the canary
    open the window  once every participant serves its target, its status record is the baseline
    look             as the window's faces grow: canary vs stable on the spec's checks (edgefer/rollouts/analysis.py)
                     pass -> next step (promote at 100%; or pause, when the step says so), fail -> roll back,
                     inconclusive -> bake on; at the end of the step's bake -> pause (or roll back, as the spec says)
A participant that goes stale holds the rollout (it never counts as healthy); when every participant is
back, the step's window opens again. Every decision is logged in Redis with its numbers.

A finished rollout changes the registry once: its promotion or rollback is applied while the desired record
still has the rollout's shape (its stable version with its canary), then the record is marked settled and the
controller never touches the desired record for it again, so a later `promote`, `rollback` or job publish stands.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace

from edgefer.registry.desired import node_bucket
from edgefer.registry.status import NodeStatus
from edgefer.registry.store import ModelRegistry
from edgefer.registry.version import version_label
from edgefer.rollouts.analysis import analyse
from edgefer.rollouts.settle import settle
from edgefer.rollouts.spec import CanaryStep
from edgefer.rollouts.store import FINAL, RolloutRecord, RolloutStore
from edgefer.rollouts.verdict import Analysis
from edgefer.rollouts.window import Window, node_window

log = logging.getLogger("edgefer.rollouts")
CONVERGE_S = 60.0  # a participant must serve its step's target within this (or the bake, if longer) after settling


class RolloutController:
    def __init__(
        self, registry: ModelRegistry, stale_after_s: float = 15.0, on_decision: Callable[[str], None] | None = None
    ) -> None:
        self.registry = registry
        self.store = RolloutStore(registry.client, registry.keys)
        self.stale_after_s = stale_after_s
        self.on_decision = on_decision or (lambda decision: None)

    def tick(self, now: float | None = None) -> RolloutRecord | None:
        now = time.time() if now is None else now
        record = self.store.get()
        if record is None:
            return None
        if record.state in FINAL:
            return record if record.settled else self.settle(record)
        self.reconcile(record)
        if record.state == "paused":
            return record
        seen, statuses, _ = self.registry.node_statuses()
        server_now = self.registry.server_time()  # liveness by Redis's clock, never a board's
        live = {n: s for n, s in statuses.items() if s is not None and server_now - seen[n] <= self.stale_after_s}
        desired = self.registry.desired()
        if desired is None or desired.version != record.stable:
            return self._end(
                record,
                "aborted",
                f"the desired version was changed to {desired.version if desired else None} outside the rollout",
            )
        if not record.participants:
            return self._start_step(record, live, now)
        refused = [
            n for n in record.canary_nodes if (s := live.get(n)) and s.error_version == record.version and s.last_error
        ]
        if refused:
            return self._roll_back(
                record, f"node {refused[0]} refused version {record.version}: {live[refused[0]].last_error}", None
            )
        stale = [n for n in record.participants if n not in live]
        if stale:
            if record.state != "holding":
                reason = f"node(s) {', '.join(stale)} stale during step {record.step + 1}: holding until they report"
                return self._save(record, replace(record, state="holding", reason=reason), "hold", reason)
            return record
        if record.state == "holding":  # every participant is back: this step's window opens again, after settling
            settle = now + record.rollout_spec().settle_s()
            record = self._save(
                record,
                replace(
                    record,
                    state="running",
                    baseline={},
                    bake_started=0.0,
                    look_faces=0,
                    settle_until=settle,
                    reason="participants back: the window opens again",
                ),
                "resume",
                "every participant reports again",
            )
            if record is None:
                return None
        return self._bake(record, live, now)

    # -- steps ------------------------------------------------------------------------------------

    def _start_step(self, record: RolloutRecord, live: dict[str, NodeStatus], now: float) -> RolloutRecord | None:
        spec = record.rollout_spec()
        share = record.share()
        if share >= 100:
            return self._end(record, "promoted", f"every step passed: version {record.version} promoted")
        nodes = sorted(live, key=lambda n: (node_bucket(n), n))
        count = min(len(nodes) - 1, max(1, math.ceil(share / 100 * len(nodes))))
        if count < 1:
            return self._save(
                record,
                replace(
                    record,
                    state="paused",
                    reason=f"{len(nodes)} live node(s): a canary needs stable nodes to be compared with",
                ),
                "pause",
                "too few nodes",
            )
        canary = nodes[:count]
        new = replace(
            record,
            canary_nodes=canary,
            participants=nodes,
            baseline={},
            bake_started=0.0,
            looks=0,
            look_faces=0,
            failures={},
            settle_until=now + spec.settle_s(),
            reason=f"step {record.step + 1}: {count} of {len(nodes)} nodes serve version {record.version}",
        )
        saved = self._save(record, new, "step", new.reason)
        if saved is not None:
            self.reconcile(saved)
        return saved

    def _bake(self, record: RolloutRecord, live: dict[str, NodeStatus], now: float) -> RolloutRecord | None:
        spec = record.rollout_spec()
        if not record.bake_started:
            if now < record.settle_until:
                return record
            targets = {record.version: self._sha256(record.version), record.stable: self._sha256(record.stable)}
            baseline = dict(record.baseline)
            for node in record.participants:
                target = record.version if node in record.canary_nodes else record.stable
                if node not in baseline and live[node].sha256 == targets[target]:
                    baseline[node] = asdict(live[node])
            opened = now if len(baseline) == len(record.participants) else 0.0
            converge_s = max(CONVERGE_S, spec.steps[record.step].bake_s())
            if not opened and now > record.settle_until + converge_s:
                late = [n for n in record.participants if n not in baseline]
                return self._roll_back(
                    record,
                    f"node(s) {', '.join(late)} did not serve their target within "
                    f"{converge_s:.0f}s",
                    None,
                )
            if baseline != record.baseline or opened:
                return self._save(record, replace(record, baseline=baseline, bake_started=opened), None, "")
            return record
        step = spec.steps[record.step]
        final = now - record.bake_started >= step.bake_s()
        canary, stable = Window(), Window()
        for node in record.participants:
            before = NodeStatus.from_dict(record.baseline[node])
            if node in record.canary_nodes:
                canary.add(node_window(before, live[node], version_label(record.version)))
            else:
                stable.add(node_window(before, live[node], version_label(record.stable)))
        enough = min(canary.faces, stable.faces) >= spec.min_faces
        if not final and not (enough and canary.faces >= record.look_faces * spec.look_growth):
            return record
        analysis = analyse(spec, canary, stable, record.looks + 1, record.failures)
        looked = replace(record, looks=record.looks + (analysis.verdict != "wait"), look_faces=canary.faces,
                         failures=analysis.failures, last_analysis=analysis.to_dict())
        if analysis.verdict == "fail":
            return self._roll_back(looked, analysis.reason, analysis.to_dict())
        if analysis.verdict == "pass":
            return self._advance(looked, step, analysis)
        if not final:
            return self._save(record, replace(looked, reason=analysis.reason), "inconclusive", analysis.reason,
                              analysis.to_dict())
        reason = f"step {record.step + 1} undecided after its bake of {step.bake}: {analysis.reason}"
        if spec.on_inconclusive == "rollback":
            return self._roll_back(looked, reason, analysis.to_dict())
        return self._save(record, replace(looked, state="paused", reason=f"{reason}; paused for the operator"),
                          "pause", reason, analysis.to_dict())

    def _advance(self, record: RolloutRecord, step: CanaryStep, analysis: Analysis) -> RolloutRecord | None:
        """The step passed: the next one starts (or, when this step asks for it, waits for `rollout resume`)."""
        reason = f"step {record.step + 1} passed at look {analysis.look} ({analysis.canary['faces']} canary faces)"
        advanced = replace(record, step=record.step + 1, participants=[], reason=reason)
        if step.pause:
            advanced = replace(advanced, state="paused", reason=f"{reason}; paused for the operator (the step's pause)")
        return self._save(record, advanced, "advance", reason, analysis.to_dict())

    def _roll_back(self, record: RolloutRecord, reason: str, analysis: dict | None) -> RolloutRecord | None:
        return self._end(record, "rolled_back", f"step {record.step + 1}: {reason}", analysis)

    def _end(
        self, record: RolloutRecord, state: str, reason: str, analysis: dict | None = None
    ) -> RolloutRecord | None:
        ended = replace(record, state=state, reason=reason, last_analysis=analysis or record.last_analysis)
        saved = self._save(record, ended, state, reason, analysis)
        return self.settle(saved) if saved is not None else None

    # -- registry and bookkeeping -----------------------------------------------------------------

    def settle(self, record: RolloutRecord) -> RolloutRecord | None:
        return settle(self.registry, self.store, record)

    def reconcile(self, record: RolloutRecord) -> None:
        """Make the desired record serve an active rollout's canary on its canary nodes (idempotent)."""
        desired = self.registry.desired()
        if desired is None:
            return
        if (
            record.active
            and record.canary_nodes
            and desired.version == record.stable
            and (
                desired.canary is None
                or desired.canary.version != record.version
                or sorted(desired.canary.nodes) != sorted(record.canary_nodes)
            )
        ):
            self.registry.set_canary(record.version, record.canary_nodes, 0.0)

    def _save(
        self, old: RolloutRecord, new: RolloutRecord, decision: str | None, reason: str, analysis: dict | None = None
    ) -> RolloutRecord | None:
        """Compare-and-set the record together with its decision log entry; None when an operator changed it
        meanwhile."""
        entry = {
            "version": new.version,
            "step": new.step + 1,
            "share": new.share(),
            "decision": decision,
            "reason": reason,
            "canary_nodes": new.canary_nodes,
            "analysis": analysis,
        } if decision else None
        saved = self.store.put_if(new, old.revision, entry)
        if saved is not None and decision:
            log.info("rollout of version %d: %s (%s)", new.version, decision, reason)
            self.on_decision(decision)
        return saved

    def _sha256(self, version: int) -> str:
        manifest = self.registry.manifest(version)
        return manifest.sha256 if manifest else ""
