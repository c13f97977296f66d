"""``SmallMixer``: an MLP-Mixer for 32x32 images, patches of 4."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from seis_lightning.models.base import TaskModule
from seis_lightning.models.vit import PatchEmbedding


class MixerBlock(nn.Module):
    """Token mixing (an MLP across patches) then channel mixing (an MLP across features); tokens ``[B, T, D]``."""

    def __init__(self, num_tokens: int, dim: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(
            nn.Linear(num_tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, num_tokens)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim))

    def forward(self, tokens: Tensor) -> Tensor:
        tokens = tokens + self.token_mlp(self.norm1(tokens).transpose(1, 2)).transpose(1, 2)
        return tokens + self.channel_mlp(self.norm2(tokens))


class SmallMixer(TaskModule):
    """A small MLP-Mixer: patch embedding, ``depth`` Mixer blocks, average over patches, linear head.

    The default SEIS layers are the blocks, ``blocks.0`` to ``blocks.<depth-1>``, whose outputs are
    tokens ``[B, T, D]`` without a class token (``seis_layout = "channels_last"``,
    ``seis_num_prefix_tokens = 0``).

    Example:
        >>> import torch
        >>> SmallMixer(num_classes=100, depth=2)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 100])

    Args:
        num_classes: output classes.
        in_channels: image channels.
        image_size: side of the square input images.
        patch_size: side of the square patches.
        dim: token dimension.
        depth: Mixer blocks.
        token_hidden: hidden width of the token-mixing MLPs.
        channel_hidden: hidden width of the channel-mixing MLPs.
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    seis_layout = "channels_last"
    seis_num_prefix_tokens = 0

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 6,
        token_hidden: int = 64,
        channel_hidden: int = 256,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, optimizer, weight_decay)
        self.save_hyperparameters()
        self.patch_embedding = PatchEmbedding(in_channels, dim, image_size, patch_size)
        self.blocks = nn.Sequential(
            *(MixerBlock(self.patch_embedding.num_tokens, dim, token_hidden, channel_hidden) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.seis_layers = [f"blocks.{i}" for i in range(depth)]

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.norm(self.blocks(self.patch_embedding(images))).mean(dim=1))
