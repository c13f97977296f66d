"""A BoringModel-style image classifier and loaders for callback tests."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import digits_images


class TinyCNN(pl.LightningModule):
    """conv1 -> conv2 -> pool -> fc on 1x16x16 images, with dropout so training uses the RNG."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.dropout = nn.Dropout(0.2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return self.fc(self.pool(x).flatten(1))

    def training_step(self, batch, batch_idx):
        loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def digits_loaders(num_train: int = 192, num_val: int = 96, batch_size: int = 32):
    from sklearn.datasets import load_digits

    labels = torch.as_tensor(load_digits().target[: num_train + num_val])
    images = digits_images(num_train + num_val, size=16)
    train = TensorDataset(images[:num_train], labels[:num_train])
    val = TensorDataset(images[num_train:], labels[num_train:])
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=batch_size)


def trainer(tmp_path, callbacks, max_epochs: int = 2, **kwargs) -> pl.Trainer:
    pl.seed_everything(0)
    options = dict(
        max_epochs=max_epochs,
        callbacks=callbacks,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    options.update(kwargs)
    if "logger" not in options:
        options["logger"] = pl.loggers.TensorBoardLogger(tmp_path, name="tb", version=0)
    if "enable_checkpointing" not in options:
        options["enable_checkpointing"] = False
    return pl.Trainer(default_root_dir=tmp_path, **options)


def read_events(log_dir) -> EventAccumulator:
    """TensorBoard's own event reader over a run directory, every scalar and image kept."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events
