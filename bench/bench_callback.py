"""Callback overhead: training epochs with and without ``SEISCallback``, and where its time goes.

    .venv/bin/python bench/bench_callback.py            # digits recipe, then ResNet-18 on 32x32 fake data
    .venv/bin/python bench/bench_callback.py --quick    # fewer epochs and a narrow ResNet

Prints, for each model: seconds per epoch without and with the callback (default settings: 512 probe
images or all the validation set, the paper's random affine as 4 draws, every epoch) and their ratio;
then torch's profiler split of one probe pass into the extra forward passes (``seis.forward``), the
streaming statistics (``seis.statistics``) and the eigendecompositions / CCA (``seis.compute``).
The device is CUDA when available, else CPU. Targets (issue 6): callback <= 15 % of a digits epoch;
statistics + eigendecompositions <= 25 % of the callback's time on CPU.
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning.pytorch as pl
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader, TensorDataset

from seis_lightning import SEISCallback
from seis_lightning.data import DigitsDataModule
from seis_lightning.models import DigitsCNN, ResNet18Classifier

SCOPES = ("seis.forward", "seis.statistics", "seis.compute")
CIFAR_TRAIN_IMAGES = 50_000


def fake_cifar_loaders(num_train: int, num_val: int, batch_size: int = 128) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(num_train + num_val, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (num_train + num_val,), generator=generator)
    train = TensorDataset(images[:num_train], labels[:num_train])
    val = TensorDataset(images[num_train:], labels[num_train:])
    return DataLoader(train, batch_size, shuffle=True), DataLoader(val, batch_size)


def epoch_seconds(make_model, loaders, epochs: int, with_callback: bool) -> tuple[float, SEISCallback | None]:
    """Wall seconds per epoch (validation included) over ``epochs`` epochs after a warm-up epoch."""
    pl.seed_everything(0, verbose=False)
    callback = SEISCallback(score_before_training=False, log_figures=False) if with_callback else None
    seconds: list[float] = []

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):  # runs after the epoch's validation
            seconds.append(time.perf_counter() - self.start)

    trainer = pl.Trainer(
        max_epochs=epochs + 1,
        callbacks=[Clock(), *([callback] if callback else [])],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(make_model(), *loaders)
    return sum(seconds[1:]) / epochs, callback


def probe_split(make_model, loaders) -> dict[str, float]:
    """Profiler CPU/CUDA time of each phase of one probe pass, as shares of their sum."""
    model = make_model()
    callback = SEISCallback(log_figures=False)
    trainer = pl.Trainer(max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, *loaders)  # sets up the trainer; the probe set is taken at train start
        callback._probe = callback._collect_probe(trainer) if callback._probe is None else callback._probe
        model.to(trainer.strategy.root_device)
        callback.score(trainer, model)  # warm-up
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            callback.score(trainer, model)
    totals = {}
    for event in prof.key_averages():
        if event.key in SCOPES:
            device_time = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
            totals[event.key] = (device_time if torch.cuda.is_available() else event.cpu_time_total) / 1e6
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12))
    return totals


def report(name: str, make_model, loaders, epochs: int, project_to: int | None = None) -> None:
    """Print the overhead per epoch and the split of one probe pass.

    ``project_to``: also scale the measured epoch (without the callback) to an epoch of this many
    training images, for data sets far larger than the one timed (the probe pass does not grow with
    the training set).
    """
    without, _ = epoch_seconds(make_model, loaders, epochs, with_callback=False)
    with_seconds, callback = epoch_seconds(make_model, loaders, epochs, with_callback=True)
    probes = len(callback._probe)
    overhead = with_seconds / without - 1
    draws = [name for name, _ in callback._maps]
    transforms = [f"{t.name} ({draws.count(t.name)} draws)" for t in callback.transforms]
    print(f"\n== {name}: {probes} probe images, transforms {transforms}, layers {callback._resolved}")
    print(f"epoch without callback {without:.2f} s, with {with_seconds:.2f} s: ratio {with_seconds / without:.3f}")
    print(
        f"callback adds {100 * overhead:.1f} % to an epoch  [target <= 15 %: {'PASS' if overhead <= 0.15 else 'MISS'}]"
    )
    totals = probe_split(make_model, loaders)
    total = sum(totals.values())
    for scope in SCOPES:
        print(f"  {scope:<16} {totals.get(scope, 0):7.3f} s  {100 * totals.get(scope, 0) / total:5.1f} %")
    stats_share = (totals.get("seis.statistics", 0) + totals.get("seis.compute", 0)) / total
    verdict = "PASS" if stats_share <= 0.25 else "MISS"
    print(f"statistics + eigendecompositions: {100 * stats_share:.1f} % of the callback  [target <= 25 %: {verdict}]")
    forward_floor = totals.get("seis.forward", 0) / without
    print(f"floor: the probe forward passes alone add {100 * forward_floor:.1f} % to an epoch")
    if project_to:
        num_train = len(loaders[0].dataset)
        projected = without * project_to / num_train
        print(
            f"projected to an epoch of {project_to:,} training images ({projected:.0f} s without the callback):"
            f" the callback adds {100 * (with_seconds - without) / projected:.1f} %"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per run (after one warm-up epoch)")
    parser.add_argument("--resnet-width", type=int, default=None, help="64 is ResNet-18")
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.quick else 2)
    width = args.resnet_width or (16 if args.quick else 64)
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}, threads {torch.get_num_threads()}")
    digits = DigitsDataModule()
    digits.setup("fit")
    report("digits recipe (DigitsCNN)", DigitsCNN, (digits.train_dataloader(), digits.val_dataloader()), epochs)
    loaders = fake_cifar_loaders(1024 if not args.quick else 256, 512)
    report(
        f"ResNet-18 (width {width}) on 32x32 fake data",
        lambda: ResNet18Classifier(10, width=width),
        loaders,
        epochs,
        project_to=CIFAR_TRAIN_IMAGES,
    )


if __name__ == "__main__":
    main()
