"""Attention as a PyTorch user writes it without fast_s2s: the composite (scores, masked softmax
and weighted sum as separate calls), `scaled_dot_product_attention`, and Luong's local attention
by gathering the window. `fast-s2s bench` times fast_s2s's fused ops against these
(fast_s2s/benchmark/attention_family.py). The arguments are the ops' (docs/DESIGN.md), except
that the composites take keys and values with one row per query row (a beam's rows tiled), as a
user's decoder holds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padding_mask(lengths: torch.Tensor | None, S: int) -> torch.Tensor | None:
    """(N, 1, S), True at the padding of each row's source, from lengths (N,); None without."""
    if lengths is None:
        return None
    return (torch.arange(S, device=lengths.device)[None, :] >= lengths[:, None])[:, None]


def weighted_sum(
    scores: torch.Tensor, values: torch.Tensor, pad: torch.Tensor | None
) -> torch.Tensor:
    """softmax over the source positions, the padding masked, then the weighted sum of values:
    scores (N, T, S), values (N, S, Dv), pad (N, 1, S) or None -> context (N, T, Dv)."""
    masked = scores if pad is None else scores.masked_fill(pad, -torch.inf)
    return torch.bmm(torch.softmax(masked, -1), values)


def dot_composite(query, keys, values, pad, scale: float) -> torch.Tensor:
    """Luong dot: query (N, T, D), keys (N, S, D), values (N, S, Dv) -> context (N, T, Dv)."""
    return weighted_sum(torch.bmm(query, keys.transpose(1, 2)) * scale, values, pad)


def additive_composite(query_proj, keys_proj, v, values, pad) -> torch.Tensor:
    """Bahdanau: scores v . tanh(q + k) over query_proj (N, T, A), keys_proj (N, S, A), v (A,);
    values (N, S, Dv) -> context (N, T, Dv)."""
    scores = torch.tanh(query_proj.unsqueeze(2) + keys_proj.unsqueeze(1)) @ v
    return weighted_sum(scores, values, pad)


def sdpa_mask(lengths: torch.Tensor | None, S: int) -> torch.Tensor | None:
    """(B, 1, 1, S), True where a query may attend, from lengths (B,); None without."""
    if lengths is None:
        return None
    return (torch.arange(S, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]


def dot_sdpa(query, keys, values, mask, scale: float) -> torch.Tensor:
    """F.scaled_dot_product_attention on 4-D one-head views: query (B * beam, T, D) with a
    source's beam rows adjacent, keys (B, S, D), values (B, S, Dv), mask from sdpa_mask ->
    context (B * beam, T, Dv). The beam rows are folded into the query length, since torch's
    fused kernels take only 4-D inputs."""
    (B, _, _), (N, T, D) = keys.shape, query.shape
    q = query.reshape(B, 1, (N // B) * T, D)
    out = F.scaled_dot_product_attention(
        q, keys.unsqueeze(1), values.unsqueeze(1), attn_mask=mask, scale=scale
    )
    return out.reshape(N, T, values.shape[-1])


def local_source_index(N: int, keys, lengths, window: int):
    """What local attention by gathering needs once per source batch (a decoder's every step
    reuses it): each query row's source row (N, 1, 1), the window's offsets (2D + 1,) and each
    query row's source length (N, 1, 1), for N query rows over keys (B, S, D), lengths (B,)."""
    (B, S, _), device = keys.shape, keys.device
    rows = (torch.arange(N, device=device) // (N // B))[:, None, None]
    offsets = torch.arange(-window, window + 1, device=device)
    limit = torch.full((B,), S, device=device) if lengths is None else lengths.to(device)
    return rows, offsets, limit[rows]


def local_composite(query, keys, values, centers, window: int, scale: float, source_index):
    """Luong local-p by gathering: the 2D + 1 keys and values around round(p), batched scores,
    what lies past |s - p| <= D or the source's length masked, softmax, times a Gaussian
    (sigma = D / 2), weighted sum. query (N, T, D) with N = B * beam, keys (B, S, D), values
    (B, S, Dv), centers (N, T), source_index from local_source_index -> context (N, T, Dv)."""
    rows, offsets, row_limit = source_index
    S = keys.shape[1]
    positions = torch.round(centers).long()[:, :, None] + offsets  # (N, T, 2D + 1)
    index = positions.clamp(0, S - 1)
    k, v = keys[rows, index], values[rows, index]  # (N, T, 2D + 1, D), (N, T, 2D + 1, Dv)
    scores = torch.einsum("ntd,ntwd->ntw", query, k) * scale
    distance = positions.to(centers.dtype) - centers[:, :, None]
    inside = (distance.abs() <= window) & (positions >= 0) & (positions < row_limit)
    align = torch.softmax(scores.masked_fill(~inside, float("-inf")), dim=-1)
    align = torch.nan_to_num(align)  # an empty window: all -inf, softmax NaN -> 0
    gauss = torch.exp(-(distance**2) / (2 * (window / 2) ** 2)).to(align.dtype)
    return torch.einsum("ntw,ntwv->ntv", align * gauss, v)
