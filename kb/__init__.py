"""pruning-kb core: records, vocabulary, validation, results and code hashes.

The bottom layer: it imports neither the harness (`reference_impls`), the site builder (`site_builder`)
nor the command line (`kb_cli`), and never torch (`tests/core/test_layering.py`). Nothing heavy is
imported here: `kb --help`, `kb validate` and `kb build` never import torch.
"""

__version__ = "0.1.0"
