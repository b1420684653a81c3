"""What a benchmark report records about where it ran."""

from __future__ import annotations

import datetime
import os
import platform

import torch


def describe_machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from .. import __version__
    return dict(cpu=cpu, cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                flashgau=__version__, python=platform.python_version(),
                date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
