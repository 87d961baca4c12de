"""Multi-step stages that survive being killed: each step writes its folder's metrics.json last, and a run
started again skips (and reloads) every step that has one. ITS rounds and pruning steps share this loop."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path


def write_json_atomic(path: Path, obj: object) -> None:
    """A JSON file that exists whole or not at all: the marker a resumed run trusts must never be half written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def run_resumable_steps(
    workdir: Path,
    name: str,
    steps: Iterable[int],
    run: Callable[[int, Path], None],
    resume: Callable[[int, Path], None],
    describe: Callable[[dict], str],
) -> list[dict]:
    """Run step k in workdir/<name><k> unless its metrics.json exists, in which case `resume` reloads what
    later steps need; print `describe(metrics)` after each step; return every step's metrics in order.
    `run` ends by writing the folder's metrics.json with `write_json_atomic`."""
    results = []
    for k in steps:
        folder = workdir / f"{name}{k}"
        done = folder / "metrics.json"
        if done.exists():
            print(f"{name} {k}: already done, skipping", flush=True)
            resume(k, folder)
        else:
            run(k, folder)
        results.append(json.loads(done.read_text()))
        print(f"{name} {k}: {describe(results[-1])}", flush=True)
    return results


def note_test_accuracy(metrics: dict) -> str:
    """', test 65.06%' when the step was also measured on the test set."""
    return f", test {100 * metrics['test_acc']:.2f}%" if "test_acc" in metrics else ""
