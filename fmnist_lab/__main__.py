"""`python -m fmnist_lab` runs the same command as `fmnist-lab`."""

from fmnist_lab.cli import run

run()
