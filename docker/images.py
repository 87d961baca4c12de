"""Build the project's images and check the edge image from outside, with docker or podman.

    python docker/images.py build [--arm64]            # `make images`: edge, controller, worker from the tree
    python docker/images.py check [--arm64]            # `make image-check`: edge image from a clean export of HEAD

`check` builds from `git archive HEAD` (what a CI system building from git sees: no generated stubs, no
virtualenv), runs the container and checks it from this machine: gRPC health SERVING, a real face
classified, a malformed frame answered INVALID_ARGUMENT, the image's own HEALTHCHECK command and the
/metrics endpoint. It uses docker when present, else podman (with ../shared/tools/container-env's
configuration when that has been set up: its stand-in base images make the Dockerfiles build here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgefer.localfleet.ports import free_port  # noqa: E402 - after the path above
from edgefer.v1 import edge_pb2, edge_pb2_grpc  # noqa: E402

CONTAINER_ENV = Path(os.environ.get("CONTAINER_ENV_DIR", "/var/tmp/container-env"))
TORCH_WHEELS = Path("/opt/wheels")  # where this kind of machine keeps torch's CPU wheel (container-env README)
FER_TEST = REPO.parent / "shared" / "data" / "fer2013" / "test_public.npz"


class CheckFailed(Exception):
    pass


@dataclass(frozen=True)
class Engine:
    """docker or podman, with the environment it needs."""

    name: str
    env: dict[str, str]

    @classmethod
    def find(cls) -> Engine:
        env = dict(os.environ)
        if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
            return cls("docker", env)
        if shutil.which("podman"):
            env_sh = CONTAINER_ENV / "env.sh"
            if env_sh.exists():  # `export A=x B=y` lines written by container-env's setup.sh
                for line in env_sh.read_text().splitlines():
                    for pair in line.removeprefix("export ").split():
                        key, _, value = pair.partition("=")
                        env[key] = value
            return cls("podman", env)
        raise CheckFailed("neither docker nor podman is installed (here: ../shared/tools/container-env/setup.sh)")

    def run(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run([self.name, *args], env=self.env, text=True,
                                stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
        if result.returncode != 0:
            detail = (result.stderr or "").strip()[-2000:] if capture else ""
            raise CheckFailed(f"{self.name} {' '.join(args[:3])} ... failed with exit {result.returncode} {detail}")
        return result.stdout or ""

    def build(self, context: Path, dockerfile: str, tag: str, arm64: bool, extra: list[str] = ()) -> None:
        args = ["build", "-f", str(context / dockerfile), "-t", tag, "--network", "host", *extra]
        if self.name == "podman":
            args += ["--format", "docker"]  # the OCI format drops HEALTHCHECK
        if arm64:
            args += ["--platform", "linux/arm64"] + (["--pull=never"] if self.name == "podman" else [])
        print(f"building {tag} from {context} ({dockerfile}{', arm64' if arm64 else ''})", flush=True)
        self.run(*args, str(context))

    def use_base(self, arch: str) -> None:
        """container-env keeps one stand-in python:3.11-slim tag; point it at the architecture being built."""
        switch = CONTAINER_ENV / "use-base"
        if self.name == "podman" and switch.exists():
            subprocess.run([str(switch), arch], env=self.env, check=True, stdout=subprocess.DEVNULL)


def torch_build_args() -> list[str]:
    """The worker's torch from a local wheel folder when this machine has one, else the image's default index."""
    if any(TORCH_WHEELS.glob("torch-*.whl")):
        return ["--build-arg", "TORCH_INDEX_URL=", "--build-arg", f"TORCH_FIND_LINKS={TORCH_WHEELS}",
                "-v", f"{TORCH_WHEELS}:{TORCH_WHEELS}:ro"]
    return []


def clean_export(into: Path) -> Path:
    """HEAD as git has it: the tree a CI system builds from."""
    archive = into / "head.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), "HEAD"], check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def a_face() -> np.ndarray:
    """A real FER2013 face when the data is beside the project, else a drawn one."""
    if FER_TEST.exists():
        with np.load(FER_TEST) as data:
            return data["x"][0].astype(np.uint8)
    from services.client.samples import draw_face

    return draw_face(np.random.default_rng(0))[0]


def wait_serving(target: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.5)
    raise CheckFailed(f"{target}: gRPC health not SERVING within {timeout_s:.0f} s")


def check_node(target: str, metrics_url: str) -> list[str]:
    """The outside checks; returns one line per passed check."""
    passed = [f"gRPC health SERVING at {target}"]
    face = a_face()
    raw = edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=face.tobytes())
    with grpc.insecure_channel(target) as channel:
        stub = edge_pb2_grpc.EdgeFerStub(channel)
        reply = stub.Classify(edge_pb2.ClassifyRequest(frame=edge_pb2.Frame(raw=raw, is_face_crop=True)), timeout=30)
        if len(reply.result.faces) != 1:
            raise CheckFailed(f"a face crop gave {len(reply.result.faces)} faces")
        top = reply.result.faces[0]
        passed.append(f"a face classified: {top.label} ({max(top.probabilities):.2f}) by model {reply.result.model_version}")
        bad = edge_pb2.RawImage(width=48, height=48, format=edge_pb2.PIXEL_FORMAT_GRAY, pixels=b"\x00" * 10)
        try:
            stub.Classify(edge_pb2.ClassifyRequest(frame=edge_pb2.Frame(raw=bad)), timeout=10)
            raise CheckFailed("a malformed frame was answered OK")
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise CheckFailed(f"a malformed frame was answered {exc.code().name}, not INVALID_ARGUMENT") from exc
            passed.append(f"a malformed frame answered INVALID_ARGUMENT ({exc.details()})")
    body = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    if "edgefer_frames_total" not in body:
        raise CheckFailed(f"{metrics_url} has no edgefer_frames_total")
    passed.append(f"/metrics served ({len(body.splitlines())} lines)")
    return passed


def image_healthcheck(engine: Engine, container: str) -> str:
    """Run the image's own HEALTHCHECK command (docker: wait for the daemon to report it)."""
    if engine.name == "podman":
        engine.run("healthcheck", "run", container, capture=True)
        return "the image's HEALTHCHECK passes (podman healthcheck run)"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = engine.run("inspect", "--format", "{{.State.Health.Status}}", container, capture=True).strip()
        if state == "healthy":
            return "the image's HEALTHCHECK passes (docker: healthy)"
        time.sleep(1)
    raise CheckFailed(f"container {container} not healthy after 60 s")


def check(engine: Engine, arm64: bool, tag: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = clean_export(Path(tmp))
        engine.use_base("arm64" if arm64 else "amd64")
        try:
            engine.build(tree, "docker/edge.Dockerfile", tag, arm64)
        finally:
            engine.use_base("amd64")
    grpc_port, metrics_port = free_port(), free_port()
    name = f"edgefer-image-check-{os.getpid()}"
    args = ["run", "-d", "--name", name, "-p", f"127.0.0.1:{grpc_port}:50051", "-p", f"127.0.0.1:{metrics_port}:9100"]
    if arm64:  # under qemu-user onnxruntime must read an ARM cpuinfo (container-env README)
        args += ["--arch", "arm64", "-v", f"{CONTAINER_ENV / 'cpuinfo-arm64'}:/proc/cpuinfo:ro"]
    engine.run(*args, tag, capture=True)
    try:
        wait_serving(f"127.0.0.1:{grpc_port}", 300 if arm64 else 60)
        passed = check_node(f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{metrics_port}/metrics")
        passed.append(image_healthcheck(engine, name))
    except Exception:
        print(engine.run("logs", name, capture=True)[-3000:], file=sys.stderr)
        raise
    finally:
        subprocess.run([engine.name, "rm", "-f", name], env=engine.env, capture_output=True)
    for line in passed:
        print(f"ok  {line}")
    print(f"image-check passed: {tag} built from a clean export of HEAD{' (arm64, emulated)' if arm64 else ''}")


def build(engine: Engine, arm64: bool) -> None:
    engine.use_base("arm64" if arm64 else "amd64")
    suffix = "-arm64" if arm64 else ""
    try:
        engine.build(REPO, "docker/edge.Dockerfile", f"edgefer/edge:dev{suffix}", arm64)
        engine.build(REPO, "docker/edge.Dockerfile", f"edgefer/controller:dev{suffix}", arm64, ["--target", "controller"])
        engine.build(REPO, "docker/worker.Dockerfile", f"edgefer/worker:dev{suffix}", arm64,
                     [] if arm64 else torch_build_args())
    finally:
        engine.use_base("amd64")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "check"])
    parser.add_argument("--arm64", action="store_true", help="build (and run, emulated) linux/arm64")
    parser.add_argument("--tag", default="edgefer/edge:check", help="the tag `check` builds")
    args = parser.parse_args()
    try:
        engine = Engine.find()
        if args.action == "build":
            build(engine, args.arm64)
        else:
            check(engine, args.arm64, args.tag + ("-arm64" if args.arm64 and args.tag == "edgefer/edge:check" else ""))
    except CheckFailed as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
