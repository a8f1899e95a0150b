"""Shared building blocks of the paper modules: pure functions over tensors, no model driving.

`masks` (which weights to prune: per row, per matrix, N:M), `blocks` (how much a decoder layer, a window of
layers or a sublayer changes the hidden state, and loss-based scores: removal perplexity, Taylor+, magnitude,
Shapley), `selection` (which layers or sublayers to remove given scores: window, individual, reverse order,
progressive), `groups` (the dependency groups of
structured width pruning: masking and physical compaction), `norms` (what must stay consistent around the
residual stream: untying a tied LM head, rescaling RMSNorm after hidden channels are cut), `importance` (scores
of those groups: Taylor, second order, magnitude, activations, random), `depth` (how many layers a depth method
removes: the `--layers` target and its default).
"""
