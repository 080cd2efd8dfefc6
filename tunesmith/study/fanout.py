"""Run a study's ready arms at the same time: in worker processes on this machine
(`tunesmith study --workers N`: a concurrent.futures ProcessPoolExecutor with the spawn start
method) or as tasks on a Ray cluster (`--ray ADDRESS`, the optional `tunesmith[ray]` extra).

An arm is ready once the arms it builds on (`after:`, `on:`) have completed. The scheduler here
only decides what to start when; the study's own process keeps the single copy of state.json
and timing.json and writes them as arms start and finish, so caching, continuing after an
interrupt and the report are exactly those of a serial run. Each task trains (or prepares) and
evaluates one arm with the same code as a serial study (tunesmith.study.runner.execute_job).

CPU share: a local worker gets `cores // workers` torch threads (at least 1), so N workers do not
oversubscribe the machine; a Ray task reserves `ray_cpus` CPUs and uses that many torch threads.
A task's own `training.threads` still wins for its training. Ray tasks are not retried
(max_retries=0): a lost node stops the study with a one-line error, and running the command again
continues it (finished arms are cached, a half-trained arm resumes from its checkpoint).

With --ray, every node must see the study directory at the same path (shared storage such as
NFS): tasks run in the driver's working directory, so relative paths in the study resolve alike
on every node. This is checked at start, on every node, before any arm runs."""

from __future__ import annotations

import os
import signal
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import ConfigError, TunesmithError

RAY_INSTALL = "pip install 'tunesmith[ray]'"


@dataclass
class FanOut:
    """How a study's arms are spread: serially (workers 1, no ray), over local worker processes,
    or over a Ray cluster."""

    workers: int = 1  # local worker processes (1: the study's own process runs every arm, as before)
    ray: str | None = None  # ADDRESS of a running Ray cluster (host:port, or "auto")
    ray_cpus: int = 1  # CPUs each arm's Ray task reserves, and the torch threads it uses

    def validate(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: give 1 or more, e.g. --workers 2")
        if self.ray is not None and not self.ray.strip():
            raise ConfigError("--ray: give the cluster's address, e.g. --ray 10.0.0.1:6379 (or --ray auto)")
        if self.ray and self.workers > 1:
            raise ConfigError("--ray and --workers: use one; on a Ray cluster the cluster's CPUs set how many arms run at once")
        if self.ray_cpus < 1:
            raise ConfigError(f"--ray-cpus {self.ray_cpus}: give 1 or more")
        if self.ray_cpus != FanOut.ray_cpus and not self.ray:
            raise ConfigError(f"--ray-cpus {self.ray_cpus}: only with --ray ADDRESS (local workers get cores // --workers threads)")

    @property
    def parallel(self) -> bool:
        return self.workers > 1 or bool(self.ray)


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, as a container or taskset sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _share_cpu(threads: int) -> None:
    """Cap a worker's torch (and OpenMP/BLAS) threads at its share of the cores."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)


def _init_local_worker(threads: int) -> None:
    # Idle, a worker ignores Ctrl-C (the study then shuts the pool down and it exits quietly);
    # running an arm, it is interrupted like a serial study (see _local_call).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        # A worker must not outlive a study killed with SIGKILL: it would keep training an arm
        # that the re-run then finds locked. PR_SET_PDEATHSIG (1) sends it SIGKILL when the study dies.
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    _share_cpu(threads)
    from tunesmith.quiet import quiet_libraries

    quiet_libraries()


WORKER_DIED = ("a worker process died (killed, or out of memory) while arms were running; "
               "finished arms are kept: run the same command again to continue")


def _local_call(fn, *args):
    """A task in a local worker: Ctrl-C interrupts the arm it runs, as in a serial study."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return fn(*args)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalPool:
    """N spawned worker processes; at most N arms are handed out at once, so that a Ctrl-C (which
    reaches every process of the terminal's group) leaves no queued arm to start."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.slots = workers
        self.threads = max(1, cpu_count() // workers)
        # spawn, not fork: a forked copy of a process holding torch's thread pools can hang.
        self.ex = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_local_worker, initargs=(self.threads,))
        self.describe = f"{workers} worker processes, {self.threads} torch thread(s) each ({cpu_count()} cores)"

    def submit(self, fn, *args) -> Future:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self.ex.submit(_local_call, fn, *args)
        except BrokenProcessPool:  # a worker died between an arm finishing and the next one starting
            raise TunesmithError(WORKER_DIED) from None

    def result(self, fut: Future, name: str):
        from concurrent.futures.process import BrokenProcessPool

        try:
            return fut.result()
        except BrokenProcessPool:
            # Every running arm's future fails alike, so the dead worker's arm cannot be named.
            raise TunesmithError(WORKER_DIED) from None

    def close(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


def _ray_task(fn, cwd: str, threads: int, *args):
    """What a Ray worker runs: `fn(*args)` in the driver's working directory, with its CPU share."""
    if not os.path.isdir(cwd):
        raise TunesmithError(f"--ray: the study's working directory {cwd} does not exist on this node; "
                             "run the study from storage every node mounts at the same path")
    os.chdir(cwd)
    _share_cpu(threads)
    from tunesmith.quiet import quiet_libraries

    quiet_libraries()
    return fn(*args)


def _probe(marker: str, token: str) -> str | None:
    """On one node: None when it reads the driver's marker and can write beside it, else why not."""
    import socket

    where = f"node {socket.gethostname()}"
    try:
        if Path(marker).read_text() != token:
            return f"{where} sees another {marker}"
        probe = Path(marker).with_name(f".probe-{uuid.uuid4().hex}")
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        return f"{where} cannot read or write {Path(marker).parent} ({e.strerror or e})"
    return None


def check_writable(sdir: Path) -> None:
    """The study directory must take new files before any arm starts."""
    try:
        sdir.mkdir(parents=True, exist_ok=True)
        probe = sdir / f".write-check-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise TunesmithError(f"study directory {sdir}: not writable ({e.strerror or e}); set output_dir to a folder "
                             "you can write to (with --ray: on storage every node mounts at the same path)") from None


def _reachable(address: str) -> None:
    """A host:port that nothing answers on is a one-line error now: ray.init would retry for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return  # "auto", or a form ray.init resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise TunesmithError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                             "`ray start --head --port PORT` and pass HOST:PORT") from None


class RayPool:
    """Arms as Ray tasks on a running cluster; as many at once as its CPUs allow."""

    def __init__(self, address: str, cpus: int, sdir: Path):
        try:
            import ray
        except ImportError:
            raise TunesmithError(f"--ray: Ray is not installed; {RAY_INSTALL}") from None
        import logging

        self.ray = ray
        check_writable(sdir)
        _reachable(address)
        try:
            # log_to_driver off: the study prints one line per arm; workers' logs stay in Ray's session folder.
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise TunesmithError(f"--ray {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0]}); "
                                 "start one with `ray start --head` and pass its address") from None
        self._check_shared(sdir.resolve())
        total = int(ray.cluster_resources().get("CPU", 0))
        if total < cpus:
            self.close()
            raise TunesmithError(f"--ray-cpus {cpus}: the cluster has {total} CPU(s); give at most {total}")
        self.slots, self.cpus = max(1, total // cpus), cpus
        self.task = ray.remote(num_cpus=cpus, max_retries=0)(_ray_task)
        self.describe = f"Ray cluster at {address}: {total} CPUs, {cpus} per arm, up to {self.slots} arms at once"

    def _check_shared(self, sdir: Path) -> None:
        """Every alive node must see the study directory: a task's outputs must reach the report."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        marker, token = sdir / ".ray-shared-check", uuid.uuid4().hex
        marker.write_text(token)
        probe = self.ray.remote(num_cpus=0, max_retries=0)(_probe)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker), token)
                for n in self.ray.nodes() if n.get("Alive")]
        problems = [p for p in self.ray.get(refs, timeout=120) if p]
        marker.unlink(missing_ok=True)
        if problems:
            self.close()
            raise TunesmithError(f"--ray: {problems[0]}; the study directory ({sdir}) must be on storage every node "
                                 "mounts at the same path (e.g. NFS)")

    def submit(self, fn, *args) -> Future:
        return self.task.remote(fn, os.getcwd(), self.cpus, *args).future()

    def result(self, fut: Future, name: str):
        from ray.exceptions import RayError, RayTaskError

        try:
            return fut.result()
        except RayTaskError as e:
            if isinstance(e.cause, (TunesmithError, KeyboardInterrupt)):
                raise e.cause from None
            raise
        except RayError as e:  # a worker or node lost: the arm never finished
            raise TunesmithError(f"Ray lost arm {name} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                                 "finished arms are kept: run the same command again to continue") from None

    def close(self) -> None:
        self.ray.shutdown()


def open_pool(fan: FanOut, sdir: Path):
    return RayPool(fan.ray, fan.ray_cpus, sdir) if fan.ray else LocalPool(fan.workers)


def run_ready(items: list, pool, submit, finish) -> dict:
    """Run `items` (each with .id and .depends, listed after what they depend on) on `pool`, as
    soon as their dependencies are done and a slot is free. `submit(item)` returns the future of
    its task, or a finished outcome dict (nothing to run); `finish(item, result)` gets what the
    task returned and gives the item's outcome. An item whose dependency did not complete is
    skipped. Returns id -> outcome."""
    outcomes: dict[str, dict] = {}
    pending, running = list(items), {}
    while pending or running:
        for item in list(pending):
            if len(running) >= pool.slots:
                break
            if any(d not in outcomes for d in item.depends):
                continue
            pending.remove(item)
            failed = [d for d in item.depends if outcomes[d].get("status") != "completed"]
            if failed:
                outcomes[item.id] = {"status": "skipped", "error": f"builds on {', '.join(failed)}, which did not complete"}
                continue
            started = submit(item)
            if isinstance(started, dict):
                outcomes[item.id] = started
            else:
                running[started] = item
        if not running:
            continue
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for fut in done:
            item = running.pop(fut)
            outcomes[item.id] = finish(item, pool.result(fut, item.id))
    return outcomes


def arm_task(study, job, same: bool) -> dict:
    """One arm in a worker: its outcome and the seconds it took there (timing.json's figure)."""
    from tunesmith.study.runner import execute_job

    t0 = time.time()
    out = execute_job(study, job, same, progress=False)  # per-step bars of several arms would interleave
    return {"outcome": out, "seconds": time.time() - t0}


def fmt_elapsed(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"
