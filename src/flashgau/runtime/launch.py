"""Where this process stands in a torchrun launch, read from the environment torchrun gives it (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE); nothing else reads those variables. The device (device.py: process LOCAL_RANK on
cuda:LOCAL_RANK) and the process group (distributed.py) both start from here; the command asks `launch_rank` who
reports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError


@dataclass(frozen=True)
class Launch:
    """Who this process is among the processes torchrun started (its environment variables)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int


def torchrun_launch() -> Optional[Launch]:
    """This process's place in a torchrun launch; None when torchrun (or a launcher that sets the same variables)
    did not start it."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK are not integers ({env.get('RANK')!r}, "
                          f"{env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}); start the run with torchrun") \
            from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local < max(local_world, 1)):
        raise ConfigError(f"RANK {rank} of WORLD_SIZE {world} (LOCAL_RANK {local}) is not a process of a run; "
                          "start the run with torchrun")
    return Launch(rank, world, local, local_world)


def launch_rank() -> int:
    """This process's rank under torchrun (0 without): what decides who prints the command's results."""
    try:
        launch = torchrun_launch()
    except ConfigError:
        return 0
    return launch.rank if launch is not None else 0
