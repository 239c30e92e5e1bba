"""The SSLLN network, its losses, training and inference.

Tensor conventions: a working-grid volume ``[i, j, k]`` (192x192x80) is fed as ``(B, S=k, H=i, W=j)``;
network outputs are ``(B, C, S, H, W)``. Segmentation classes follow :class:`ssll.labels.Label`,
landmark classes :class:`ssll.labels.Landmark` with 0 for background.
"""

from __future__ import annotations

from ssll.nn.network import SSLLN

__all__ = ["SSLLN"]
