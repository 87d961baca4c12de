"""Serving replicas: more processes on the node's port, each with its own GIL, event loop and onnxruntime.

One Python process tops out near 1,500 crops/s on two cores however its threads share the work, because
every frame's gRPC and asyncio steps hold that process's GIL (about half of the 0.9 ms of CPU a frame
costs). gRPC's way to spread a Python server over cores is processes sharing the port through
SO_REUSEPORT (grpc's examples/python/multiprocessing); the kernel spreads connections over them.

The main process stays the node operators see: it follows the registry, takes the reload signal, serves
/metrics, and serves gRPC too. Each replica serves what the main process hands it (the model's bytes, a
rollback, the health status) and confirms every change before the main process calls it done, so a swap
has reached every process when `swap` returns. Replicas send their traffic metrics every
`replica_report_seconds`. A replica that dies, or cannot apply a change, is started again and brought up
to date; a replica whose main process is gone stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from services.edge.metrics import EdgeMetrics
from services.edge.model_holder import LoadedModel, ModelHolder, ModelLoadError, load_onnx_model
from services.edge.replica_metrics import Snapshot, snapshot, without_gauges
from services.edge.server import RunningServer, start_server
from services.edge.settings import EdgeSettings

log = logging.getLogger("edgefer.edge.replicas")
RESTART_PAUSE_S = 1.0
CONFIRM_TIMEOUT_S = 60.0  # loading a model takes well under a second; a replica silent this long is restarted
Command = tuple[Any, ...]


def replica_main(settings: EdgeSettings, conn: Connection) -> None:
    """A replica process: serve on the shared port, apply the main process's changes, report traffic."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the main process decides
    metrics = EdgeMetrics()
    node = start_server(settings, metrics)
    sending = threading.Lock()

    def send(message: tuple[str, Any]) -> None:
        with sending:
            conn.send(message)

    stopped = threading.Event()

    def report() -> None:
        while not stopped.wait(settings.replica_report_seconds):
            try:
                send(("metrics", snapshot(metrics.registry)))
            except OSError:  # the main process is gone; the command loop sees it too
                return

    threading.Thread(target=report, name="edgefer-replica-report", daemon=True).start()
    send(("ready", None))
    grace = 0.0
    try:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):  # the main process is gone: nobody can swap or stop this one
                break
            if command[0] == "stop":
                grace = command[1]
                break
            send(("done", _apply(node, settings, command)))
    finally:
        stopped.set()
        node.stop(grace)


def _apply(node: RunningServer, settings: EdgeSettings, command: Command) -> str | None:
    """Carry out one change; returns why it failed, or None."""
    try:
        match command:
            case ("swap", data, version, epoch):
                node.swap(replace(load_onnx_model(data, version, settings.session_threads), epoch=epoch))
            case ("rollback",):
                node.rollback()
            case ("serving", serving):
                node.set_serving(serving)
            case _:
                return f"unknown command {command[0]!r}"
    except ModelLoadError as exc:
        return str(exc)
    return None


def _check_reply(kind: str, detail: str | None, expected: str) -> None:
    """A replica's answer must be the expected one, without an error."""
    if kind != expected or detail is not None:
        raise RuntimeError(detail or f"answered {kind!r}, not {expected!r}")


@dataclass
class _Replica:
    process: BaseProcess
    conn: Connection
    replies: queue.Queue  # ("ready" | "done" | "died", detail), filled by the replica's watcher thread


class ReplicaSet:
    """`count` replica processes of one node, started with `settings` (the main process's port), kept in
    step with the main process's state: its models (`holder`) and its health (`serving()`). That state has
    one owner, so a replica started again gets it whole, whatever changed it (a swap also sets SERVING);
    restarts count in `metrics`."""

    def __init__(self, settings: EdgeSettings, count: int, holder: ModelHolder, serving: Callable[[], bool],
                 metrics: EdgeMetrics) -> None:
        self._settings = settings
        self._holder = holder
        self._serving = serving
        self._metrics = metrics
        self._context = multiprocessing.get_context("spawn")  # forking a process that runs gRPC threads is unsafe
        self._lock = threading.Lock()  # one change at a time, and no restart in the middle of one
        self._stopping = False
        self._snapshots: dict[int, Snapshot] = {}
        self._retired: list[Snapshot] = []
        self._restarting: set[int] = set()
        self._replicas = [self._spawn(k) for k in range(count)]
        for k, replica in enumerate(self._replicas):
            threading.Thread(target=self._watch, args=(k,), name=f"edgefer-replica-watch-{k}", daemon=True).start()
        for replica in self._replicas:
            try:
                self._confirmation(replica, "ready")
            except RuntimeError as exc:  # the node serves without it meanwhile
                log.error("serving replica (pid %s) did not start: %s; starting it again", replica.process.pid, exc)
                replica.process.kill()

    @property
    def pids(self) -> list[int | None]:
        return [r.process.pid for r in self._replicas]

    @property
    def ready(self) -> bool:
        """Every replica alive and up to date (none being started again)."""
        return not self._restarting and all(r.process.is_alive() for r in self._replicas)

    def snapshots(self) -> list[Snapshot]:
        """The latest traffic of every live replica, and the final counts of those that died."""
        return [*self._retired, *self._snapshots.values()]

    def swap(self, model: LoadedModel) -> None:
        self._broadcast(("swap", model.data, model.version, model.epoch))

    def rollback(self) -> None:
        self._broadcast(("rollback",))

    def set_serving(self, serving: bool) -> None:
        self._broadcast(("serving", serving))

    def stop(self, grace: float) -> None:
        with self._lock:
            self._stopping = True
            for replica in self._replicas:
                try:
                    replica.conn.send(("stop", grace))
                except OSError:
                    pass
            for replica in self._replicas:
                replica.process.join(grace + 10)
                if replica.process.is_alive():
                    replica.process.kill()

    def _spawn(self, index: int) -> _Replica:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=replica_main, args=(self._settings, child), name=f"edgefer-replica-{index}", daemon=True
        )
        process.start()
        child.close()
        return _Replica(process, parent, queue.Queue())

    def _broadcast(self, command: Command) -> None:
        """Send a change to every replica and wait until each has applied it; one that fails or says
        nothing is killed, and comes back up to date."""
        with self._lock:
            for replica in self._replicas:
                try:
                    replica.conn.send(command)
                except OSError:  # dying: its restart brings it up to date
                    continue
            for replica in self._replicas:
                try:
                    self._confirmation(replica, "done")
                except RuntimeError as exc:
                    log.error("serving replica (pid %s) could not apply %s: %s; starting it again", replica.process.pid, command[0], exc)
                    replica.process.kill()

    def _confirmation(self, replica: _Replica, expected: str) -> None:
        try:
            kind, detail = replica.replies.get(timeout=CONFIRM_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(f"no answer in {CONFIRM_TIMEOUT_S:.0f}s") from None
        if kind != "died":  # one that died is brought up to date by its restart
            _check_reply(kind, detail, expected)

    def _watch(self, index: int) -> None:
        """Read one replica's messages for as long as the node runs; start it again when it dies."""
        while True:
            replica = self._replicas[index]
            try:
                kind, detail = replica.conn.recv()
            except (EOFError, OSError):
                self._restarting.add(index)
                replica.replies.put(("died", None))
                if self._stopping:
                    return
                replica.process.join(5)
                time.sleep(RESTART_PAUSE_S)  # a replica that keeps dying must not spin the node's cores
                self._metrics.replica_restarts.inc()
                log.error("serving replica %d (pid %s) exited with code %s; starting it again",
                          index, replica.process.pid, replica.process.exitcode)
                if self._restart(index):
                    self._restarting.discard(index)
                continue
            if kind == "metrics":
                self._snapshots[index] = detail
            else:
                replica.replies.put((kind, detail))

    def _restart(self, index: int) -> bool:
        """A new process in the dead one's place, given the models (previous, then current) and health
        the others serve; its predecessor's counts stay in the node's totals."""
        with self._lock:
            if self._stopping:
                return False
            last = self._snapshots.pop(index, None)
            if last:
                self._retired.append(without_gauges(last))
            replica = self._spawn(index)
            catch_up: list[Command] = [
                ("swap", model.data, model.version, model.epoch)
                for model in (self._holder.previous(), self._holder.current()) if model
            ]
            catch_up.append(("serving", self._serving()))  # last: a swap sets SERVING in the replica
            self._replicas[index] = replica  # if it fails to come up, its watcher (this thread) starts it again
            try:
                self._expect(replica, "ready")
                for command in catch_up:
                    replica.conn.send(command)
                    self._expect(replica, "done")
            except (EOFError, OSError, RuntimeError) as exc:
                log.error("restarted serving replica %d failed to come up: %s", index, exc)
                replica.process.kill()
                return False
            return True

    def _expect(self, replica: _Replica, expected: str) -> None:
        """Read a new replica's pipe directly (its watcher is the caller) until it answers `expected`."""
        while True:
            if not replica.conn.poll(CONFIRM_TIMEOUT_S):
                raise RuntimeError(f"no answer in {CONFIRM_TIMEOUT_S:.0f}s")
            kind, detail = replica.conn.recv()
            if kind != "metrics":
                _check_reply(kind, detail, expected)
                return


class ReplicatedNode:
    """A node of several serving processes behind RunningServer's interface (main, the sync agent)."""

    def __init__(self, local: RunningServer, replicas: ReplicaSet) -> None:
        self.local = local
        self.replicas = replicas
        self.port = local.port
        self.holder = local.holder
        self.metrics = local.metrics
        self.health = local.health

    def swap(self, model: LoadedModel) -> None:
        self.local.swap(model)
        self.replicas.swap(model)

    def rollback(self) -> LoadedModel:
        model = self.local.rollback()
        self.replicas.rollback()
        return model

    def set_serving(self, serving: bool) -> None:
        self.local.set_serving(serving)
        self.replicas.set_serving(serving)

    def stop(self, grace: float) -> None:
        """Every process reports NOT_SERVING first, then all drain together."""
        self.set_serving(False)
        drain = threading.Thread(target=self.replicas.stop, args=(grace,))
        drain.start()
        self.local.stop(grace)
        drain.join()
