"""Compare EAN presets and optimiser settings at a CPU-feasible epoch budget; prints a table.

Each variant is a real `edgefer-worker train` run in its own process (several share one GPU when
there is one); the table reports validation accuracy, so the test set is not used for choosing.

    python benchmarks/arch_sweep.py --data ../shared/data/fer2013/train.npz --parallel 7
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "s-nols-50": ["--arch", "ean-s", "--epochs", "50", "--label-smoothing", "0"],
    "s-nols-50-seed1": ["--arch", "ean-s", "--epochs", "50", "--label-smoothing", "0", "--seed", "1"],
    "s-nols-50-noerase": ["--arch", "ean-s", "--epochs", "50", "--label-smoothing", "0", "--erase-prob", "0"],
    "s-nols-50-lr05": ["--arch", "ean-s", "--epochs", "50", "--label-smoothing", "0", "--lr", "0.05"],
    "s-nols-60-wd2": ["--arch", "ean-s", "--epochs", "60", "--label-smoothing", "0", "--weight-decay", "2e-4"],
    "m-nols-32": ["--arch", "ean-m", "--epochs", "32", "--label-smoothing", "0"],
    "m-nols-32-noerase": ["--arch", "ean-m", "--epochs", "32", "--label-smoothing", "0", "--erase-prob", "0"],
}


def run_variant(name: str, extra: list[str], args: argparse.Namespace) -> dict:
    workdir = args.out / name
    cmd = [sys.executable, "-m", "compression_worker.cli", "train", "--data", str(args.data), "--workdir", str(workdir),
           "--threads", str(args.threads), *extra]
    if args.test_data:
        cmd += ["--test-data", str(args.test_data)]
    with (args.out / f"{name}.log").open("w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    summary_path = workdir / "summary.json"
    if code != 0 or not summary_path.exists():
        return {"name": name, "error": f"exit {code}, see {args.out / (name + '.log')}"}
    return {"name": name, **json.loads(summary_path.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--test-data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=sorted(VARIANTS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda n: run_variant(n, VARIANTS[n], args), args.only))
    print(f"{'variant':<18} {'params':>8} {'best val':>9} {'val+flip':>9} {'epoch':>6} {'test':>7} {'s/epoch':>8}  device")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<18} {r['error']}")
            continue
        test = f"{r['test']['accuracy'] * 100:6.2f}%" if "test" in r else "      -"
        print(f"{r['name']:<18} {r['params']:>8,} {r['best_val_acc'] * 100:8.2f}% {r['best_val_acc_hflip'] * 100:8.2f}% "
              f"{r['best_epoch']:>6} {test} "
              f"{r['seconds_per_epoch']:>8.1f}  {r['device']}")
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
