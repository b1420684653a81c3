"""Whether torch.compile can build kernels on a device here, checked without compiling anything.

torch.compile's default backend (inductor) writes C++ (OpenMP) kernels on CPUs and Triton kernels on CUDA GPUs:

    ok, why = compiler_status("cpu")    # (True, "C++ compiler /usr/bin/g++") or (False, "no C++ compiler ...")

On CPUs inductor takes the first compiler of `torch._inductor.config.cpp.cxx` that answers `--version` (on Linux
(None, $CXX or "g++"); None means a g++ installed through conda, only when TORCH_INDUCTOR_INSTALL_GXX is set, so it
is skipped here), the search of `torch._inductor.cpp_builder.cpp_compiler_search`; on Windows $CXX or "cl". This
module repeats that search (looking the compiler up on PATH and running `--version` once per process, cached) instead
of calling the private function. On CUDA the check is that triton is importable. Other devices: no.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from typing import Optional


def compiler_status(device_type: str) -> tuple[bool, str]:
    """(whether torch.compile's default backend can build kernels for `device_type` here, what was found or what is
    missing, in words)."""
    if device_type == "cpu":
        cxx = cpp_compiler()
        if cxx is None:
            return False, "no C++ compiler found for torch.compile on CPU (install g++ or set CXX)"
        return True, f"C++ compiler {cxx}"
    if device_type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return False, "triton is not installed, which torch.compile needs on CUDA"
        return True, "triton"
    return False, f"no torch.compile backend is checked for {device_type} devices"


@functools.cache
def cpp_compiler() -> Optional[str]:
    """The path of the C++ compiler inductor would use on this CPU, or None when there is none (module docstring)."""
    if sys.platform == "win32":
        search: tuple = (os.environ.get("CXX", "cl"),)
    else:
        try:
            from torch._inductor import config
            cxx = config.cpp.cxx
        except (ImportError, AttributeError):          # another torch layout: inductor's Linux default
            cxx = (None, os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++"))
        search = tuple(cxx) if isinstance(cxx, (list, tuple)) else (cxx,)
    for name in search:
        if not name:
            continue
        path = shutil.which(name)
        if path is None:
            continue
        if sys.platform == "win32":                     # cl has no --version
            return path
        try:
            subprocess.run([path, "--version"], capture_output=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            continue
        return path
    return None
