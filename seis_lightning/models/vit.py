"""``SmallViT``: a Vision Transformer for 32x32 images, patches of 4, with a class token."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from seis_lightning.models.base import TaskModule


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch_size`` patches, linearly embedded: images ``[B, C, H, W]`` to tokens ``[B, T, D]``."""

    def __init__(self, in_channels: int, dim: int, image_size: int, patch_size: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"Expected `image_size` to be a multiple of `patch_size`, got {image_size}, {patch_size}.")
        self.num_tokens = (image_size // patch_size) ** 2
        self.projection = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.projection(images).flatten(2).transpose(1, 2)


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block: self-attention and an MLP, each with a residual; tokens ``[B, T, D]``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.norm1(tokens)
        tokens = tokens + self.attention(x, x, x, need_weights=False)[0]
        return tokens + self.mlp(self.norm2(tokens))


class SmallViT(TaskModule):
    """A small Vision Transformer: patch embedding, class token, ``depth`` blocks, linear head on the class token.

    The default SEIS layers are the blocks, ``blocks.0`` to ``blocks.<depth-1>``, whose outputs are
    tokens ``[B, 1 + T, D]`` (``seis_layout = "channels_last"``, one class token in front,
    ``seis_num_prefix_tokens = 1``); ``T = (image_size / patch_size)²`` patch tokens.

    Example:
        >>> import torch
        >>> SmallViT(num_classes=100, depth=2)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 100])

    Args:
        num_classes: output classes.
        in_channels: image channels.
        image_size: side of the square input images.
        patch_size: side of the square patches.
        dim: token dimension.
        depth: Transformer blocks.
        heads: attention heads.
        mlp_ratio: hidden width of the MLPs, relative to ``dim``.
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    seis_layout = "channels_last"
    seis_num_prefix_tokens = 1

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 6,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, optimizer, weight_decay)
        self.save_hyperparameters()
        self.patch_embedding = PatchEmbedding(in_channels, dim, image_size, patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embedding = nn.Parameter(torch.randn(1, 1 + self.patch_embedding.num_tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.seis_layers = [f"blocks.{i}" for i in range(depth)]

    def forward(self, images: Tensor) -> Tensor:
        tokens = self.patch_embedding(images)
        tokens = torch.cat([self.class_token.expand(len(tokens), -1, -1), tokens], dim=1) + self.position_embedding
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens[:, 0]))
