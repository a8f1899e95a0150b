"""The layer-wise driver: captured kwargs, propagation through pruned layers, and the whole pipeline."""

from __future__ import annotations

import copy

import pytest
import torch

from reference_impls import sparsegpt, wanda
from reference_impls.harness import evaluate, layerwise
from reference_impls.harness.contract import Context


def test_capture_keeps_every_kwarg_the_model_passes(random_model, calib_ids):
    with torch.inference_mode():
        (chunk,) = layerwise.capture_layer_inputs(random_model, calib_ids, batch_size=8)
        assert chunk.hidden.shape == (8, 64, 64)
        assert "position_embeddings" in chunk.kwargs  # rotary (cos, sin) from the model, not recomputed by us
        out = layerwise.run_layer(random_model.model.layers[0], chunk)
        ref = random_model(calib_ids, output_hidden_states=True, use_cache=False).hidden_states[1]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", [wanda, sparsegpt])
@pytest.mark.parametrize("batch_size", [None, 3])
def test_layer2_calibrates_on_pruned_layer1_outputs(random_model, calib_ids, method, batch_size):
    seen: list[torch.Tensor] = []
    hook = random_model.model.layers[1].register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).clone()),
        with_kwargs=True,
    )
    with torch.inference_mode():
        dense_out = random_model(calib_ids, output_hidden_states=True, use_cache=False).hidden_states[1]
    seen.clear()
    method.prune(random_model, calib_ids, method.Config(sparsity=0.5), Context(batch_size=batch_size))
    hook.remove()
    fed = torch.cat(
        seen[-len(calib_ids.split(batch_size or 8)) :]
    )  # the last call(s) produced layer 2's inputs
    with torch.inference_mode():
        pruned_out = random_model(calib_ids, output_hidden_states=True, use_cache=False).hidden_states[1]
    torch.testing.assert_close(fed, pruned_out, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fed, dense_out, atol=1e-3)


def test_two_pass_mode_reaches_exact_sparsity(random_model, calib_ids):
    wanda.prune(random_model, calib_ids, wanda.Config(sparsity=0.5), Context(batch_size=3))
    for _name, lin in layerwise.iter_decoder_linears(random_model):
        assert ((lin.weight == 0).sum(1) == lin.weight.shape[1] // 2).all()


@pytest.mark.parametrize("method", [wanda, sparsegpt])
def test_sparsity_zero_pipeline_gives_dense_perplexity(random_model, calib_ids, method):
    windows = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(2))
    dense = evaluate.perplexity(random_model, windows)
    method.prune(random_model, calib_ids, method.Config(sparsity=0.0), Context())
    assert evaluate.perplexity(random_model, windows) == pytest.approx(dense, rel=1e-6)


def test_perplexity_matches_plain_loss(random_model):
    windows = torch.randint(0, 256, (5, 32), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        losses = [float(random_model(w[None], labels=w[None]).loss) for w in windows]
    expected = torch.tensor(losses).mean().exp().item()
    assert evaluate.perplexity(random_model, windows, batch_size=2) == pytest.approx(expected, rel=1e-5)


def test_pruning_never_touches_embeddings_or_head(random_model, calib_ids):
    emb = random_model.get_input_embeddings().weight.clone()
    norms = copy.deepcopy(random_model.model.norm.state_dict())
    wanda.prune(random_model, calib_ids, wanda.Config(sparsity=0.5), Context())
    assert torch.equal(emb, random_model.get_input_embeddings().weight)
    assert torch.equal(norms["weight"], random_model.model.norm.weight)


def test_a_layer_without_parameters_runs_where_its_input_is() -> None:
    """A decoder layer whose two sublayers were both removed holds no parameter; it still runs (a pass-through)."""
    from torch import nn

    from reference_impls.harness.layerwise import LayerInputs, run_layer

    class Empty(nn.Module):
        def forward(self, hidden, **kwargs):
            return (hidden * 2,)

    hidden = torch.randn(2, 3, 4)
    assert torch.equal(run_layer(Empty(), LayerInputs(hidden, {})), hidden * 2)
