#!/usr/bin/env bash
# Run HERE before a lent-GPU call: puts what the device machine lacks into .gpu/ (in .gitignore, named in
# `carry`): FER2013's training faces re-packed losslessly (np.savez_compressed: 60 MiB, under the 64 MiB that
# travels) and the torch-pruning wheel (the device image has torch but not torch-pruning).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/fer2013}
mkdir -p .gpu/wheels
.venv/bin/python - "$DATA/train.npz" <<'PY'
import sys
import numpy as np
faces = np.load(sys.argv[1])
np.savez_compressed(".gpu/train.npz", x=faces["x"], y=faces["y"])
again = np.load(".gpu/train.npz")
assert np.array_equal(again["x"], faces["x"]) and np.array_equal(again["y"], faces["y"])
print(".gpu/train.npz: the same", len(faces["y"]), "faces, compressed")
PY
.venv/bin/python -m pip download -q --no-deps -d .gpu/wheels "torch-pruning==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch-pruning"))')"
du -sh .gpu
