"""LLM Surgeon: Kronecker-factored curvature, global allocation, correlated updates, multi-shot pruning.

Paper:    van der Ouderaa, Nagel, van Baalen, Asano, Blankevoort. "The LLM Surgeon". ICLR 2024,
          arXiv:2312.17244. Record id: `llm-surgeon`.
Official: Qualcomm-AI-research/llm-surgeon (`scripts/structured/surgeon.sh`: `--shots 40 --structures row
          column`; `scripts/unstructured/surgeon_5.sh`: `--shots 5 --structures element --max_correlate
          2000 --addupdate --damp_g 0.1`), README; element update: `pruner.py` weight_update.
Idea:     each linear's loss curvature is approximated by a Kronecker-factored Fisher F = G (x) A, with
          A = E[x x^T] over its inputs and G = E[g g^T] over the gradients of the LM loss at its outputs, so
          F^-1 = G^-1 (x) A^-1 and the OBS cost and update of removing a structure have closed forms:
            element (i, j): cost W_ij^2 / (2 [G^-1]_ii [A^-1]_jj)
            row r:     cost w_r^T A w_r / (2 [G^-1]_rr); rows R jointly: dW = -G^-1[:, R] [G^-1]_RR^-1 W_R
            column c:  cost w_c^T G w_c / (2 [A^-1]_cc); columns C jointly: dW = -W_:C [A^-1]_CC^-1 A^-1[C, :]
          One global threshold over the costs of every linear of every layer decides what goes (so layers
          get different sparsities), and pruning is spread over T shots with a linear schedule to the
          target, the curvature re-estimated on the pruned model before each shot.
This:     `structure="rows-columns"` zeroes whole rows and columns of every decoder linear (the structures
          can later be sliced away) and updates the remaining weights with the joint (correlated) update
          over every row, then every column, removed so far in that linear, so earlier removals stay exact
          zeros. `structure="element"` is unstructured: in every row the weights removed so far (set Q,
          earlier shots' zeros included, as upstream's mask) go jointly, the multi-weight OBS update
          dw = -w_Q [(A^-1)_QQ]^-1 (A^-1)_Q,:, rows batched by |Q|; `correlate="shot"` solves only this
          shot's removals (a cheaper approximation: the earlier zeros it moves are re-zeroed).
          `update="none"` keeps the costs but skips the update (K-OBD); `curvature="identity"` makes every
          cost a squared l2 norm (global magnitude of rows/columns or elements, no data needed).
          Defaults: 5 shots (upstream's smallest unstructured script, `scripts/unstructured/surgeon_5.sh`;
          its argparse default is 40) and the curvature estimated on every calibration token the harness
          gives (the tokens SparseGPT calibrates on), re-estimated on the pruned model before each shot.
Differs:  (1) an empirical Fisher (true labels) over the calibration sequences, one at a time, with damping
          of the mean diagonal (as upstream: --damp_a 0.01, --damp_g 0.1); (2) the element update is solved
          per row with the input factor only (F ~ diag(G) (x) A for the update; G still weighs the costs):
          upstream (`pruner.py` weight_update, --max_correlate 2000 --addupdate) solves chunks of whole
          rows (up to 2000 weights) jointly under G (x) A, chunk after chunk, so each chunk's update also
          spreads to the other rows through G^-1 before the removed weights are re-zeroed; (3) fewer shots
          than the paper's 40 where a run asks (CPU budget); no first-order term, no LoRA between shots,
          no K-FAC rank > 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from kb.results import Outcome

from .harness.contract import Context
from .harness.layerwise import input_embedding, iter_decoder_linears, set_weight, small_ops
from .harness.options import SparsityConfig
from .primitives.masks import count_to_prune, lowest_k_mask


class Config(SparsityConfig):
    structure: Literal["element", "rows-columns"] = "element"
    shots: int = Field(5, ge=1)  # pruning steps, linear schedule to the target (upstream scripts: 5 to 40)
    update: Literal["correlated", "none"] = "correlated"  # "none": K-OBD (costs, no weight update)
    # element update, per row: "all" solves every weight removed so far jointly (exact, as upstream);
    # "shot" only this shot's new ones (far cheaper; earlier zeros it moves are re-zeroed)
    correlate: Literal["all", "shot"] = "all"
    curvature: Literal["kfac", "identity"] = "kfac"  # "identity": l2-norm costs (magnitude)
    fisher_samples: int | None = Field(None, ge=1)  # calibration sequences per curvature estimate; None: all
    fisher_seqlen: int | None = Field(None, ge=8)  # their first tokens; None: whole sequences
    damp_a: float = Field(0.01, gt=0)  # damping, as a fraction of the mean diagonal of A
    damp_g: float = Field(0.1, gt=0)  # and of G


# ---- pure tensor math -----------------------------------------------------------------------
class DampedInverse:
    """(m + damp * mean(diag m) * I)^-1, formed once from its Cholesky factor (on CPU `cholesky_inverse`
    costs about what the diagonal alone does by triangular solves, and products with the explicit inverse
    are 2-3x faster than `cholesky_solve`). `identity(n)` stands for I itself (nothing stored)."""

    def __init__(self, m: torch.Tensor, damp: float) -> None:
        h = m.float()
        self.size = h.shape[0]
        eye = torch.eye(self.size, dtype=h.dtype)
        scale = float(torch.diagonal(h).mean()) or 1.0
        for attempt in range(4):
            chol, info = torch.linalg.cholesky_ex(h + damp * (10**attempt) * scale * eye)
            if int(info) == 0:
                self.inv: torch.Tensor | None = torch.cholesky_inverse(chol)
                return
        raise RuntimeError("LLM Surgeon: damped curvature factor is not positive definite")

    def diag(self) -> torch.Tensor:
        return torch.ones(self.size) if self.inv is None else self.inv.diagonal().clone()

    def columns(self, idx: torch.Tensor) -> torch.Tensor:
        """H^-1[:, idx]."""
        if self.inv is not None:
            return self.inv[:, idx]
        e = torch.zeros(self.size, idx.numel())
        e[idx, torch.arange(idx.numel())] = 1.0
        return e

    @classmethod
    def identity(cls, n: int) -> DampedInverse:
        out = cls.__new__(cls)
        out.size, out.inv = n, None
        return out


def element_costs(w: torch.Tensor, g_inv_diag: torch.Tensor, a_inv_diag: torch.Tensor) -> torch.Tensor:
    return w.square() / (2 * g_inv_diag.unsqueeze(1) * a_inv_diag.unsqueeze(0))


def row_costs(w: torch.Tensor, a: torch.Tensor | None, g_inv_diag: torch.Tensor) -> torch.Tensor:
    """`a=None` stands for the identity (costs are squared row norms up to the diagonal)."""
    return ((w if a is None else w @ a) * w).sum(1) / (2 * g_inv_diag)


def col_costs(w: torch.Tensor, g: torch.Tensor | None, a_inv_diag: torch.Tensor) -> torch.Tensor:
    """`g=None` stands for the identity."""
    return ((w if g is None else g @ w) * w).sum(0) / (2 * a_inv_diag)


def remove_rows(w: torch.Tensor, g_inv_cols: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Joint OBS update removing `rows` under F = G (x) A, given G^-1[:, rows]; the rows end exactly zero."""
    if rows.numel() == 0:
        return w
    out: torch.Tensor = w - g_inv_cols @ torch.linalg.solve(g_inv_cols[rows], w[rows])
    out[rows] = 0.0
    return out


def remove_cols(w: torch.Tensor, a_inv_cols: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Joint OBS update removing `cols` under F = G (x) A, given A^-1[:, cols]; the columns end exactly zero."""
    if cols.numel() == 0:
        return w
    out: torch.Tensor = w - torch.linalg.solve(a_inv_cols[cols], w[:, cols].T).T @ a_inv_cols.T
    out[:, cols] = 0.0
    return out


def remove_in_rows(w: torch.Tensor, h_inv: torch.Tensor | None, mask: torch.Tensor,
                   batch_numel: int = 1 << 22) -> torch.Tensor:  # fmt: skip
    """Joint (multi-weight) OBS update of every row for its own removed set (`mask`, True = remove).

    For a row w (1, in) and its removed columns Q, under the input curvature H (in, in) with inverse
    `h_inv` (None: the identity), the update that zeroes w_Q at least cost d H d^T is
        d = -w_Q [(H^-1)_QQ]^-1 (H^-1)_Q,:          cost increase 1/2 d H d^T = 1/2 w_Q [(H^-1)_QQ]^-1 w_Q^T
    (all of Q at once, so correlations between removed weights count). Rows have sets of different sizes;
    they are solved in batches of rows sorted by |Q| (at most `batch_numel` matrix entries a batch), each
    set padded to the batch's largest with an extra index whose row and column of H^-1 and weight are 0;
    a 1 on the diagonal of each padded slot then makes padding an identity block that solves to zero.
    Removed weights end exactly zero (pass every weight removed so far to keep earlier zeros exact: they
    are constraints too). Cost: a Cholesky factor per row, about sum |Q|^3 / 3 flops.
    """
    if h_inv is None:
        return w.masked_fill(mask, 0.0)
    out_f, in_f = w.shape
    pad = in_f  # the extra index
    ext = torch.zeros(in_f + 1, in_f + 1, dtype=h_inv.dtype)  # (in + 1, in + 1) H^-1 bordered by zeros
    ext[:in_f, :in_f] = h_inv
    w_ext = torch.cat([w.to(h_inv.dtype), torch.zeros(out_f, 1, dtype=h_inv.dtype)], 1)  # (out, in + 1)
    lam = torch.zeros(out_f, in_f + 1, dtype=h_inv.dtype)  # [(H^-1)_QQ]^-1 w_Q of each row, on its Q
    counts = mask.sum(1)  # (out,) |Q| of each row
    order = torch.argsort(counts, stable=True)  # rows by |Q|, so a batch pads little
    counts_sorted = counts[order].tolist()
    per_batch = max(1, batch_numel // max(1, counts_sorted[-1]) ** 2)
    start = next((i for i, k in enumerate(counts_sorted) if k > 0), out_f)  # rows with nothing removed: skip
    while start < out_f:
        rows = order[start : start + per_batch]  # (b,)
        k = counts_sorted[start + rows.numel() - 1]  # the largest set in the batch
        cols = torch.argsort(mask[rows].to(torch.int8), dim=1, descending=True, stable=True)[:, :k]  # Q first
        padded = torch.arange(k) >= counts[rows].unsqueeze(1)  # (b, k)
        cols = cols.masked_fill(padded, pad)
        sub = ext[cols.unsqueeze(2), cols.unsqueeze(1)]  # (b, k, k) (H^-1)_QQ, zero on the padding
        sub.diagonal(dim1=1, dim2=2).add_(padded.to(sub.dtype))  # identity on the padding
        lam[rows.unsqueeze(1), cols] = _spd_solve(sub, torch.gather(w_ext[rows], 1, cols))  # padding gets 0
        start += rows.numel()
    return (w - (lam[:, :in_f] @ h_inv).to(w.dtype)).masked_fill(mask, 0.0)  # (out, in)


def _spd_solve(sub: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Batched solve of sub x = rhs for SPD `sub` (b, k, k), rhs (b, k), by Cholesky; a batch whose factor
    fails in float32 (a principal block of an ill-conditioned H^-1) is redone in float64."""
    chol, info = torch.linalg.cholesky_ex(sub)
    if int(info.max()) > 0:
        chol, info = torch.linalg.cholesky_ex(sub.double())
        if int(info.max()) > 0:
            raise RuntimeError(
                "LLM Surgeon: a block of the damped inverse curvature is not positive definite"
            )
        return torch.cholesky_solve(rhs.double().unsqueeze(2), chol).squeeze(2).to(sub.dtype)
    return torch.cholesky_solve(rhs.unsqueeze(2), chol).squeeze(2)


def select_structures(
    costs: list[tuple[torch.Tensor, torch.Tensor]], shapes: list[tuple[int, int]],
    pruned: list[tuple[set[int], set[int]]], target: int,
) -> list[tuple[set[int], set[int]]]:  # fmt: skip
    """Add rows/columns in order of cost over every linear until `target` weights are zero in total.

    `costs[l]` = (row costs, column costs) of linear l, `pruned[l]` its rows and columns already removed
    (kept); a row adds (in - removed columns) zeros, a column (out - removed rows). Returns new sets."""
    out = [(set(r), set(c)) for r, c in pruned]
    zeros = sum(
        len(r) * s[1] + len(c) * s[0] - len(r) * len(c) for (r, c), s in zip(out, shapes, strict=True)
    )
    flat, owner = [], []
    for index, (rc, cc) in enumerate(costs):
        flat += [rc, cc]
        owner += [(index, 0, rc.numel()), (index, 1, cc.numel())]
    values = torch.cat(flat)
    order = torch.argsort(values, stable=True).tolist()
    bounds = []
    start = 0
    for index, kind, n in owner:
        bounds.append((start, start + n, index, kind))
        start += n
    lookup = torch.empty(values.numel(), dtype=torch.long)
    for b, (lo, hi, _i, _k) in enumerate(bounds):
        lookup[lo:hi] = b
    owners = lookup.tolist()
    for pos in order:
        if zeros >= target:
            break
        lo, _hi, index, kind = bounds[owners[pos]]
        item = pos - lo
        rows, cols = out[index]
        out_f, in_f = shapes[index]
        if kind == 0 and item not in rows:
            rows.add(item)
            zeros += in_f - len(cols)
        elif kind == 1 and item not in cols:
            cols.add(item)
            zeros += out_f - len(rows)
    return out


# ---- curvature ------------------------------------------------------------------------------
@dataclass
class Factors:
    a: torch.Tensor  # (in, in) E[x x^T]
    g: torch.Tensor  # (out, out) E[g g^T]


def kfac_factors(model: nn.Module, ids: torch.Tensor) -> dict[str, Factors]:
    """A and G of every decoder linear over all tokens of `ids` (samples, seqlen), from one forward and
    backward pass of the LM loss per sequence (sums over tokens, divided by their count at the end)."""
    linears = dict(iter_decoder_linears(model))
    a_sum: dict[str, torch.Tensor] = {}  # keyed by the first linear reading an input (q/k/v, gate/up share)
    owner: dict[str, str] = {}  # linear -> key of its A
    g_sum: dict[str, torch.Tensor] = {}
    last: list[Any] = [None, None]  # (the input just seen, its key)
    count = [0]  # tokens of the current sequence

    def fwd_hook(name: str) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            if last[0] is not args[0]:
                x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # (tokens, in)
                last[0], last[1] = args[0], name
                a_sum[name] = a_sum[name] + x.T @ x if name in a_sum else x.T @ x
            owner[name] = last[1]

            def grad_hook(grad: torch.Tensor) -> None:
                gr = grad.detach().reshape(-1, grad.shape[-1]).float() * count[0]  # undo the mean over tokens
                g_sum[name] = g_sum[name] + gr.T @ gr if name in g_sum else gr.T @ gr  # (out, out)

            out.register_hook(grad_hook)

        return hook

    emb = input_embedding(model)
    handles = [lin.register_forward_hook(fwd_hook(n)) for n, lin in linears.items()]
    handles.append(emb.register_forward_hook(lambda _m, _a, out: out.requires_grad_(True)))
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.enable_grad():
            for seq in ids:  # one sequence at a time: activation memory of one, as upstream (batch size 1)
                count[0] = seq.numel()
                model(input_ids=seq.unsqueeze(0), labels=seq.unsqueeze(0), use_cache=False).loss.backward()
                last[0] = None
    finally:
        for h in handles:
            h.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
    tokens = ids.numel()
    a_mean = {key: a / tokens for key, a in a_sum.items()}
    return {n: Factors(a_mean[owner[n]], g_sum[n] / tokens) for n in linears}


# ---- model driver (mutates `model` in place) ----------------------------------------------
def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Prune every decoder linear of `model` in place over `config.shots` shots."""
    if config.pattern is not None:
        raise ValueError("the N:M variant of LLM Surgeon is not implemented; use --sparsity")
    linears = dict(iter_decoder_linears(model))
    names = list(linears)
    shapes = [tuple(linears[n].weight.shape) for n in names]
    total = sum(o * i for o, i in shapes)
    ids = calib[: config.fisher_samples, : config.fisher_seqlen]  # (samples, seqlen); None: all of it
    pruned: list[tuple[set[int], set[int]]] = [(set(), set()) for _ in names]
    masks: list[torch.Tensor] = [torch.zeros(s, dtype=torch.bool) for s in shapes]
    for shot in range(1, config.shots + 1):
        target = count_to_prune(total, config.sparsity * shot / config.shots)
        factors = kfac_factors(model, ids) if config.curvature == "kfac" else None
        with torch.no_grad():
            curv: dict[
                str, tuple[torch.Tensor | None, torch.Tensor | None, DampedInverse, DampedInverse]
            ] = {}
            shared: dict[int, DampedInverse] = {}  # id(A) -> its inverse (A is shared by q/k/v, gate/up)
            for n in names:
                out_f, in_f = linears[n].weight.shape
                if factors is None:
                    curv[n] = (None, None, DampedInverse.identity(in_f), DampedInverse.identity(out_f))
                else:
                    f = factors.pop(n)
                    if id(f.a) not in shared:
                        shared = {id(f.a): DampedInverse(f.a, config.damp_a)}
                    curv[n] = (f.a, f.g, shared[id(f.a)], DampedInverse(f.g, config.damp_g))
            if config.structure == "rows-columns":
                _structured_shot(linears, names, shapes, curv, pruned, target, config)
            else:
                masks = _element_shot(linears, names, curv, masks, target, config)
        if ctx.progress is not None:
            ctx.progress(shot, config.shots)
    details: dict[str, object] = {"structure": config.structure, "shots": config.shots, "update": config.update,
                     "curvature": config.curvature}  # fmt: skip
    if config.structure == "rows-columns":
        details["rows_removed"] = sum(len(r) for r, _c in pruned)
        details["columns_removed"] = sum(len(c) for _r, c in pruned)
    layers = sorted({int(n.split(".")[1]) for n in names})
    per_layer = []
    for i in layers:
        mine = [linears[n].weight for n in names if int(n.split(".")[1]) == i]
        per_layer.append(round(sum(int((w == 0).sum()) for w in mine) / sum(w.numel() for w in mine), 4))
    details["layer_sparsity"] = per_layer
    return Outcome(kind="weight-sparsity", details=details)


def _structured_shot(linears, names, shapes, curv, pruned, target, config) -> None:  # type: ignore[no-untyped-def]
    costs = []
    diags: dict[int, torch.Tensor] = {}  # id(inverse) -> its diagonal (shared A)
    for n, (rows, cols) in zip(names, pruned, strict=True):
        w = linears[n].weight.float()
        a, g, a_inv, g_inv = curv[n]
        for inv in (a_inv, g_inv):
            if id(inv) not in diags:
                diags[id(inv)] = inv.diag()
        rc, cc = row_costs(w, a, diags[id(g_inv)]), col_costs(w, g, diags[id(a_inv)])
        rc[list(rows)] = -math.inf  # already removed: kept removed, counted once
        cc[list(cols)] = -math.inf
        costs.append((rc, cc))
    new = select_structures(costs, shapes, pruned, target)
    for index, n in enumerate(names):
        rows, cols = new[index]
        pruned[index] = (rows, cols)
        w = linears[n].weight.float()
        _a, _g, a_inv, g_inv = curv[n]
        r = torch.tensor(sorted(rows), dtype=torch.long)
        c = torch.tensor(sorted(cols), dtype=torch.long)
        if config.update == "correlated":
            if r.numel():
                w = remove_rows(w, g_inv.columns(r), r)
            if c.numel():
                w = remove_cols(w, a_inv.columns(c), c)
        w[r] = 0.0
        w[:, c] = 0.0
        set_weight(linears[n], w)


def _element_shot(linears, names, curv, masks, target, config) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    costs = []
    diags: dict[int, torch.Tensor] = {}
    for n, mask in zip(names, masks, strict=True):
        w = linears[n].weight.float()
        _a, _g, a_inv, g_inv = curv[n]
        for inv in (a_inv, g_inv):
            if id(inv) not in diags:
                diags[id(inv)] = inv.diag()
        c = element_costs(w, diags[id(g_inv)], diags[id(a_inv)])
        costs.append(c.masked_fill(mask, -1.0).reshape(-1))  # removed stay removed
    flat = torch.cat(costs)
    chosen = lowest_k_mask(flat, target)
    new_masks = []
    for n, part, old in zip(names, chosen.split([c.numel() for c in costs]), masks, strict=True):
        mask = part.reshape(old.shape) | old
        w = linears[n].weight.float()
        _a, _g, a_inv, g_inv = curv[n]
        if config.update == "correlated":  # "all": earlier zeros are constraints too, so they stay exact
            with small_ops():  # batches of small solves: one thread (measured 9x faster on the shared box)
                w = remove_in_rows(w, a_inv.inv, mask if config.correlate == "all" else mask & ~old)
        set_weight(linears[n], w.masked_fill(mask, 0.0))
        new_masks.append(mask)
    return new_masks
