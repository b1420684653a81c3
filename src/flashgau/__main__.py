"""`python -m flashgau COMMAND ...`, the same as the `flashgau` command; what torchrun runs:
`torchrun --nproc_per_node N -m flashgau train ...`."""

import sys

from .cli import main

sys.exit(main())
