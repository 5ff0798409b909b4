"""fmnist-lab: convolutional networks with batch normalisation on Fashion-MNIST, step by step.

Modules: `data` (find, verify, load, batch), `models`, `train`, `evaluate`, `plots`, `original`
(the original notebook's numbers) and `cli`.
"""

__version__ = "0.2.0"  # a release is tagged v<version>: the Colab badges and install cells pin that tag
