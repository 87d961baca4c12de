"""ITS ablation: hard labels vs distillation variants at one epoch budget per round; prints a table.

Round 0 (the hard-label baseline, row 1) is trained once and is the round-0 teacher of every other
row, so rows differ only in what the ablation names. Rows run as parallel processes (one GPU or CPU).

    python benchmarks/its_ablation.py --data ../shared/data/fer2013/train.npz \
        --test-data ../shared/data/fer2013/test_public.npz --epochs 20 --parallel 6
    python benchmarks/its_ablation.py ... --report-only   # tabulate runs made elsewhere
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from compression_worker.evaluation import predict_file
from edgefer.datasets import Faces, load_faces

ROWS: dict[str, list[str]] = {
    "2 one round, scratch": ["--rounds", "1", "--no-weight-transfer"],
    "3 three rounds, scratch": ["--rounds", "3", "--no-weight-transfer"],
    "4 three rounds, transfer": ["--rounds", "3"],
    "5 as 4, refine=average": ["--rounds", "3", "--refine", "average"],
    "4b as 4, T=2 alpha=0.5": ["--rounds", "3", "--temperature", "2", "--alpha", "0.5"],
    "c  as 4, alpha=0 (no KD)": ["--rounds", "3", "--alpha", "0"],
}


def worker(args: argparse.Namespace, *extra: str) -> list[str]:
    return [sys.executable, "-m", "compression_worker.cli", *extra, "--data", str(args.data), "--epochs", str(args.epochs),
            "--threads", str(args.threads), "--seed", str(args.seed)]


def slug(name: str) -> str:
    return "row" + "".join(c if c.isalnum() else "-" for c in name).strip("-")


def run(cmd: list[str], log: Path) -> int:
    with log.open("w") as handle:
        return subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)


def fmt(metrics: dict, key: str) -> str:
    return f"{metrics[key] * 100:.2f}" if key in metrics else "-"


def test_accuracy(model: Path, test: Faces | None) -> dict:
    """Accuracy of a round's model on the test set (done here so that training hosts need no test data)."""
    if test is None or not model.exists():
        return {}
    return {"test_acc": float(np.mean(predict_file(model, test, threads=2) == test.y))}


def row_rounds(workdir: Path, rounds: list[dict], test: Faces | None) -> list[dict]:
    return [{**r, **test_accuracy(workdir / f"round{r['round']}" / "model.pt", test)} for r in rounds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test-data", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=20, help="epoch budget of every round, round 0 included")
    parser.add_argument("--out", type=Path, default=Path("runs/its-ablation"))
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="tabulate finished runs (e.g. fetched from a GPU host)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    baseline = args.out / "row1-hard-labels"
    if not args.report_only and not (baseline / "summary.json").exists():
        code = run(worker(args, "train", "--workdir", str(baseline)), args.out / "row1.log")
        if code:
            sys.exit(f"baseline training failed (exit {code}); see {args.out / 'row1.log'}")
    teacher = baseline / "model.pt"

    def distill(name: str) -> int:
        cmd = worker(args, "distill", "--workdir", str(args.out / slug(name)), "--teacher", str(teacher), *ROWS[name])
        return run(cmd, args.out / f"{slug(name)}.log")

    codes = {name: 0 for name in ROWS}
    if not args.report_only:
        with ThreadPoolExecutor(args.parallel) as pool:
            codes = dict(zip(ROWS, pool.map(distill, ROWS)))

    test = load_faces(args.test_data) if args.test_data else None
    base = json.loads((baseline / "summary.json").read_text())
    table = {"1 hard labels only": [{"round": 0, "val_acc": base["best_val_acc"], **test_accuracy(teacher, test)}]}
    for name, code in codes.items():
        summary = args.out / slug(name) / "its.json"
        ok = code == 0 and summary.exists()
        table[name] = row_rounds(args.out / slug(name), json.loads(summary.read_text())["rounds"], test) if ok else []
    print(f"epochs per round: {args.epochs}; seed {args.seed}; accuracy in % as val / test_public per round")
    print("| row | round 0 | round 1 | round 2 | round 3 |")
    print("|---|---|---|---|---|")
    for name, rounds in table.items():
        cells = [f"{fmt(r, 'val_acc')} / {fmt(r, 'test_acc')}" for r in rounds] or [f"failed (exit {codes.get(name)})"]
        print(f"| {name} | " + " | ".join(cells + [""] * (4 - len(cells))) + " |")
    (args.out / "ablation.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
