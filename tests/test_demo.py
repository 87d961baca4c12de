"""`make demo` end to end in its short mode: local redis, worker, two nodes, clients, a rollout, a summary."""

import subprocess
import sys


def test_demo_rolls_out_a_new_version_with_no_failed_request(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "services.demo.main", "--short", "--warmup-seconds", "2",
                             "--after-seconds", "2", "--fps", "8", "--keep", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published ean-baseline.onnx as version 1, selectable" in result.stdout
    assert "published ean-pruned.onnx as version 2, served" in result.stdout  # what a board exists to run
    assert "OK: 0 failed requests; both nodes served versions 2 and 3" in result.stdout
    assert "edge-1" in result.stdout and "versions served" in result.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], "the demo left processes running"
