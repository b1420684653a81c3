"""What every benchmark shares: the record of where and how it ran, a resumable store of finished runs, the
machine's measured matrix-multiply peak, and small report helpers."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional

DEFAULT_OUT = "benchmarks/results"
PACKAGES = ("torch", "numpy", "matplotlib", "tokenizers", "flashgau")


def command_line() -> str:
    """The command as the user typed it (best effort: `flashgau ...` when run through the entry point)."""
    argv = list(sys.argv)
    prog = os.path.basename(argv[0]) if argv else ""
    if prog in ("flashgau", "__main__.py", "cli.py"):
        argv[0] = "flashgau"
    return " ".join(shlex.quote(a) for a in argv)


def environment() -> dict[str, Any]:
    """Command, package versions and machine: recorded in every report."""
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    machine = dict(cpu=_cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(),
                   platform=platform.platform(), mkldnn=torch.backends.mkldnn.is_available(),
                   cpu_capability=_cpu_capability(), memory_gib=_memory_gib())
    return {"command": command_line(), "python": platform.python_version(), "packages": versions,
            "machine": machine, "code": code_state(), "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


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


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_capability() -> Optional[str]:
    try:
        import torch
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - old torch
        return None


def _memory_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


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
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            return None

    def save(self, key: str, record: dict) -> Path:
        return write_json(self.path(key), record)

    def all(self) -> list[dict]:
        out = []
        for p in sorted(self.folder.glob("*.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except ValueError:
                continue
        return out


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def matmul_peak(dtype_name: str, sizes: Iterable[int] = (1024, 2048), repeats: int = 8) -> dict:
    """This machine's measured matrix-multiply rate (FLOP/s) for square n x n matmuls in fp32 or bf16, with the
    threads torch uses now: the best rate over `sizes` and `repeats` timed products (after two warm-ups); the
    median rate per size is kept beside it."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    best, per_size = 0.0, {}
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        a @ b
        a @ b
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        per_size[str(n)] = {"best": 2 * n**3 / min(times), "median": 2 * n**3 / statistics.median(times)}
        best = max(best, 2 * n**3 / min(times))
    return {"dtype": dtype_name, "flops_per_s": best, "per_size": per_size, "threads": torch.get_num_threads()}


def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "–"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.0f} {unit}"
    return f"{n:.0f} B"


def fmt_ctx(t: int) -> str:
    return f"{t // 1024}K" if t >= 1024 and t % 1024 == 0 else str(t)


def env_markdown(env: dict) -> str:
    m = env.get("machine", {})
    pk = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    return (f"- command: `{env.get('command')}`\n"
            f"- machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('threads')} torch threads, "
            f"{m.get('memory_gib')} GiB RAM, CPU capability {m.get('cpu_capability')}\n"
            f"- packages: python {env.get('python')}, {pk}\n"
            f"- date: {env.get('time')}\n"
            + (f"- code: git {env['code'].get('git_commit')}, source sha256 {env['code'].get('source_sha256')}\n"
               if env.get("code") else ""))
