"""Shared building blocks of the paper modules: pure functions over tensors, no model driving.

`masks` (which weights to prune: per row, per matrix, N:M), `blocks` (how much a decoder layer changes the
hidden state: cosine similarity, Block Influence, angular distance), `groups` (the dependency groups of
structured width pruning: masking and physical compaction), `importance` (scores of those groups: Taylor,
second order, magnitude, activations, random).
"""
