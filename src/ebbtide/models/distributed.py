"""Several training processes (PyTorch DDP under ``torchrun``): who am I, and agreeing.

``torchrun`` (or ``ebbtide train --nproc N``, which runs it) starts N copies of the
training with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
in their environment. `process_group` turns that into a `Group` (gloo on CPU, NCCL on
CUDA, one GPU per process: the one of its ``LOCAL_RANK``); without those variables it is
the one-process `SINGLE`, and no collective is ever called, so one process trains exactly
as it did before DDP.

A `Group` gives the rank's share of the work (`shard_balanced`, `shard_contiguous`) and
the few collectives a training loop needs so that every rank takes the same decisions
(sums, a shared stop flag, gathered arrays, an object from rank 0). Only rank 0 writes
files (`is_main`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import distributed as dist

from ebbtide.errors import ConfigError

#: What torchrun sets; `launch_env` reads it.
_RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT")
_CPU = torch.device("cpu")
_HOW = "start the training with `ebbtide train --nproc N` (or torchrun), or unset WORLD_SIZE"


@dataclass(frozen=True, slots=True)
class Launch:
    """Where this process stands in a torchrun launch."""

    rank: int
    world: int
    local_rank: int


@dataclass(frozen=True, slots=True)
class Group:
    """This process's place among the training processes, and their collectives.

    With ``world == 1`` every collective returns its input unchanged, without touching
    `torch.distributed`.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = _CPU  # where collective tensors live

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports progress and writes files."""
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks (float64)."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().tolist()

    def most(self, value: int) -> int:
        """The largest `value` of any rank (the step count all ranks must make)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a stop that all must take)."""
        return self.sum([float(flag)])[0] > 0

    def gather(self, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """Each array concatenated over the ranks, in rank order, on every rank."""
        if self.world == 1:
            return arrays
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, arrays)
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))

    def from_main(self, value: Any = None) -> Any:
        """Rank 0's `value` on every rank (picklable; tensors on the CPU)."""
        if self.world == 1:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def shard_balanced(self, weights: np.ndarray) -> np.ndarray:
        """Indices of the items this rank takes, every rank's total weight about equal.

        Items are dealt heaviest first, back and forth over the ranks (0, 1, …, 1, 0, …),
        so no rank gets all the heavy users; the same on every rank, as it uses only the
        weights.
        """
        order = np.argsort(-np.asarray(weights), kind="stable")
        position = np.arange(order.size)
        lap, seat = np.divmod(position, self.world)
        owner = np.where(lap % 2 == 0, seat, self.world - 1 - seat)
        return np.sort(order[owner == self.rank])

    def shard_contiguous(self, weights: np.ndarray) -> slice:
        """The rank's block of consecutive items, the blocks' weights about equal: rank
        order concatenation of per-block results is the order of the whole."""
        if self.world == 1:
            return slice(0, len(weights))
        cum = np.concatenate([[0.0], np.cumsum(np.asarray(weights, dtype=np.float64))])
        bounds = np.searchsorted(cum, cum[-1] * np.arange(self.world + 1) / self.world)
        bounds[0], bounds[-1] = 0, len(weights)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))


SINGLE = Group()


def launch_env(environ: dict[str, str] | None = None) -> Launch | None:
    """This process's torchrun launch, or None when it runs alone (no ``WORLD_SIZE``, or 1).

    Raises ConfigError on a half-set environment (a mis-launch), which would otherwise
    wait for peers that never come.
    """
    env = os.environ if environ is None else environ
    raw_world = env.get("WORLD_SIZE")
    if raw_world is None:
        return None
    try:
        world = int(raw_world)
        rank = int(env.get("RANK", ""))
        local_rank = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE={raw_world!r} is set, but WORLD_SIZE and RANK are not both whole"
            f" numbers (RANK={env.get('RANK')!r}): {_HOW}"
        ) from None
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}: {_HOW}")
    if world == 1:
        return None
    missing = [name for name in _RENDEZVOUS if not env.get(name)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={world} is set but {' and '.join(missing)} not, so the processes"
            f" cannot find each other: {_HOW}"
        )
    return Launch(rank=rank, world=world, local_rank=local_rank)


def is_main() -> bool:
    """Whether this process is rank 0 (or alone): the one that writes and prints."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    launch = launch_env()
    return launch is None or launch.rank == 0


def training_device(device: torch.device, launch: Launch | None) -> torch.device:
    """The device of this process: on CUDA with several processes, the GPU of its
    ``LOCAL_RANK`` (``device='cuda'`` asks for that; an explicit index would put every
    process on one GPU)."""
    if launch is None or device.type != "cuda":
        return device
    if device.index is not None:
        raise ConfigError(
            f"device {str(device)!r} names one GPU, but {launch.world} processes share the"
            " training: use device 'cuda' (each process takes the GPU of its LOCAL_RANK)"
        )
    if launch.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"process LOCAL_RANK={launch.local_rank} has no GPU of its own: this machine has"
            f" {torch.cuda.device_count()}; start at most that many processes per machine"
        )
    return torch.device("cuda", launch.local_rank)


@contextmanager
def process_group(device: torch.device, timeout: timedelta) -> Iterator[Group]:
    """The `Group` of this process, for one training run.

    Alone: `SINGLE` (on `device`). Under torchrun: joins the launch (gloo on CPU, NCCL on
    CUDA) and leaves it at the end; a process group the caller already set up is used
    as it is and left open. `timeout` bounds every collective: ranks wait in one while
    rank 0 works alone (the calibration and the next-item head).
    """
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))
        launch = Launch(rank=rank, world=world, local_rank=local) if world > 1 else None
        yield _group(training_device(device, launch), launch)
        return
    launch = launch_env()
    if launch is None:
        yield Group(device=device)
        return
    if not dist.is_available():
        raise ConfigError(f"this PyTorch build has no torch.distributed: {_HOW}")
    device = training_device(device, launch)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=timeout, device_id=_device_id(device))
    try:
        yield _group(device, launch)
    finally:
        dist.destroy_process_group()


def _group(device: torch.device, launch: Launch | None) -> Group:
    if launch is None:
        return Group(device=device)
    return Group(rank=launch.rank, world=launch.world, local_rank=launch.local_rank, device=device)


def _device_id(device: torch.device) -> torch.device | None:
    """NCCL binds the group to this process's GPU (eager init, no guessing)."""
    return device if device.type == "cuda" else None
