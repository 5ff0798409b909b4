"""Imports every lesson's check module so that their exercises are registered."""

import importlib
import pkgutil

import fmnist_lab.checks as _checks

for _module in pkgutil.iter_modules(_checks.__path__):
    if _module.name.startswith("lesson"):
        importlib.import_module(f"fmnist_lab.checks.{_module.name}")
