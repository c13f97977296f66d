"""What a probe pass says before and while it runs (``seis_lightning.progress``): the progress bar of
``score_model`` (shown when asked, on a terminal for long work, never from the callback), the work counted
up front at INFO for a large pass, and the layers that cannot be scored named before the long work."""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from seis_lightning import SEISCallback, SEISWarning, score_model
from seis_lightning import progress as progress_module
from seis_lightning.progress import PassCost, half_samples
from tests.lightning_helpers import TinyCNN, digits_loaders, trainer


def _model() -> nn.Module:
    """``conv`` (maps [N, 4, 8x8]) and ``pool`` ([N, 4]) on 1x8x8 images."""
    torch.manual_seed(0)
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 4, 3, padding=1), relu=nn.ReLU(), pool=pool))


def _images(n: int = 10) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


# 10 images in batches of at most 4: 3 chunks; hflip and rot90: 2 draws; 3 x (1 + 2) = 9 forward passes.
OPTIONS = dict(layers=["conv", "pool"], transforms=["hflip", "rotate:90"], batch_size=4, precision="float64")


def _score(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SEISWarning)
        return score_model(_model(), _images(), **OPTIONS, **options)


def test_progress_true_shows_the_forward_passes_and_the_layers_scored(capsys):
    scores = _score(progress=True)
    err = capsys.readouterr().err
    assert "SEIS forward passes" in err and "9/9" in err and "batch 3/3, rotate90" in err
    assert re.search(r"SEIS scores: 100%.* 2/2 \[[^\]]*, pool\]", err)  # closed on the last layer computed
    assert err.index("SEIS forward passes") < err.index("SEIS scores")
    assert scores == _score(progress=False)  # the bar changes nothing


@pytest.mark.parametrize("progress", [False, None], ids=["off", "auto-not-a-terminal"])
def test_no_bar_when_off_or_not_on_a_terminal(capsys, progress):
    _score(progress=progress)
    assert capsys.readouterr().err == ""


def test_auto_bar_on_a_terminal_shows_for_large_work_and_waits_for_short_work(capsys, monkeypatch):
    monkeypatch.setattr(progress_module, "_terminal", lambda: True)
    monkeypatch.setattr(progress_module, "AUTO_DELAY", 1e9)  # short work: the bar would appear after this long
    _score(progress=None)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress_module, "LARGE_FLOPS", 0.0)  # now large: shown from the start
    _score(progress=None)
    err = capsys.readouterr().err
    assert "SEIS forward passes" in err and "9/9" in err and "SEIS scores" in err


def test_the_callback_shows_no_bar_even_on_a_terminal_for_large_work(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(progress_module, "_terminal", lambda: True)
    monkeypatch.setattr(progress_module, "LARGE_FLOPS", 0.0)
    callback = SEISCallback(
        layers=["conv1", "fc"], transforms="hflip", num_samples=32, batch_size=16, log_figures=False
    )
    train, val = digits_loaders(num_train=32, num_val=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(tmp_path, [callback], max_epochs=1, limit_train_batches=1, logger=False).fit(TinyCNN(), train, val)
    assert len(callback.history) >= 1
    assert "SEIS forward passes" not in capfd.readouterr().err


def test_a_large_pass_logs_its_work_counted_before_the_passes(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "LARGE_FLOPS", 0.0)
    with caplog.at_level(logging.INFO, logger="seis_lightning"):
        _score()
    [message] = [r.getMessage() for r in caplog.records if "SEIS probe pass" in r.getMessage()]
    # By hand: conv C=4, S=64; pool C=4, S=1. Gram multiply-adds per image: C·S² + S·C², for the
    # original maps once and 3 per draw: 2 · 10 images · (4·64² + 64·4² + 4·1 + 1·4²) · (1 + 3·2) flops.
    gram = 2 * 10 * (4 * 64**2 + 64 * 4**2 + 4 * 1 + 1 * 4**2) * 7
    # Covariance eigendecompositions: per layer and unfolding, 1 + 2 draws: 64x64 x3; 4x4 x6; 1x1 x3.
    eigen = 9 * (3 * 64**3 + 6 * 4**3 + 3 * 1)
    assert message == (
        "SEIS probe pass: 10 images in 3 batches x (1 + 2 transformation draws) = 9 forward passes; 2 layers;"
        f" Gram products {gram / 1e9:.3g} GFLOP; 12 covariance eigendecompositions, the largest 64x64 (3 of them,"
        f" layer 'conv'), about {eigen / 1e9:.3g} GFLOP, and 16 for the CCAs, each at most as large."
        " Counts of operations, not a time estimate."
    )
    assert f"{gram / 1e9:.3g}" == "0.00244" and f"{eigen / 1e9:.3g}" == "0.00708"


def test_a_small_pass_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="seis_lightning"):
        _score()
    assert not [r for r in caplog.records if "SEIS probe pass" in r.getMessage()]


def test_what_counts_as_large(monkeypatch):
    cost = PassCost(images=10, chunks=3, draws=2, sizes={"conv": (4, 64), "pool": (4, 1)})
    assert cost.forward_passes == 9 and cost.ccas == 16 and cost.whiteners == {64: 3, 4: 6, 1: 3}
    assert not cost.large
    monkeypatch.setattr(progress_module, "LARGE_FORWARD_IMAGES", 30)  # 10 images x (1 + 2)
    assert cost.large
    monkeypatch.setattr(progress_module, "LARGE_FORWARD_IMAGES", 31)
    assert not cost.large
    monkeypatch.setattr(progress_module, "LARGE_FLOPS", cost.gram_flops + cost.eigen_flops)
    assert cost.large
    # The jackknife multiplies the score sets: 1 + its half-samples (all C(G, ceil(G/2)), at most 32).
    assert [half_samples(g) for g in (0, 2, 3, 4, 8)] == [0, 2, 3, 6, 32]
    jackknifed = PassCost(images=10, chunks=3, draws=2, sizes={"conv": (4, 64)}, replicates=1 + half_samples(4))
    assert jackknifed.whiteners == {64: 21, 4: 21} and jackknifed.ccas == 2 * 2 * 2 * 7


class _Unreadable(nn.Module):
    """``pair`` returns a tuple; ``unused`` never runs; ``conv`` is scored."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pair = _Pair()
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.pair(self.conv(x))[0].mean((2, 3))


class _Pair(nn.Module):
    def forward(self, x):
        return x, x


def _forwards_and_warnings(model: nn.Module, images: torch.Tensor, **options) -> tuple[list[list[str]], dict, list]:
    """The SEIS warnings said before each forward pass of ``model`` and (last) by the end; the scores; the
    warnings themselves."""
    seen: list[list[str]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.register_forward_pre_hook(
            lambda *_: seen.append([str(w.message) for w in caught if issubclass(w.category, SEISWarning)])
        )
        scores = score_model(model, images, **options)
    said = [w for w in caught if issubclass(w.category, SEISWarning)]
    return [*seen, [str(w.message) for w in said]], scores, said


def test_resnet18_shared_relu_is_named_with_its_reason_before_the_passes():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = ["relu", "layer1.0.relu", "layer1"]  # the stem's relu runs once; each block's relu twice
    seen, scores, said = _forwards_and_warnings(
        resnet18(), images, layers=layers, transforms=["hflip"], batch_size=4, progress=False
    )
    # the pass of 2 images that sizes the forward parts, 2 chunks x (probe images, hflip), then the end
    assert len(seen) == 1 + 2 * (1 + 1) + 1
    assert seen[0] == seen[1] == []  # no discovery pass for named layers; said after the first chunk's pass
    named = [m for m in seen[2] if "layer1.0.relu" in m]
    assert named == [
        "SEIS layer 'layer1.0.relu' cannot be scored (NaN scores): it ran 2 times in one forward pass (a shared"
        " module); SEIS needs one map per image, so choose a module that runs once, e.g. one that wraps the"
        " shared calls."
    ]
    assert not any("'relu'" in m or "'layer1'" in m for m in seen[2])  # only the layer that cannot be scored
    assert sum("layer1.0.relu" in m for m in seen[-1]) == 1  # said once: not again at the end
    [early] = [w for w in said if "layer1.0.relu" in str(w.message)]
    assert early.filename == __file__  # points at the caller's line, like the warnings at the end
    assert all(math.isnan(v) for v in scores["hflip"]["layer1.0.relu"].values())
    assert math.isfinite(scores["hflip"]["relu"]["equivariance"]) and math.isfinite(
        scores["hflip"]["layer1"]["invariance"]
    )


def test_a_tuple_output_and_a_layer_that_did_not_run_are_named_before_the_passes():
    torch.manual_seed(0)
    seen, scores, _ = _forwards_and_warnings(
        _Unreadable(), _images(8), layers=["conv", "pair", "unused"], transforms=["hflip"], batch_size=4
    )
    early = seen[2]  # after the sizing pass and the first chunk's pass
    assert len(early) == 2
    assert early[0].startswith("SEIS layer 'pair' cannot be scored (NaN scores): _Pair returned a tuple of")
    assert "`output_getter`" in early[0]
    assert early[1] == (
        "SEIS layer 'unused' cannot be scored (NaN scores): it did not run in the forward pass of the probe images."
    )
    assert [m for m in seen[-1] if "'pair'" in m or "'unused'" in m] == early  # once each
    assert math.isfinite(scores["hflip"]["conv"]["equivariance"])
