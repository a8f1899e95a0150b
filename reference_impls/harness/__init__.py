"""The harness every paper module runs on. Importing this package imports nothing heavy.

contract   how the harness calls a method (`Config`, `prune(model, calib, config, ctx) -> Outcome`) and the
           invariants it checks afterwards
options    torch-free option types shared by methods (sparsity targets, N:M patterns, `--set` parsing)
models     the model zoo (`tiny-llama`, `random-llama`, local directories, hub ids); smollm2 fetches tiny-llama
data       corpora and the calibration / evaluation / held-out token streams
layerwise  the layer-by-layer calibration driver
structure  structural edits that keep a saveable model (remove layers, skip sublayers), saving, and the
           refusal of a model whose config cannot describe it (`check_savable`)
reload_check  reload a saved directory and compare its logits with the pruned model before publishing it
recovery   short healing after structural pruning: LoRA steps (merged) and logit distillation, equal budgets
evaluate   perplexity;  probe: the offline multiple-choice probe;  speed: CPU prefill/decode timing
metrics    everything measured about one model, as `kb.results.Metrics`
runner     `reproduce` (a paper's labelled runs, each from the dense model) and `prune_to_dir`
report     versions and the atomic JSON writer
"""
