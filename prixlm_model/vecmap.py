"""Supervised cross-lingual mappings of two embedding spaces: VecMap's recipe, and Procrustes.

VecMap (Artetxe et al., AAAI 2018; ``map_embeddings.py --supervised``, the setting of Glavas et
al. 2019 that the paper follows) maps both spaces, in five steps:

1. normalise every vector: unit length, mean-centre, unit length again;
2. whiten each side with ``W1 = (D^T D)^(-1/2)`` of its dictionary rows D;
3. orthogonal map: ``U S V^T = svd(Xd^T Zd)``, source times U, target times V;
4. re-weight each side by ``S ** 0.5``;
5. de-whiten each side by its own ``W1^-1`` expressed in the mapped basis (``U^T W1x^-1 U``,
   ``V^T W1z^-1 V``).

Plain Procrustes (the second, separately reported variant) maps the unit-length source by the
orthogonal ``W = U V^T`` of ``svd(Xd^T Zd)`` and leaves the target as it is.

Inputs are (N, H) float tensors of any device; dictionary pairs are index tensors (P,) into
them. Linear algebra runs in float64 for stable whitening (it needs at least H pairs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalize(x: torch.Tensor) -> torch.Tensor:
    """(N, H) -> (N, H): unit length, mean-centred, unit length (VecMap's ``unit center unit``)."""
    x = F.normalize(x, dim=1)
    return F.normalize(x - x.mean(0, keepdim=True), dim=1)


def whitening(d: torch.Tensor) -> torch.Tensor:
    """(P, H) dictionary rows -> (H, H) ``(D^T D)^(-1/2)`` via the SVD ``D = U S V^T``: ``V S^-1 V^T``."""
    _, s, vt = torch.linalg.svd(d, full_matrices=False)
    if s.min() <= s.max() * 1e-10:
        raise ValueError(f"whitening needs full-rank dictionary rows: {d.shape[0]} pairs for {d.shape[1]} dimensions")
    return vt.T @ torch.diag(1 / s) @ vt


def orthogonal(xd: torch.Tensor, zd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U, S, V`` of ``svd(xd^T zd)``: the rotations that best align the dictionary rows."""
    u, s, vt = torch.linalg.svd(xd.T @ zd)
    return u, s, vt.T


def vecmap_supervised(x: torch.Tensor, z: torch.Tensor, src: torch.Tensor, trg: torch.Tensor, reweight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Map source ``x`` (N, H) and target ``z`` (M, H) into one space from the pairs ``(src[i], trg[i])``.

    Returns both mapped spaces, unit length (N, H), (M, H), in the input dtype.
    """
    dtype = x.dtype
    xw, zw = normalize(x.double()), normalize(z.double())
    wx1, wz1 = whitening(xw[src]), whitening(zw[trg])
    xw, zw = xw @ wx1, zw @ wz1
    u, s, v = orthogonal(xw[src], zw[trg])
    xw, zw = xw @ u, zw @ v
    xw, zw = xw * s**reweight, zw * s**reweight
    xw = xw @ (u.T @ torch.linalg.inv(wx1) @ u)
    zw = zw @ (v.T @ torch.linalg.inv(wz1) @ v)
    return F.normalize(xw, dim=1).to(dtype), F.normalize(zw, dim=1).to(dtype)


def procrustes(x: torch.Tensor, z: torch.Tensor, src: torch.Tensor, trg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map unit-length ``x`` onto unit-length ``z`` by the orthogonal ``U V^T``; (N, H), (M, H)."""
    xn, zn = F.normalize(x.double(), dim=1), F.normalize(z.double(), dim=1)
    u, _, v = orthogonal(xn[src], zn[trg])
    return (xn @ u @ v.T).to(x.dtype), zn.to(z.dtype)
