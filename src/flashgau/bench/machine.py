"""What the decode report records about where it ran (a compact subset of common.environment())."""

from __future__ import annotations

import datetime
import os
import platform

import torch

from ..runtime.device import cpu_name


def describe_machine() -> dict:
    from .. import __version__
    return dict(cpu=cpu_name(), cores=os.cpu_count(), threads=torch.get_num_threads(), torch=torch.__version__,
                flashgau=__version__, python=platform.python_version(),
                date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
