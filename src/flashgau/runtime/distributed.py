"""The processes of one run: torchrun's process group, the collectives training needs, and how the model is spread
over the processes (PyTorch's DistributedDataParallel, or FSDP2's `fully_shard`).

    with join_process_group("auto", fsdp=False) as dist:   # under torchrun with WORLD_SIZE > 1: joined
        forward = dist.parallel(model, model)                 # DDP-wrapped (or sharded in place with fsdp)
        tokens, = dist.sum([local_tokens])                    # every process gets the total
        plan = dist.broadcast(plan)                           # rank 0's object on every process

torchrun starts N processes and tells each who it is in its environment (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE: read by launch.py; MASTER_ADDR, MASTER_PORT: read by torch.distributed). Without torchrun, or with
one process, `join_process_group` gives a `Distributed` of one process whose collectives return their inputs, so
the training loop has one code path for both.

The backend follows the device: NCCL on CUDA (process LOCAL_RANK on cuda:LOCAL_RANK, see device.resolve_device),
gloo on CPUs. Every collective times out after FLASHGAU_DIST_TIMEOUT seconds (default 600): a process whose peer
died or hangs stops with `PeerLost` (one line) instead of waiting forever. gloo notices a dead peer at once (its
connection closes); a peer that hangs is caught by the timeout. On NCCL, PyTorch's watchdog ends a process whose
collective timed out. A process that joined leaves the group at the end: after a barrier when the run ended well
(no process tears its group down while a peer's collective still runs), at once after an error.

FSDP (`fsdp=True`): each block of the model, then the whole model, is sharded with `fully_shard` over all
processes; parameters, gradients and optimizer state are split, and forward passes gather the parameters they
need (so every process must run the same number of them). Checkpoints stay one file in the layout of a
single-process run: `model_state` / `optimizer_state` gather the full state to rank 0 through
torch.distributed.checkpoint's state-dict functions (`get_model_state_dict`, `get_optimizer_state_dict`), and
`load_optimizer_state` shards a full one again; so a run saved with FSDP resumes on one process, with DDP, or with
FSDP on another number of processes. fully_shard refuses 0-dimensional parameters (FLASH's sinusoid scale), so
those are made 1-element vectors while sharded and 0-dimensional again in the state dicts.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import torch

from ..errors import ConfigError, FlashgauError
from .device import resolve_device
from .launch import torchrun_launch

TIMEOUT_ENV = "FLASHGAU_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 600.0          # seconds a collective waits for the other processes (PyTorch's NCCL default)
T = TypeVar("T")


class PeerLost(FlashgauError):
    """Another process of the run died, hung past the collective timeout, or its connection broke."""


class PeerFailed(FlashgauError):
    """Another process of the run failed while setting up (that process reports its own error)."""


def collective_timeout() -> float:
    """Seconds a collective may wait: $FLASHGAU_DIST_TIMEOUT, else DEFAULT_TIMEOUT."""
    text = os.environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


class Distributed:
    """One process's view of the run's processes: who it is, its device, and the collectives and model wrapping
    training needs. A Distributed of one process (the default) does no communication: its collectives return
    their inputs and `parallel` returns the model as it is."""

    def __init__(self, *, rank: int = 0, world_size: int = 1, local_rank: int = 0, local_world_size: int = 1,
                 device: Optional[torch.device] = None, fsdp: bool = False, timeout: Optional[float] = None,
                 backend: Optional[str] = None) -> None:
        self.rank, self.world_size = rank, world_size
        self.local_rank, self.local_world_size = local_rank, local_world_size
        self.device = device if device is not None else torch.device("cpu")
        self.fsdp, self.timeout, self.backend = fsdp, timeout, backend
        self.scalars: frozenset = frozenset()        # 0-dim parameters made 1-element vectors for fully_shard

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's files and prints."""
        return self.rank == 0

    def describe(self) -> str:
        if self.world_size == 1:
            return "1 process"
        how = "FSDP (fully_shard)" if self.fsdp else "DDP"
        return (f"{self.world_size} processes ({self.backend}, {how}, collective timeout {self.timeout:g} s); "
                f"this is rank {self.rank}")

    # ------------------------------------------------------------------------------------------ collectives
    def sum(self, values: Sequence[float]) -> list[float]:
        """The sums over all processes of `values` (in float64)."""
        return self._reduce(values, "sum")

    def max(self, values: Sequence[float]) -> list[float]:
        """The maxima over all processes of `values`."""
        return self._reduce(values, "max")

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any process."""
        return self.max([float(bool(flag))])[0] > 0

    def all(self, flag: bool) -> bool:
        """Whether `flag` is true on every process."""
        return -self.max([-float(bool(flag))])[0] > 0

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj` (any picklable object), on every process."""
        if self.world_size == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every process's `obj`, in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def settle(self, error: Optional[BaseException]) -> None:
        """Every process says whether it failed; if any did, every process raises: the lowest failed rank its own
        error, the others PeerFailed naming it (that rank prints the error; the others exit quietly)."""
        if self.world_size == 1:
            if error is not None:
                raise error
            return
        reports = self.gather(None if error is None else f"{type(error).__name__}: {error}")
        failed = [r for r, report in enumerate(reports) if report is not None]
        if not failed:
            return
        if failed[0] == self.rank:
            raise error
        raise PeerFailed(f"rank {failed[0]} failed: {reports[failed[0]]}") from None

    def first_on_each_machine(self, fn: Callable[[], T]) -> T:
        """fn() on the first process of each machine (LOCAL_RANK 0), then on the others: what the first one
        prepares into the machine's data cache, the others find there. A failure on any process stops all of
        them (`settle`)."""
        if self.world_size == 1:
            return fn()
        result: Any = None
        error: Optional[BaseException] = None
        for first in (True, False):
            if (self.local_rank == 0) == first and error is None:
                try:
                    result = fn()
                except Exception as err:       # the failing process raises it (with its traceback) in settle
                    error = err
            self.settle(error)
        return result

    def check_same(self, values: dict, hint: str = "") -> None:
        """ConfigError on every process unless all processes hold the same `values` ({what: small picklable value});
        the message names the first that differs, and ends with `hint`."""
        if self.world_size == 1:
            return
        everyone = self.gather(values)
        for what, mine in everyone[0].items():
            differ = [r for r, theirs in enumerate(everyone) if theirs.get(what) != mine]
            if differ:
                raise ConfigError(f"the processes of this run do not agree on {what}: rank 0 has {mine!r}, rank "
                                  f"{differ[0]} has {everyone[differ[0]].get(what)!r}{hint}")

    def _reduce(self, values: Sequence[float], op: str) -> list[float]:
        if self.world_size == 1:
            return [float(v) for v in values]
        dev = self.device if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM if op == "sum" else
                                     torch.distributed.ReduceOp.MAX)
        return t.tolist()

    # ------------------------------------------------------------------------------------------ the model
    def parallel(self, model: torch.nn.Module, forward: torch.nn.Module) -> torch.nn.Module:
        """What a training step calls. One process: `forward` (the model or its torch.compile wrapper). DDP:
        `forward` wrapped in DistributedDataParallel (gradients averaged over the processes in backward). FSDP:
        each of `model.blocks`, then `model`, sharded in place by fully_shard, and `forward` itself. Call it before
        making the optimizer: sharding replaces the parameters."""
        if self.world_size == 1:
            return forward
        if not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(forward, device_ids=ids)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.scalars = frozenset(_vectorize_scalars(model))
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for block in getattr(model, "blocks", ()):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return forward

    def no_sync(self, forward: torch.nn.Module, last: bool):
        """The context of a micro-batch's forward and backward: DDP keeps the gradients of all but the step's last
        micro-batch local (one all-reduce per step); FSDP reduces every micro-batch (its point is memory)."""
        if self.world_size > 1 and not self.fsdp and not last:
            return forward.no_sync()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        """With FSDP, every parameter gathered whole on every process for the duration (decoding calls the blocks'
        own step functions, which FSDP's hooks do not see); all processes must enter it. Nothing otherwise."""
        groups = [m for m in model.modules() if hasattr(m, "unshard") and hasattr(m, "reshard")] if self.fsdp \
            else []
        for group in groups:
            group.unshard()
        try:
            yield
        finally:
            for group in groups:
                group.reshard()

    def all_finite(self, tensors) -> bool:
        """Whether every value of `tensors` (parameters; with FSDP this process's shards of them) is finite, on
        every process."""
        local = all(bool(torch.isfinite(_local(t)).all()) for t in tensors)
        return self.all(local) if self.fsdp else local

    def model_state(self, model: torch.nn.Module) -> dict:
        """The model's state dict as one process holds it (with FSDP: gathered to rank 0, the other processes get
        {}; every process must call)."""
        if not self.fsdp:
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {name: t.reshape(()) if name in self.scalars else t for name, t in full.items()}

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's state_dict() as one process's optimizer writes it (parameters by index); with FSDP
        gathered to rank 0 ({} on the others; every process must call)."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                    cpu_offload=True))
        if not self.is_main:
            return {}
        index = {name: i for i, name in enumerate(_param_names(model, optimizer))}
        state = {index[name]: {k: self._unvector(name, k, v) for k, v in entry.items()}
                 for name, entry in full["state"].items()}
        groups = [{**group, "params": [index[name] for name in group["params"]]} for group in full["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
        """optimizer.load_state_dict(saved) for a state saved by `optimizer_state` (any number of processes); with
        FSDP each process keeps its shards of it."""
        if not self.fsdp:
            optimizer.load_state_dict(saved)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = _param_names(model, optimizer)
        if len(names) != sum(len(g["params"]) for g in saved["param_groups"]):
            raise ValueError("the saved optimizer state holds another number of parameters than this model")
        state = {names[i]: {k: self._vector(names[i], k, v) for k, v in entry.items()}
                 for i, entry in saved["state"].items()}
        groups = [{**group, "params": [names[i] for i in group["params"]]} for group in saved["param_groups"]]
        set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups},
                                 options=StateDictOptions(full_state_dict=True))

    def _unvector(self, name: str, key: str, value: Any) -> Any:
        """An optimizer state entry of a vectorized scalar parameter as the scalar parameter has it."""
        return value.reshape(()) if self._shaped_like(name, key, value) else value

    def _vector(self, name: str, key: str, value: Any) -> Any:
        """... and as the vectorized parameter has it (its moments are shaped like it; its step count is not)."""
        return value.reshape(1) if self._shaped_like(name, key, value) else value

    def _shaped_like(self, name: str, key: str, value: Any) -> bool:
        return name in self.scalars and key != "step" and torch.is_tensor(value) and value.numel() == 1

    # ----------------------------------------------------------------------------------------------- faults
    def lost_peer(self, err: BaseException) -> Optional[str]:
        """In words, when `err` is a collective that failed because another process died, hung past the timeout
        or dropped its connection; None for any other error."""
        if self.world_size == 1 or not isinstance(err, RuntimeError):
            return None
        text = str(err)
        if not (isinstance(err, torch.distributed.DistError) or any(m in text for m in _COLLECTIVE_FAILURES)):
            return None
        peer = f"rank {1 - self.rank}" if self.world_size == 2 else "another process of the run"
        detail = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0] if text.strip() else type(err).__name__)
        detail = detail.split(". This is typically", 1)[0][:160]
        if "timed out" in text.lower() or "timeout" in text.lower():
            why = f"no answer within the {self.timeout:g} s collective timeout, {TIMEOUT_ENV}"
        else:
            why = "it died or closed its connection"
        return f"{peer} stopped responding ({why}: {detail})"


_COLLECTIVE_FAILURES = ("gloo", "NCCL", "Connection closed by peer", "Connection reset by peer", "Broken pipe",
                        "pair closure", "Timed out", "ProcessGroup")


@contextlib.contextmanager
def join_process_group(device_spec: Any = "auto", *, fsdp: bool = False) -> Iterator[Distributed]:
    """The run's processes, for the duration: under torchrun with WORLD_SIZE > 1 this process joins the process
    group (gloo on CPUs, NCCL on cuda:LOCAL_RANK) unless it already belongs to one, and leaves it at the end if it
    joined; otherwise a Distributed of one process on the device `device_spec` names (device.resolve_device)."""
    launch = torchrun_launch()
    device = resolve_device(device_spec)
    if launch is None or launch.world_size == 1:
        if fsdp:
            raise ConfigError("--fsdp shards the model over the processes torchrun starts; run under torchrun "
                              "--nproc_per_node N (N >= 2), or leave out --fsdp")
        yield Distributed(device=device)
        return
    timeout = collective_timeout()
    backend = "nccl" if device.type == "cuda" else "gloo"
    joined = False
    if not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout))
        joined = True
    dist = Distributed(rank=launch.rank, world_size=launch.world_size, local_rank=launch.local_rank,
                       local_world_size=launch.local_world_size, device=device, fsdp=fsdp, timeout=timeout,
                       backend=torch.distributed.get_backend())
    try:
        yield dist
    except BaseException:
        if joined and torch.distributed.is_initialized():   # no barrier: a peer may be gone or mid-collective
            torch.distributed.destroy_process_group()
        raise
    if joined and torch.distributed.is_initialized():
        # every process past its last collective before any leaves (PyTorch's shutdown pattern): a process that
        # exits while a peer's collective still runs can abort in gloo's teardown. This process's work is done and
        # saved: a peer that is already gone fails the barrier, which then has nothing left to guard
        with contextlib.suppress(RuntimeError):
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _vectorize_scalars(model: torch.nn.Module) -> list[str]:
    """Replace each 0-dim parameter by a 1-element one (fully_shard shards along dim 0); their names. Elementwise
    uses (`x * scale`) broadcast the same way."""
    names = []
    for module_name, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 0:
                setattr(module, name, torch.nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad))
                names.append(f"{module_name}.{name}" if module_name else name)
    return names


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter in the order the optimizer indexes them (its groups, in order)."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id[id(p)] for group in optimizer.param_groups for p in group["params"]]


def _local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a (possibly sharded) tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def as_float(t) -> float:
    """A scalar tensor (a sharded one's full value) as a Python float."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return float(t)
