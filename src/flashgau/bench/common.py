"""What every benchmark shares: its options for device and precision, settings resolved against the defaults or the
--quick set, the record of where and how it ran (the report header that names the machine; the machine kinds an
equal-time comparison mixes), a resumable store of finished runs, writes that are whole or absent (a report's files
together; a failed write is one line), the device's measured matrix-multiply peak, and the Markdown table of every
report."""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch

from ..errors import FlashgauError
from ..files import atomic_write, write_failure, write_files
from ..runtime import PRECISIONS
from ..runtime.device import machine_record

DEFAULT_OUT = "benchmarks/results"
PACKAGES = ("torch", "numpy", "matplotlib", "tokenizers", "flashgau")


# ------------------------------------------------------------------------------------------------ options

def add_common_arguments(p: argparse.ArgumentParser, *, precision_default: str, several: bool = False) -> None:
    """--device, --precision (--precisions with `several`) and --out, as every bench command takes them."""
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (a CUDA GPU when PyTorch sees one, "
                   "else the CPU), cpu, cuda or cuda:N (default: auto)")
    what = ("auto: bf16 autocast where this device is fast at it (a GPU with bf16, a CPU whose bf16 products a "
            "sub-second probe finds fast), fp32 elsewhere; fp16 needs a CUDA device")
    if several:
        p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None, metavar="PRECISION",
                       help=f"{what} (default: {precision_default})")
    else:
        p.add_argument("--precision", choices=PRECISIONS, default=None, help=f"{what} (default: {precision_default})")
    p.add_argument("--out", default=None, help=f"results folder (default: {DEFAULT_OUT}; {DEFAULT_OUT}/gpu on a "
                   "CUDA device)")


def options(args: argparse.Namespace, defaults: dict, quick: dict) -> dict:
    """The value of every option named in `defaults`: the one given on the command line (options default to None,
    so "not given" is plain), else the --quick value when --quick is on and it has one, else the default."""
    use_quick = bool(getattr(args, "quick", False))
    out = {}
    for name, default in defaults.items():
        given = getattr(args, name, None)
        out[name] = given if given is not None else (quick.get(name, default) if use_quick else default)
    return out


def results_folder(out: Optional[str], device) -> Path:
    """--out, or the default: benchmarks/results for the CPU, benchmarks/results/gpu for a CUDA device."""
    if out is not None:
        return Path(out)
    return Path(DEFAULT_OUT) / ("gpu" if device.type == "cuda" else "")


def device_tag(device, precision: str) -> str:
    """Suffix of saved-run keys: none for fp32 on the CPU (the keys of earlier runs), "-cuda" for a GPU, then
    "-bf16" / "-fp16" when `precision` (as asked: "auto" is resolved on `device`) runs in that dtype, so runs of
    other device kinds or precisions in one results folder never stand in for each other."""
    from ..runtime import resolve_precision

    name = resolve_precision(precision, device).name
    return ("" if device.type == "cpu" else f"-{device.type}") + ("" if name == "fp32" else f"-{name}")


def main(name: str, add_arguments: Callable, run: Callable, argv: Optional[Sequence[str]] = None) -> int:
    """`python -m flashgau.bench.<name>`: parse, run, and turn a user error into one line and exit status 2."""
    p = argparse.ArgumentParser(prog=f"flashgau bench {name}")
    add_arguments(p)
    return run_checked(name, run, p.parse_args(argv))


def run_checked(name: str, run: Callable, args: argparse.Namespace) -> int:
    try:
        return run(args)
    except FlashgauError as err:
        print(f"flashgau bench {name}: error: {err}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------ where and how it ran

def command_line() -> str:
    """The command as the user typed it (best effort: `flashgau ...` through the entry point or flashgau.cli,
    `python -m flashgau.bench.speed ...` for a module of the package)."""
    argv = [shlex.quote(a) for a in sys.argv] or [""]
    package = Path(__file__).resolve().parents[1]
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else Path()
    if script.name == "flashgau":
        argv[0] = "flashgau"
    elif package in script.parents:
        parts = script.relative_to(package.parent).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__main__" else parts
        argv[0] = "flashgau" if parts == ("flashgau", "cli") else "python -m " + ".".join(parts)
    return " ".join(argv)


def environment(device=None) -> dict[str, Any]:
    """Command, package versions, the machine and device (flashgau.runtime), the code: recorded in every report."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"command": command_line(), "python": platform.python_version(), "packages": versions,
            "machine": machine_record(device), "code": code_state(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def code_state() -> dict:
    """The flashgau source measured: git commit of the checkout (if any) and a SHA-256 over the package's .py
    files as they are on disk (differs whenever uncommitted edits differ)."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    commit = None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"git_commit": commit, "source_sha256": digest.hexdigest()[:16]}


def machine_line(m: dict) -> str:
    """The machine in one line: CPU, its capability and ISA flags, cores, threads, memory, and the device (with the
    GPU's name where one ran). Records written before the device was recorded read as the CPU."""
    flags = f" ({', '.join(m['cpu_flags'])})" if m.get("cpu_flags") else ""
    line = (f"{m.get('cpu')}, CPU capability {m.get('cpu_capability')}{flags}, {m.get('cores')} cores, "
            f"{m.get('threads')} torch threads, {m.get('memory_gib')} GiB RAM; device {m.get('device', 'cpu')}")
    if m.get("gpu"):
        line += (f": {m['gpu']} ({m.get('gpu_memory_gib')} GiB, compute capability {m.get('gpu_capability')}, "
                 f"CUDA {m.get('cuda')})")
    return line


UNKNOWN_MACHINE = "unknown machine"


def machine_kind(env: Optional[dict]) -> str:
    """The kind of machine a run record's `env` (environment()) names, as far as its speed goes: the GPU's name on a
    GPU, else the CPU with its capability and cores, e.g. "AMD EPYC (AVX2, 2 cores)"; UNKNOWN_MACHINE for a record
    without a machine, so that such runs stand out only beside runs of a known machine."""
    m = (env or {}).get("machine")
    if not m:
        return UNKNOWN_MACHINE
    return m["gpu"] if m.get("gpu") else f"{m.get('cpu')} ({m.get('cpu_capability')}, {m.get('cores')} cores)"


def mixed_machines(runs: Iterable[dict], name: Callable[[dict], str]) -> dict[str, list[str]]:
    """The rows (`name` of each run record) per machine kind (kinds in name order), when `runs` were trained on
    more than one kind; else {}. Runs compared at equal training time are comparable only from one kind: another
    makes more (or fewer) steps in the same seconds."""
    kinds: dict[str, list[str]] = {}
    for r in runs:
        kinds.setdefault(machine_kind(r.get("env")), []).append(name(r))
    return dict(sorted(kinds.items())) if len(kinds) > 1 else {}


def mixed_machines_line(where: str, kinds: dict[str, list[str]]) -> str:
    """The Markdown line of a report that says the equal-time comparison `where` mixes machine kinds
    (mixed_machines), naming each kind and its rows."""
    rows = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in kinds.items())
    return (f"⚠ **{where}: runs from {len(kinds)} kinds of machine**, not comparable at equal time (one makes more "
            f"steps in the same seconds): {rows}.")


def warn_mixed_machines(where: str, kinds: dict[str, list[str]]) -> None:
    """The one-line warning, printed as a report is built, that the equal-time comparison `where` mixes machine
    kinds (mixed_machines); the report names the rows of each."""
    print(f"warning: {where}: runs trained on {len(kinds)} machine kinds, not comparable at equal time: "
          + " vs ".join(f"{kind} ({len(names)} run{'s' if len(names) > 1 else ''})" for kind, names in kinds.items()),
          flush=True)


def env_markdown(env: dict) -> str:
    """The run-environment lines of a report header."""
    pk = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    return (f"- command: `{env.get('command')}`\n"
            f"- machine: {machine_line(env.get('machine', {}))}\n"
            f"- packages: python {env.get('python')}, {pk}\n"
            f"- date: {env.get('time')}\n"
            + (f"- code: git {env['code'].get('git_commit')}, source sha256 {env['code'].get('source_sha256')}\n"
               if env.get("code") else ""))


def unique(items: Iterable, key: Callable[[Any], Any]) -> list:
    """`items` in order, the first of each `key` (a report's run environments, one per command)."""
    seen, out = set(), []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
    return out


# ------------------------------------------------------------------------------------------- saved results

class ResultStore:
    """One JSON file per finished run under `folder`; a rerun skips the keys already saved.

    Files are written atomically (temporary file + rename), so an interrupted suite leaves only whole results.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    def load(self, key: str) -> Optional[dict]:
        return read_json(self.path(key))

    def save(self, key: str, record: dict) -> Path:
        return write_json(self.path(key), record)

    def all(self) -> list[dict]:
        return [r for r in map(read_json, sorted(self.folder.glob("*.json"))) if r is not None]


def read_json(path: Path) -> Optional[Any]:
    """A JSON file's content; None when it is missing or not whole."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=1, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, text)


class WriteFailed(FlashgauError):
    """A file of results could not be written (`reason`: why, in words: a full disk named as such)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"cannot write {what}: {reason}")
        self.reason = reason


@contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """A write of `path` that fails (a full disk, a folder that cannot be written) as WriteFailed, one line."""
    try:
        yield
    except OSError as err:
        raise WriteFailed(str(path), write_failure(err, Path(path).parent)) from None


def write_reports(out: Path, stem: str, report: dict, markdown: Callable, plot: Callable) -> None:
    """A benchmark's <out>/<stem>.json, .md and .png, all three or none (files.write_files: written beside, then
    moved in; a failed write is one line and leaves the reports there as they were), then its headline lines."""
    out = Path(out)

    def write(folder: Path) -> None:
        write_json(folder / f"{stem}.json", report)
        write_text(folder / f"{stem}.md", markdown(report))
        plot(report, folder / f"{stem}.png")

    try:
        with write_errors(out):
            write_files(out, write, replace=True)
    except WriteFailed as err:
        raise WriteFailed(f"{out / stem}.json, .md and .png", f"{err.reason}; the reports there are as they were") \
            from None
    print(f"wrote {out / stem}.md, .json, .png")
    for line in report.get("headline", []):
        print(line["text"])


def log_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    """A panel of quantities against context or position, both axes logarithmic (x in powers of two)."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda handle: fig.savefig(handle, dpi=100, format=path.suffix[1:] or "png"))


# --------------------------------------------------------------------------------------------- measuring

def synchronizer(device) -> Callable[[], None]:
    """A function that waits for the device's queued work (CUDA kernels run asynchronously); nothing on a CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def step_clock(kind: str) -> Callable[[], float]:
    """The clock a CPU probe times its steps by: "wall" (time.perf_counter), or "thread", the calling thread's CPU
    time with torch set to one thread (a CPU step's whole work then runs on that thread, and other processes' load
    does not inflate it)."""
    if kind == "thread":
        torch.set_num_threads(1)
        return time.thread_time
    return time.perf_counter


def matmul_peak(precision: str, device, sizes: Iterable[int], repeats: int = 8) -> dict:
    """The device's measured matrix-multiply rate (FLOP/s) for square n x n products in fp32, bf16 or fp16 (on a
    CPU with the threads torch uses now): the best rate over `sizes` and `repeats` timed products (after two
    warm-ups); the median rate per size is kept beside it."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    sync = synchronizer(device)
    best, per_size = 0.0, {}
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
        a @ b
        a @ b
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            a @ b
            sync()
            times.append(time.perf_counter() - t0)
        per_size[str(n)] = {"best": 2 * n**3 / min(times), "median": 2 * n**3 / statistics.median(times)}
        best = max(best, 2 * n**3 / min(times))
    return {"dtype": precision, "flops_per_s": best, "per_size": per_size, "threads": torch.get_num_threads(),
            "device": str(device)}


# --------------------------------------------------------------------------------------------- formatting

def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} B"


def fmt_ctx(t: int) -> str:
    return f"{t // 1024}K" if t >= 1024 and t % 1024 == 0 else str(t)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> list[str]:
    """A Markdown table as lines: the first `left` columns left-aligned (names), the others right-aligned
    (numbers)."""
    line = lambda cells: "| " + " | ".join(str(c) for c in cells) + " |"  # noqa: E731
    return [line(header), "|" + "".join("---|" if i < left else "---:|" for i in range(len(header)))] \
        + [line(r) for r in rows]
