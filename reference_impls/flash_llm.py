"""Flash-LLM's Tiled-CSL format on the CPU: encode, decode, "load as sparse, compute as dense", bytes moved.

Paper:    Xia, Zheng, Li, Zhuang, Zhou, Qiu, Li, Lin, Song. "Flash-LLM: Enabling Cost-Effective and
          Highly-Efficient Large Generative Model Inference with Unstructured Sparsity". VLDB 2024 (PVLDB 17),
          arXiv:2309.10285. Record id: `flash-llm`.
Official: AlibabaResearch/flash-llm (CUDA for A100: `csrc/SpMM_API.cu` builds the format, `csrc/TilingConfig.h`
          the tile sizes).
Idea:     decoding multiplies the weights by a few token vectors, so it is bound by reading the weights from
          memory. Flash-LLM stores an unstructured-sparse weight matrix compactly (Tiled-CSL), reads only that,
          expands each tile into a dense tile in shared memory and runs ordinary dense tensor-core MMA on it:
          fewer bytes from global memory, dense arithmetic.
Format:   the (M, K) matrix is cut into tiles of 128 rows x 64 columns, in row-major tile order. A tile's
          non-zeros become items of a value plus a 16-bit in-tile position row * 64 + (col XOR 8 * (row mod 8))
          (the XOR spreads a row's writes over shared-memory banks); each tile's item list is padded with
          zero-valued items to a multiple of 4 (the kernel reads 4 items per vector load). A padding item takes a
          position no real item uses, so decoding is a plain scatter. `offsets[t]` is where tile t starts.
What runs here (a stand-in): `encode`, `decode`, `lscd_matmul` (each tile expanded into a dense buffer, then a
          dense matmul, accumulated over the tiles of a row block), and the traffic model `traffic_bytes`:
          dense fp16 reads 2 M K bytes, Tiled-CSL reads 4 bytes per item (fp16 value + int16 position) plus
          4 bytes per tile offset (tiles + 1 of them). `prune` Wanda-prunes the model (the shared Wanda code),
          encodes every decoder linear, checks the round trip is exact and, in one forward pass on calibration
          tokens with every linear computed through `lscd_matmul`, compares each linear's output and the final
          logits with the dense masked model. The model it returns is the Wanda-pruned one (perplexity measured
          by the harness); it is not saved in the format.
Differs / not reproduced: no GPU kernel, no two-level pipeline, no split-K, no speed claim: on a CPU this runs
          slower than dense. Values keep the model's dtype (float32 here) so the equality check is exact; the
          traffic model counts them as the kernel stores them (fp16). Matrices whose size is not a multiple of
          the tile are padded with zero rows / columns (SmolLM2's 576- and 192-row projections), which cost only
          their tile offsets. The headline GPU numbers (up to 2.1x over cuBLAS at 70-90% sparsity, 3.8x tokens
          per GPU-second end to end) cannot be checked here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from kb.results import Outcome

from . import wanda
from .harness.contract import Context
from .harness.layerwise import iter_decoder_linears
from .harness.options import SparsityConfig

VALUE_BYTES, POSITION_BYTES, OFFSET_BYTES, DENSE_BYTES = 2, 2, 4, 2  # fp16 value, int16 position, int32, fp16


class Config(SparsityConfig):
    sparsity: float = Field(0.8, ge=0.0, lt=1.0)  # the check point; the paper studies 70-90%
    tile_m: int = Field(128, ge=8)  # rows per tile (TILE_M upstream)
    tile_k: int = Field(64, ge=64, multiple_of=64)  # columns per tile (TILE_K upstream)
    pad_to: int = Field(4, ge=1)  # items per tile rounded up to a multiple of this
    check_tokens: int = Field(64, ge=1)  # tokens of the forward pass that compares sparse and dense
    atol: float = Field(1e-5, gt=0.0)  # sparse and dense outputs agree within atol + rtol * |dense|
    rtol: float = Field(1e-5, ge=0.0)


@dataclass(frozen=True)
class TiledCSL:
    shape: tuple[int, int]  # (M, K) of the original matrix
    tile_m: int
    tile_k: int
    values: torch.Tensor  # (items,) in tile order, padding items are 0
    positions: torch.Tensor  # (items,) int16, swizzled in-tile position
    offsets: torch.Tensor  # (tiles + 1,) int64, item index where each tile starts

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.shape[0] / self.tile_m), math.ceil(self.shape[1] / self.tile_k)

    @property
    def tiles(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def items(self) -> int:
        return int(self.values.numel())


# ---- the format (pure functions) -------------------------------------------------------------------------
def swizzle(row: torch.Tensor, col: torch.Tensor, tile_k: int = 64) -> torch.Tensor:
    """In-tile position of (row, col): row * tile_k + (col XOR 8 * (row mod 8)); a bijection on each row."""
    return row * tile_k + (col ^ ((row % 8) * 8))


def unswizzle(position: torch.Tensor, tile_k: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    row = position // tile_k
    return row, (position % tile_k) ^ ((row % 8) * 8)


def _check_tile(tile_k: int) -> None:
    if tile_k % 64:  # the XOR flips bits 3-5 of the column, so a row of the tile must span whole groups of 64
        raise ValueError(f"tile_k {tile_k} must be a multiple of 64 for the XOR swizzle")


def encode(weight: torch.Tensor, tile_m: int = 128, tile_k: int = 64, pad_to: int = 4) -> TiledCSL:
    """The Tiled-CSL form of a 2-D matrix (exact: decode gives it back bit for bit)."""
    _check_tile(tile_k)
    if tile_m * tile_k > 2**15:
        raise ValueError(f"a {tile_m} x {tile_k} tile has positions beyond int16")
    m, k = weight.shape
    gm, gk = math.ceil(m / tile_m), math.ceil(k / tile_k)
    padded = weight.new_zeros(gm * tile_m, gk * tile_k)
    padded[:m, :k] = weight
    tiles = padded.reshape(gm, tile_m, gk, tile_k).permute(0, 2, 1, 3).reshape(gm * gk, tile_m, tile_k)
    rows = torch.arange(tile_m).unsqueeze(1).expand(tile_m, tile_k)
    cols = torch.arange(tile_k).unsqueeze(0).expand(tile_m, tile_k)
    pos_grid = swizzle(rows, cols, tile_k)  # position of every (row, col) in a tile
    values, positions, counts = [], [], []
    for tile in tiles:
        nz = tile != 0
        vals, pos = tile[nz], pos_grid[nz]
        extra = (-int(nz.sum())) % pad_to
        if extra:  # zero items at positions no real item uses (a full tile is already a multiple of pad_to)
            free = pos_grid[~nz][:extra]
            vals = torch.cat([vals, vals.new_zeros(extra)])
            pos = torch.cat([pos, free])
        order = torch.argsort(pos)  # items sorted by position inside the tile
        values.append(vals[order])
        positions.append(pos[order])
        counts.append(vals.numel())
    offsets = torch.zeros(len(counts) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(counts, dtype=torch.long).cumsum(0)
    return TiledCSL((m, k), tile_m, tile_k, torch.cat(values), torch.cat(positions).to(torch.int16), offsets)


def decode_tile(enc: TiledCSL, t: int) -> torch.Tensor:
    """Tile t as a dense (tile_m, tile_k) block: a zeroed buffer with the tile's items scattered into it."""
    lo, hi = int(enc.offsets[t]), int(enc.offsets[t + 1])
    buf = enc.values.new_zeros(enc.tile_m * enc.tile_k)
    row, col = unswizzle(enc.positions[lo:hi].long(), enc.tile_k)
    buf[row * enc.tile_k + col] = enc.values[lo:hi]
    return buf.view(enc.tile_m, enc.tile_k)


def decode(enc: TiledCSL) -> torch.Tensor:
    """The original (M, K) matrix."""
    gm, gk = enc.grid
    out = enc.values.new_zeros(gm * enc.tile_m, gk * enc.tile_k)
    for t in range(enc.tiles):
        i, j = divmod(t, gk)
        out[i * enc.tile_m : (i + 1) * enc.tile_m, j * enc.tile_k : (j + 1) * enc.tile_k] = decode_tile(
            enc, t
        )
    return out[: enc.shape[0], : enc.shape[1]]


def lscd_matmul(enc: TiledCSL, x: torch.Tensor) -> torch.Tensor:
    """x @ W^T for x (..., K): every tile of a row block is expanded into one dense (tile_m, K) buffer, which
    is then multiplied densely (load as sparse, compute as dense)."""
    gm, gk = enc.grid
    k_pad = gk * enc.tile_k
    flat = x.reshape(-1, x.shape[-1])
    if enc.shape[1] != k_pad:
        flat = F.pad(flat, (0, k_pad - enc.shape[1]))
    out = flat.new_empty(flat.shape[0], gm * enc.tile_m)
    for i in range(gm):
        block = torch.cat([decode_tile(enc, i * gk + j) for j in range(gk)], dim=1)  # (tile_m, K_pad)
        out[:, i * enc.tile_m : (i + 1) * enc.tile_m] = flat @ block.t()
    return out[:, : enc.shape[0]].reshape(*x.shape[:-1], enc.shape[0])


def traffic_bytes(enc: TiledCSL) -> int:
    """Bytes the kernel reads for this matrix: items (fp16 value + int16 position) and the tile offsets."""
    return enc.items * (VALUE_BYTES + POSITION_BYTES) + (enc.tiles + 1) * OFFSET_BYTES


def dense_bytes(shape: tuple[int, int]) -> int:
    return shape[0] * shape[1] * DENSE_BYTES


# ---- the check on a model ----------------------------------------------------------------------------------
@contextmanager
def through_tiled_csl(model: nn.Module, encoded: dict[str, TiledCSL], diffs: dict[str, float],
                      mismatched: set[str], atol: float = 1e-5, rtol: float = 1e-5) -> Iterator[None]:  # fmt: skip
    """Every encoded linear computes its output with `lscd_matmul` (bias added after); the largest absolute
    difference from the dense product of the same input is recorded in `diffs`, and a linear whose outputs
    are not all within atol + rtol * |dense| (float32 rounding of a reordered sum) goes into `mismatched`."""
    patched = []
    for name, linear in iter_decoder_linears(model):

        def forward(x: torch.Tensor, linear: nn.Linear = linear, name: str = name) -> torch.Tensor:
            dense = F.linear(x, linear.weight, linear.bias)
            sparse = lscd_matmul(encoded[name], x)
            if linear.bias is not None:
                sparse = sparse + linear.bias
            gap = (sparse - dense).abs()
            diffs[name] = max(diffs.get(name, 0.0), float(gap.max()))
            if bool((gap > atol + rtol * dense.abs()).any()):
                mismatched.add(name)
            return sparse

        linear.forward = forward  # type: ignore[method-assign,assignment]
        patched.append(linear)
    try:
        yield
    finally:
        for linear in patched:
            del linear.forward  # back to the class's forward


def prune(model: nn.Module, calib: torch.Tensor, config: Config, ctx: Context) -> Outcome:
    """Wanda-prune `model` in place, then check Tiled-CSL on every decoder linear; evidence in the details."""
    wanda.prune(model, calib, wanda.Config(sparsity=config.sparsity, pattern=config.pattern), ctx)
    encoded: dict[str, TiledCSL] = {}
    roundtrip_exact, bytes_sparse, bytes_dense, items, nonzeros, tiles = True, 0, 0, 0, 0, 0
    for name, linear in iter_decoder_linears(model):
        w = linear.weight.detach()
        enc = encode(w, config.tile_m, config.tile_k, config.pad_to)
        roundtrip_exact &= bool(torch.equal(decode(enc), w))
        encoded[name] = enc
        bytes_sparse += traffic_bytes(enc)
        bytes_dense += dense_bytes(enc.shape)
        items += enc.items
        nonzeros += int((w != 0).sum())
        tiles += enc.tiles
    diffs: dict[str, float] = {}
    mismatched: set[str] = set()
    tokens = calib.reshape(-1)[: config.check_tokens].unsqueeze(0)
    with torch.inference_mode():
        reference = model(tokens).logits
        with through_tiled_csl(model, encoded, diffs, mismatched, config.atol, config.rtol):
            sparse_logits = model(tokens).logits
    worst = max(diffs, key=lambda n: diffs[n])
    return Outcome(kind="stand-in", details={
        "linears": len(encoded), "linears_checked": len(diffs), "roundtrip_exact": roundtrip_exact,
        "linears_mismatched": sorted(mismatched), "atol": config.atol, "rtol": config.rtol,
        "max_abs_diff_linear": diffs[worst], "worst_linear": worst,
        "max_abs_diff_logits": float((sparse_logits - reference).abs().max()), "check_tokens": tokens.shape[1],
        "nonzeros": nonzeros, "items": items, "padding_items": items - nonzeros, "tiles": tiles,
        "tile": [config.tile_m, config.tile_k], "bytes_tiled_csl": bytes_sparse, "bytes_dense_fp16": bytes_dense,
        "bytes_ratio": bytes_sparse / bytes_dense, "sparsity": config.sparsity,
    })  # fmt: skip
