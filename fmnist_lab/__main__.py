"""`python -m fmnist_lab` runs the same command as `fmnist-lab`."""

import sys

from fmnist_lab.cli import main

sys.exit(main())
