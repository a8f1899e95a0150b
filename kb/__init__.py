"""pruning-kb core: records, vocabulary, validation and the `kb` command line.

Nothing heavy is imported here: `kb --help`, `kb validate` and `kb build` never import torch.
"""

__version__ = "0.1.0"
