"""Runnable reference implementations of LLM-pruning papers, and the harness that drives them.

Nothing heavy is imported here: `reference_impls.registry` (torch-free) is what `kb validate` reads.

Layout:
- `registry`: every method (kind, module, options) and every runnable paper (labelled runs, claim);
- `harness/`: the machinery shared by all papers (models, data, layer-wise driver, structural edits,
  metrics, runs, reports), see its `__init__`;
- `primitives/`: pure tensor helpers several papers share (masks, block similarity metrics);
- one module per paper, named after its record id (`wanda`, `sparsegpt`, `owl`, `shortgpt`, ...), plus the
  `magnitude` baseline. Each module reads top to bottom: docstring (paper, official code, idea,
  differences), `Config`, pure tensor math, then the model driver `prune(model, calib, config, ctx)`.
"""
