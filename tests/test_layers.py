"""Layer names, patterns, default layers and ``capture`` (hooks only inside its block)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from seis_lightning import capture, layer_names, resolve_layers
from seis_lightning.layers import default_layers


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(
            OrderedDict(
                first=nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
                second=nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()),
            )
        )
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((-2, -1)))


class Tuple(nn.Module):
    def forward(self, x):
        return x, x.sum()


def test_layer_names_hide_compile_wrappers():
    model = Net()
    model.blocks = torch.compile(model.blocks)  # wrapping only: nothing compiles before a call
    names = layer_names(model)
    assert "blocks.first.0" in names and "blocks" in names
    assert not any("_orig_mod" in name for name in names)
    assert names["blocks.first.0"] is model.blocks._orig_mod.first[0]
    whole = torch.compile(Net())
    assert list(layer_names(whole)) == list(layer_names(Net()))
    assert resolve_layers(whole, "blocks.*.0") == ["blocks.first.0", "blocks.second.0"]
    assert default_layers(whole) == ["stem", "blocks", "head"]


def test_patterns_and_unknown_names():
    model = Net()
    assert resolve_layers(model, ["head", "blocks.*.0"]) == ["head", "blocks.first.0", "blocks.second.0"]
    assert resolve_layers(model, "**.1") == ["blocks.first.1", "blocks.second.1"]
    with pytest.raises(
        ValueError, match=r"'blocks.frist.0' matches no module of Net\. Closest names: \['blocks.first.0'"
    ):
        resolve_layers(model, "blocks.frist.0")
    with pytest.raises(ValueError, match="at least one"):
        resolve_layers(model, [])


def test_capture_yields_detached_outputs_in_forward_order_and_removes_its_hooks():
    model = Net()
    x = torch.rand(2, 3, 6, 6, requires_grad=True)
    with capture(model, ["head", "stem", "blocks.second.0"]) as features:
        model(x)
        assert list(features) == ["stem", "blocks.second.0", "head"]
        assert all(not value.requires_grad for value in features.values())
        features.clear()
        model(x[:1])
        assert features["stem"].shape == (1, 4, 6, 6)
    assert all(not module._forward_hooks for module in model.modules())
    with pytest.raises(ZeroDivisionError), capture(model, ["stem"]):
        raise ZeroDivisionError
    assert all(not module._forward_hooks for module in model.modules())


def test_capture_reports_outputs_that_are_not_tensors_and_reads_them_with_output_getter():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Tuple())
    x = torch.rand(2, 1, 5, 5)
    with capture(model, ["0", "1"]) as features:
        model(x)
    assert list(features) == ["0"] and features.order == ["0", "1"]
    assert "tuple of ['Tensor', 'Tensor']" in features.errors["1"] and "`output_getter`" in features.errors["1"]
    with capture(model, ["1"], output_getter={"1": lambda out: out[0]}) as features:
        model(x)
    assert features["1"].shape == (2, 2, 3, 3) and not features.errors


def test_a_layer_that_runs_twice_in_one_pass_has_no_output_and_says_why():
    conv = nn.Conv2d(2, 2, 1)
    model = nn.Sequential(conv, conv, nn.Conv2d(2, 2, 1))
    with capture(model, ["0", "2"]) as features:
        model(torch.rand(1, 2, 3, 3))
    assert list(features) == ["2"] and features.order == ["0", "2"]
    assert "ran 2 times in one forward pass" in features.errors["0"]


def test_default_layers_skip_losses_and_open_module_lists():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(
                nn.Conv2d(1, 2, 1), nn.ModuleList([nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)]), nn.ReLU()
            )
            self.criterion = nn.CrossEntropyLoss()

    assert default_layers(Wrapper()) == ["model.0", "model.1.0", "model.1.1", "model.2"]
