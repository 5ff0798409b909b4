"""fmnist-lab: convolutional networks with batch normalisation on Fashion-MNIST, step by step.

Modules: `data` (find, verify, load, batch), `models`, `engine` (the one training loop), `train` (the
original run and checkpoints), `recipes` (lesson 07's tricks), `resnet`, `evaluate`, `plots`, `interpret`,
`export` (ONNX), `checks` (the exercise checks and their toolkit), `notebooks` (lessons from solutions,
the notebook checker), `paths`, `doctor`, `original` (the original notebook's settings and numbers)
and `cli`.
"""

__version__ = "0.2.0"  # a release is tagged v<version>: the Colab badges and install cells pin that tag

import sys as _sys

if "IPython" in _sys.modules:  # in a notebook, figures get alt text from their own titles and labels
    from fmnist_lab import figure_alt as _figure_alt

    _figure_alt.register()
