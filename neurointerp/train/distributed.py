"""Multi-process training with torch DDP under ``torchrun`` / ``srun``.

``torchrun --nproc-per-node N -m neurointerp train ...`` starts N processes; each reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, joins the process group (NCCL on GPUs, gloo on
CPUs), takes 1/N of every batch and averages gradients with the others. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # we initialised the process group (and tear it down)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return [float(v) for v in t.cpu()]

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owned = False


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun / SLURM environment.

    torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` come first. Without them, a step of
    several tasks started by ``srun -n N`` (``SLURM_NTASKS`` > 1, ``SLURM_PROCID``,
    ``SLURM_LOCALID``; ``SLURM_STEP_NUM_TASKS`` is srun's own) joins one process group too -- instead of N independent runs writing
    into the same folder; it then needs ``MASTER_ADDR`` and ``MASTER_PORT`` (the first node and
    a free port), which sbatch scripts export.
    """
    if os.environ.get("WORLD_SIZE", "").strip():
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
        return rank, world, local
    # SLURM_STEP_NUM_TASKS is set by srun for its step only (not in the batch script itself)
    ntasks = os.environ.get("SLURM_STEP_NUM_TASKS", "").strip()
    procid = os.environ.get("SLURM_PROCID", "").strip()
    if ntasks.isdigit() and int(ntasks) > 1 and procid.isdigit():
        from neurointerp.errors import InputError

        if not (os.environ.get("MASTER_ADDR", "").strip() and os.environ.get("MASTER_PORT", "").strip()):
            raise InputError(
                f"started by srun as task {procid} of {ntasks}: export MASTER_ADDR and MASTER_PORT "
                "(or launch through torchrun) so the tasks train one model together"
            )
        rank, world = int(procid), int(ntasks)
        local = int(os.environ.get("SLURM_LOCALID", "0") or 0)
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
        return rank, world, local
    return 0, 1, 0


def init_distributed(device) -> Dist:
    """Join the process group when started by torchrun with more than one process."""
    rank, world, local = env_world()
    if world <= 1:
        return Dist()
    import datetime

    import torch
    import torch.distributed as dist

    owned = False
    if not dist.is_initialized():
        backend = "nccl" if getattr(device, "type", str(device)) == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        owned = True
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, owned=owned)


def shard(batch, rank: int, world: int):
    """This process's part of a global batch (never empty: a short batch is repeated)."""
    import numpy as np

    batch = np.asarray(batch)
    if world <= 1:
        return batch
    if len(batch) < world:
        batch = np.resize(batch, world)
    return np.array_split(batch, world)[rank]
