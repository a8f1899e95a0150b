"""Runnable reference implementations of LLM-pruning papers, and the harness that drives them.

Nothing heavy is imported here: `reference_impls.registry` (torch-free) is what `kb validate` reads.
Layout: `registry` (which paper runs which method, and its claim), `config` (shared, torch-free option
types), `models` + `smollm2` (model zoo), `data` (corpora, token streams), `layerwise` (the layer-by-layer
driver), `masks` (pure mask helpers), `evaluate` (perplexity), `harness` (prune / reproduce runs),
`report` (result JSON), and one module per method: `magnitude`, `wanda`, `sparsegpt`.
"""
