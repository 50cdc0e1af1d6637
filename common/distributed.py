"""Work spread over Ray actors: the one place forkcode talks to Ray (an optional extra).

A job is a list of chunks (e.g. a few problems each) and a worker factory: every actor builds its
worker once (e.g. loads a policy replica) and runs chunks as Ray hands them out. Ray restarts an
actor that dies (killed, out of memory, node lost) and runs its unfinished chunk again, so every
chunk's result reaches the driver exactly once; the driver writes them to its store as they come.
"""

import os

from common.cli import ConfigError, ForkcodeError

RAY_EXTRA = "pip install 'forkcode[ray]'"
RESTARTS = 3  # an actor that dies more often than this on one job is a bug to see, not to retry


class WorkerError(ForkcodeError, RuntimeError):
    """Work that failed on the Ray workers more often than Ray retries it."""


def ray_module():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--workers and --ray need Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def connect(workers, address=None):
    """Ray, started: a local cluster of `workers` CPUs, or the running one at `address`."""
    ray = ray_module()
    if not ray.is_initialized():
        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, **options)
    return ray


class _Worker:
    """One actor's worker: built once, then called with each chunk it is given."""

    def __init__(self, make_worker, threads):
        if threads:
            import torch
            torch.set_num_threads(threads)
        self.run_chunk = make_worker()

    def run(self, chunk):
        return self.run_chunk(chunk)

    def pid(self):
        return os.getpid()


def map_unordered(make_worker, chunks, workers, address=None, num_gpus=0, on_start=None):
    """Each chunk's result, in the order they finish, from `workers` Ray actors that each build
    their worker with make_worker() (a picklable function returning chunk -> result). With
    num_gpus, each actor holds that many GPUs (e.g. 1 for a vLLM replica). `on_start(actors)` sees
    the actors once they exist (the tests kill one)."""
    from ray.util import ActorPool
    ray = connect(workers, address)
    threads = None if address else max(1, (os.cpu_count() or 1) // workers)
    remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_restarts=RESTARTS, max_task_retries=RESTARTS)(_Worker)
    actors = [remote.remote(make_worker, threads) for _ in range(workers)]
    if on_start:
        on_start(actors)
    pool = ActorPool(actors)
    try:
        yield from pool.map_unordered(lambda actor, chunk: actor.run.remote(chunk), list(chunks))
    except ray.exceptions.RayActorError as exc:
        raise WorkerError(f"a Ray worker died {RESTARTS + 1} times ({str(exc).splitlines()[0][:200]}); what was done is "
                          "stored: run the same command again to go on") from None
    finally:
        for actor in actors:
            ray.kill(actor)


def add_worker_options(parser):
    """--workers and --ray, for commands whose work is many independent problems."""
    parser.add_argument("--workers", type=int, default=0,
                        help=f"spread the problems over N Ray actors, each with its own model replica and sandboxes "
                             f"(a local Ray cluster unless --ray; default: all in this process; {RAY_EXTRA})")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="with --workers: the running Ray cluster to use (e.g. auto, or host:6379 from `ray start --head`)")


def check_worker_options(args):
    if args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, not {args.workers}")
    if args.ray and not args.workers:
        raise ConfigError("--ray needs --workers N (the number of actors to start on the cluster)")
    if args.workers:
        ray_module()
