"""Data-parallel generation on Ray: ``InferenceConfig(backend="ray")`` for
:class:`~infermode.pipeline.InferencePipeline`, the same on a laptop and on a cluster.

    cfg = im.InferenceConfig("models/SmolLM2-135M", backend="ray", workers=4, threads_per_worker=2,
                             extract_activations=True, layers_to_extract=(3,),
                             activations_dir="/shared/runs/probe", ray_address="ray://head:10001")
    with im.InferencePipeline(cfg) as pipe:
        out = pipe.generate(prompts)

How it runs. :meth:`InferencePipeline.setup` starts a local Ray (``ray_address=None``: this
machine's cores; a Ray this process already started is used as it is) or joins the cluster at
``ray_address``, fits ``workers`` x ``threads_per_worker`` to the CPUs there (a warning says what
was asked, what exists and what is used instead), and starts one actor per worker. Each actor
holds a :class:`~infermode.pipeline.Replica`: it loads the model itself from ``model_path``
(memory-mapped, so the replicas on one node share the weights' pages; nothing is pickled from
the driver) with ``threads_per_worker`` threads, ``OMP_NUM_THREADS`` set to match in its
runtime environment. The pipeline cuts the prompts into the batches the local backend would
run (:func:`~infermode.pipeline.plan_shards`); the driver hands one batch at a time to each free
worker, which generates and writes that batch's shard file into ``activations_dir``; the driver
collects the results into prompt order, moves one tqdm bar, and has the index written once every
batch is done. Prompt encoding, the directory check and the index run on the first worker, so a
driver connected through Ray Client (``ray://``) needs neither the model nor the directory.
Every node must see ``model_path`` and ``activations_dir`` at the same paths, and have infermode
installed.

Faults. A worker whose process dies (a crash, the OOM killer, a lost node) is restarted by Ray,
which reloads its replica, and the batch it was running is redone (``max_retries`` times, then it
is reported as a :class:`~infermode.pipeline.FailedShard` and the run goes on). Redoing a batch
rewrites its shard file under the same name (atomically), so no prompt is written twice. An
exception raised by the batch's own code is not retried (it would most likely repeat): it stops
the run, as it would locally.

Test hooks, read from the driver's environment when the pipeline is set up:
``INFERMODE_TEST_EXIT_IN_SHARD="N"`` makes a worker exit (``os._exit``) after it wrote shard N and
before it returns it, on every attempt; ``"N:/path/marker"`` only on the attempt that creates the
marker file (once). ``INFERMODE_TEST_SLEEP_IN_SHARD="N:SECONDS"`` makes shard N that much slower.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from collections import deque
from typing import Any, Dict, List, Optional, Sequence, Tuple

from infermode.pipeline import InferenceConfig, Replica, Shard, ShardDone, ShardOutput

# The pipeline's logger: its warnings are the pipeline's, whichever backend runs it.
logger = logging.getLogger("infermode.pipeline")

__all__ = ["DEFAULT_RETRIES", "RayBackend", "plan_workers"]

DEFAULT_RETRIES = 3
EXIT_HOOK = "INFERMODE_TEST_EXIT_IN_SHARD"
SLEEP_HOOK = "INFERMODE_TEST_SLEEP_IN_SHARD"


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("backend='ray' needs Ray: pip install 'infermode[ray]'") from exc
    return ray


def plan_workers(workers: int, threads_per_worker: Optional[int],
                 node_cpus: Sequence[int]) -> Tuple[int, int, Optional[str]]:
    """How many workers of how many threads the cluster's nodes (``node_cpus``: the CPUs of each)
    can hold: ``(workers, threads, warning or None)``.

    ``threads_per_worker=None`` shares the CPUs among the workers (at least 1 each). A worker runs
    on one node, so its threads are capped at the largest node's CPUs; then the workers are capped
    at how many of that size the nodes hold.

        plan_workers(4, 2, [2])   # (1, 2, "workers=4 x threads_per_worker=2 asks for 8 CPUs; ...")
    """
    total, largest = sum(node_cpus), max(node_cpus, default=0)
    if largest < 1:
        raise RuntimeError("the Ray cluster has no CPUs for workers: start nodes with CPUs, or "
                           "connect to another cluster with ray_address")
    threads = threads_per_worker or max(1, min(largest, total // workers))
    threads = min(threads, largest)
    fitting = min(workers, sum(cpus // threads for cpus in node_cpus))
    if (fitting, threads) == (workers, threads_per_worker or threads):
        return workers, threads, None
    asked = f"threads_per_worker={threads_per_worker}" if threads_per_worker else \
        "threads_per_worker=None, at least 1 each"
    nodes = f"{len(node_cpus)} node(s)" + (f", the largest {largest}" if len(node_cpus) > 1 else "")
    return fitting, threads, (
        f"workers={workers} x {asked} asks for {workers * (threads_per_worker or 1)} CPUs; the Ray "
        f"cluster has {total} CPUs ({nodes}): using {fitting} worker(s) x {threads} thread(s)")


class _Worker(Replica):
    """The Ray actor: a :class:`Replica` that loads its model on first use (so a restarted
    actor reloads it inside a retried task) and honours the test hooks."""

    def run(self, shard: Shard, seed: int) -> ShardOutput:
        out = super().run(shard, seed)
        _test_hooks(shard.number)
        return out


def _test_hooks(number: int) -> None:
    shard, _, seconds = os.environ.get(SLEEP_HOOK, "").partition(":")
    if shard and int(shard) == number:
        time.sleep(float(seconds))
    shard, _, marker = os.environ.get(EXIT_HOOK, "").partition(":")
    if not shard or int(shard) != number:
        return
    if marker:
        try:
            open(marker, "x").close()
        except FileExistsError:
            return
    os._exit(1)


@functools.lru_cache(maxsize=None)
def _actor_class(ray: Any) -> Any:
    return ray.remote(_Worker)


class RayBackend:
    """backend="ray": the pipeline's backend (see ``_LocalBackend`` in :mod:`infermode.pipeline`
    for the interface) over Ray actors."""

    def __init__(self, config: InferenceConfig) -> None:
        self.config = config
        self.ray = import_ray()
        self.retries = DEFAULT_RETRIES if config.max_retries is None else config.max_retries
        self.workers = self.threads = 0
        self._actors: List[Any] = []
        self._owns_ray = False
        self._has_text = False

    def setup(self) -> bool:
        ray = self.ray
        if ray.is_initialized():
            logger.info("using the Ray this process is already connected to")
        else:
            address = self.config.ray_address
            # A local Ray without the dashboard starts faster; a cluster has its own.
            ray.init(address=address, **({} if address else {"include_dashboard": False}))
            self._owns_ray = True
        try:
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
            self.workers, self.threads, warning = plan_workers(
                self.config.workers, self.config.threads_per_worker, cpus)
            if warning:
                logger.warning(warning)
            self._start_workers()
        except BaseException:
            self.close()
            raise
        return self._has_text

    def _new_actor(self) -> Any:
        env = {"OMP_NUM_THREADS": str(self.threads), "INFERMODE_NUM_THREADS": str(self.threads)}
        env.update({k: os.environ[k] for k in (EXIT_HOOK, SLEEP_HOOK) if k in os.environ})
        # Restarts are unlimited because loading happens in a task, not in the constructor:
        # a replica that cannot load fails its task max_retries + 1 times and is reported.
        return _actor_class(self.ray).options(
            num_cpus=self.threads, max_restarts=-1, max_task_retries=self.retries,
            runtime_env={"env_vars": env}).remote(self.config, self.threads)

    def _start_workers(self) -> None:
        self._actors = [self._new_actor() for _ in range(self.workers)]
        logger.info("starting %d Ray worker(s) x %d thread(s)", self.workers, self.threads)
        try:
            self._has_text = self._get([a.load.remote() for a in self._actors])[0]
        except BaseException:
            self._kill()
            raise

    def _get(self, refs: Any) -> Any:
        """``ray.get``, raising what the worker raised (a ValueError stays a ValueError)."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from exc
            raise

    def call(self, step: str, *args: Any) -> Any:
        if not self._actors:
            self._start_workers()
        return self._get(getattr(self._actors[0], step).remote(*args))

    def run(self, shards: List[Shard], seed: int, done: ShardDone) -> None:
        ray = self.ray
        if not self._actors:
            self._start_workers()  # after an interrupted run
        idle = self._actors[:len(shards)]
        if len(idle) < len(self._actors):
            count = sum(len(s.prompts) for s in shards)
            logger.warning(
                "%d worker(s) but %d prompt(s) make only %d batch(es) of batch_size=%d: using "
                "%d worker(s), the others stay idle (a smaller batch_size spreads the prompts "
                "over more workers)", len(self._actors), count, len(shards),
                self.config.batch_size, len(idle))
        deaths = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                  ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
                  ray.exceptions.ObjectLostError)
        queue = deque(shards)
        running: Dict[Any, Tuple[Any, Shard]] = {}
        try:
            while queue or running:
                while idle and queue:
                    actor, shard = idle.pop(), queue.popleft()
                    running[actor.run.remote(shard, seed)] = (actor, shard)
                (ref,), _ = ray.wait(list(running), num_returns=1)
                actor, shard = running.pop(ref)
                try:
                    outcome = self._get(ref)
                except deaths as exc:
                    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
                    outcome = shard.failed(f"its worker died on each of {self.retries + 1} "
                                           f"attempt(s) ({type(exc).__name__}: {first_line})")
                    if isinstance(exc, ray.exceptions.ActorDiedError):
                        actor = self._replace(actor)  # dead for good: it would fail every batch
                idle.append(actor)
                done(outcome)
        except BaseException:
            # An error in a batch, or Ctrl-C: stop the other batches now (their partial work
            # would otherwise land in activations_dir later); the next run starts new workers.
            self._kill()
            raise

    def _replace(self, actor: Any) -> Any:
        self.ray.kill(actor)  # in case Ray still restarts it: its CPUs go to the new one
        new = self._new_actor()
        self._actors[self._actors.index(actor)] = new
        return new

    def _kill(self) -> None:
        for actor in self._actors:
            self.ray.kill(actor)
        self._actors = []

    def close(self) -> None:
        self._kill()
        if self._owns_ray:
            self.ray.shutdown()
            self._owns_ray = False
