"""Running under ``torchrun``: the process group, the device of each rank, shared decisions.

Launched by ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``), :func:`init_from_env` starts ``torch.distributed`` with
gloo on the CPU and NCCL on CUDA, and ``LOCAL_RANK`` picks each process's GPU. Without those
variables everything here is a no-op and a run is one process, as before.

Every decision that steers the training loop (the time budget, the learning-rate schedule's
progress, a divergence, Ctrl-C) is taken from values that all ranks share: :func:`agree` reduces a
few flags and clocks with ``MAX`` so that every rank sees the same numbers and leaves the loop at
the same step. A rank that decided alone would leave the others waiting in an all-reduce forever.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = [
    "World",
    "agree",
    "all_reduce_sum",
    "init_from_env",
    "launched_world_size",
    "restart_count",
    "shutdown",
    "shutdown_after",
    "split_batch",
]


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and draws progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}: expected an integer, got {raw!r}"
        ) from None


def current() -> World:
    """The world of an initialised process group, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return World()


def init_from_env(device: str) -> tuple[World, str]:
    """Start the process group described by the launcher's environment, if there is one.

    Args:
        device: the config's device (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    Returns:
        The :class:`World` and the device this rank should use: under a launcher with CUDA,
        ``cuda:LOCAL_RANK`` (an explicit ``cuda:N`` is refused there: every rank would pick the
        same GPU).
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1 or not dist.is_available():
        return current(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if device.startswith("cuda:"):
            raise ConfigError(
                f"device {device!r}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                "use --device cuda or auto"
            )
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible: "
                "start at most one process per GPU (--nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        # the launcher's store outlives a restart of the workers (torchrun --max-restarts), and
        # keys left by the dead group would point the new one at addresses nobody listens on:
        # each attempt gets its own key prefix
        store, _, _ = next(dist.rendezvous("env://"))
        store = dist.PrefixStore(f"torchstn/attempt{restart_count()}", store)
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", store=store, rank=rank, world_size=size
        )
    return World(dist.get_rank(), dist.get_world_size(), local_rank), device


def shutdown(finished: bool = False) -> None:
    """Destroy the process group if this module (or anyone) started one.

    Args:
        finished: every rank got to the end without an error. The ranks then wait for each other
            first, so that none closes its connections while another still talks over them (rank
            0 writes the results after the last collective; a rank that left at once and tore
            down its side could abort the group). After an error there is no waiting: the other
            ranks may be gone, and a barrier would hang until the group's timeout.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    # a finished Trainer sits in a reference cycle (its DDP wrapper holds the group): collect it
    # while the group and the interpreter are alive, not during the interpreter's teardown
    gc.collect()
    dist.destroy_process_group()


@contextlib.contextmanager
def shutdown_after() -> Iterator[None]:
    """Run the body, then :func:`shutdown`: ``finished`` when the body returned, not when it
    raised (the exception goes on)."""
    try:
        yield
    except BaseException:
        shutdown(finished=False)
        raise
    shutdown(finished=True)


def launched_world_size() -> int:
    """The number of processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(_env_int("WORLD_SIZE", 1), 1)


def restart_count() -> int:
    """How often torchrun has restarted this worker group (``--max-restarts``); 0 at first."""
    return _env_int("TORCHELASTIC_RESTART_COUNT", 0)


def split_batch(batch_size: int, world: int) -> int:
    """Per-rank share of a global batch: ``batch_size / world``, which must be a whole number.

    The config's batch size is the global batch, so a run takes the same optimisation steps on
    any number of processes. A batch that does not divide is refused rather than split unevenly:
    ranks with unequal shares would weight their samples differently in the averaged gradient.
    """
    if batch_size % world:
        lower = batch_size - batch_size % world
        raise ConfigError(
            f"optim.batch_size {batch_size} does not split evenly over {world} processes "
            f"(the batch size is the global batch); use a multiple of {world}, "
            f"such as {lower or world} or {lower + world}"
        )
    return batch_size // world


def agree(values: list[float], world: World, device: torch.device) -> list[float]:
    """Elementwise maximum of ``values`` over all ranks (the values themselves in one process).

    Used for flags (0/1: any rank set it) and clocks (the slowest rank's time), so every rank takes
    the same decision from the same numbers.
    """
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(v) for v in t.tolist()]


def all_reduce_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    """Sum of ``values`` over all ranks, in float64 (counts and loss sums of sharded work)."""
    if not world.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]
