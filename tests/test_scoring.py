"""``score_model`` / ``SEISProbe`` on models as users write them (issue 16, section 2).

Every value is checked against an independent computation: plain ``register_forward_hook`` on the
layer, the model run on the images and on ``flip(-1)`` / ``flip(-2)`` of them, and
``seis_scores`` / ``SEISMetric`` over the same chunks. timm and Hugging Face are not dependencies:
small stand-ins below declare what they declare (``num_prefix_tokens``, ``output_fmt``,
``ModelOutput``, ``pixel_values=``).
"""

from __future__ import annotations

import copy
import enum
import inspect
import math
import warnings
from collections import OrderedDict
from typing import NamedTuple

import pytest
import torch
from torch import nn

from seis_lightning import SEISMetric, SEISProbe, SEISWarning, score_model
from seis_lightning.functional import seis_scores
from seis_lightning.pass_plan import probe_order
from seis_lightning.results import LOGGED

FLIPS = {"hflip": lambda x: x.flip(-1), "vflip": lambda x: x.flip(-2)}
# float64 Gram products where the metric takes the option, so hand and package agree to rounding.
EXACT = {"precision": "float64"} if "precision" in inspect.signature(SEISMetric).parameters else {}


def _reference(a: torch.Tensor, b: torch.Tensor, **options) -> dict:
    """``seis_scores`` of hooked activations, in float64 Gram products where it takes the option."""
    exact = EXACT if "precision" in inspect.signature(seis_scores).parameters else {}
    return seis_scores(a, b, **options, **exact)


def _images(n: int = 16, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _hooked(model: nn.Module, layer: str | list[str], x: torch.Tensor, call=None, whole_set: bool = True) -> object:
    """The raw output of ``layer`` (or ``{layer: output}`` for a list) for images ``x``, by plain forward hooks.

    ``whole_set``: ``x`` is a whole probe set, read in the order a probe pass reads it (``probe_order``
    with the default seed), so that the nulls pair the same images; ``False`` for chunks already in that order.
    """
    names = [layer] if isinstance(layer, str) else layer
    if whole_set:
        x = x[probe_order(len(x), 0)]
    seen = {}
    model.eval()  # as score_model runs it (eval-only fast paths give other float32 roundings)
    handles = [
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, o))
        for name in names
    ]
    try:
        with torch.no_grad():
            (call or (lambda m, images: m(images)))(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return seen[layer] if isinstance(layer, str) else seen


def _assert_scores(got: dict, expected: dict, tol: float = 1e-9 if EXACT else 1e-6) -> None:
    for name in LOGGED:
        assert got[name] == pytest.approx(float(expected[name]), abs=tol, nan_ok=True), name


# --------------------------------------------------------------------- any model, by hand


def test_resnet18_equals_hand_computation_and_leaves_model_as_it_was():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    images = _images(24, 3, 32)
    # A model mid-training: train mode, moved BatchNorm statistics, gradients, a frozen stem.
    model.train()
    model(images[:8]).sum().backward()
    model.conv1.weight.requires_grad_(False)
    model.layer2.eval()  # mixed modes must come back as they were
    before = copy.deepcopy(model.state_dict())
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    rng = torch.get_rng_state()

    layers = ["layer1", "layer4", "fc"]
    scores = score_model(model, images, layers=layers, transforms=list(FLIPS), batch_size=8, **EXACT)

    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN running stats included
    assert all(torch.equal(grads[n], p.grad) for n, p in model.named_parameters() if n in grads)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

    # By hand: eval mode, the same chunks of 8, one SEISMetric per layer and transformation.
    metrics = {layer: SEISMetric(num_transforms=len(FLIPS), **EXACT) for layer in layers}
    for chunk in images[probe_order(len(images), 0)].split(8):  # the pass reads the images in probe order
        a = _hooked(model, layers, chunk, whole_set=False)
        bs = [_hooked(model, layers, flip(chunk), whole_set=False) for flip in FLIPS.values()]
        for layer in layers:
            metrics[layer].update(a[layer], [b[layer] for b in bs])
    for layer, metric in metrics.items():
        for transform, expected in zip(FLIPS, metric.compute()):
            _assert_scores(scores[transform][layer], expected)
    assert list(scores["hflip"]) == layers
    assert all(math.isfinite(scores["hflip"][layer]["equivariance"]) for layer in ["layer1", "fc"])


# --------------------------------------------------------------------- outputs that are not tensors


class ModelOutput(OrderedDict):
    """A stand-in for Hugging Face's ``ModelOutput``: an ordered dict with attribute access."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class Pair(NamedTuple):
    features: torch.Tensor
    pooled: torch.Tensor


class HFLayer(nn.Module):
    """Returns a tuple, as Hugging Face's encoder layers do."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, hidden):
        return (hidden + self.mlp(hidden),)


class HFEncoder(nn.Module):
    def __init__(self, dim: int, depth: int = 2) -> None:
        super().__init__()
        self.layer = nn.ModuleList(HFLayer(dim) for _ in range(depth))

    def forward(self, hidden):
        for layer in self.layer:
            hidden = layer(hidden)[0]
        return ModelOutput(last_hidden_state=hidden)


class HFStyleModel(nn.Module):
    """Forward takes ``pixel_values=`` only; the encoder returns a ``ModelOutput``."""

    def __init__(self, dim: int = 12, patch: int = 4) -> None:
        super().__init__()
        self.embeddings = nn.Conv2d(3, dim, patch, patch)
        self.encoder = HFEncoder(dim)

    def forward(self, *, pixel_values):
        tokens = self.embeddings(pixel_values).flatten(2).transpose(1, 2)
        return ModelOutput(last_hidden_state=self.encoder(tokens).last_hidden_state)


def _pixel_values(model, images):
    return model(pixel_values=images)


def test_hugging_face_style_model_with_forward_fn_and_output_getter():
    torch.manual_seed(0)
    model, images = HFStyleModel(), _images(16)
    getters = {"encoder": lambda out: out.last_hidden_state, "encoder.layer.0": lambda out: out[0]}
    scores = score_model(
        model,
        images,
        layers=["embeddings", "encoder.layer.0", "encoder"],
        transforms="hflip",
        batch_size=16,
        layout={"embeddings": "channels_first", "encoder.layer.0": "channels_last", "encoder": "channels_last"},
        output_getter=getters,
        forward_fn=_pixel_values,
        **EXACT,
    )["hflip"]
    for layer, layout in [("embeddings", "channels_first"), ("encoder.layer.0", "channels_last")]:
        a = _hooked(model, layer, images, _pixel_values)
        b = _hooked(model, layer, images.flip(-1), _pixel_values)
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        _assert_scores(scores[layer], _reference(a, b, layout=layout))
    a = _hooked(model, "encoder", images, _pixel_values).last_hidden_state
    b = _hooked(model, "encoder", images.flip(-1), _pixel_values).last_hidden_state
    _assert_scores(scores["encoder"], _reference(a, b, layout="channels_last"))


def test_without_forward_fn_the_model_error_is_raised_naming_forward_fn():
    with pytest.raises(
        RuntimeError, match=r"forward pass failed on probe images \[2, 3, 16, 16\].*positional.*forward_fn"
    ):
        score_model(HFStyleModel(), _images(8), layers="embeddings", transforms="hflip")


def test_layer_without_output_getter_is_nan_with_a_reason_and_the_others_are_scored():
    torch.manual_seed(0)
    model, images = HFStyleModel(), _images(16)
    with pytest.warns(SEISWarning, match=r"'encoder'.*ModelOutput.*`output_getter`") as caught:
        scores = score_model(
            model, images, layers=["embeddings", "encoder"], transforms="hflip", forward_fn=_pixel_values
        )
    assert all(math.isnan(value) for value in scores["hflip"]["encoder"].values())
    assert all(math.isfinite(scores["hflip"]["embeddings"][name]) for name in ("equivariance", "invariance"))
    assert not any("embeddings" in str(w.message) for w in caught if issubclass(w.category, SEISWarning))

    result = SEISProbe(["embeddings", "encoder", "encoder.layer.1"], "hflip", forward_fn=_pixel_values).score(
        model, images
    )
    assert set(result.reasons) == {"encoder", "encoder.layer.1"}
    assert "last_hidden_state" in result.reasons["encoder"] and "`output_getter`" in result.reasons["encoder"]
    assert "tuple of ['Tensor']" in result.reasons["encoder.layer.1"]
    assert result.layers == ["embeddings", "encoder.layer.1", "encoder"]  # forward order


class TupleLayers(nn.Module):
    """Layers that return tuples, a dict and a named tuple, as PyTorch's own do."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.lstm = nn.LSTM(dim, dim, batch_first=True)
        self.heads = DictHeads(dim)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.attn(tokens, tokens, tokens)[0]
        tokens = self.lstm(tokens)[0]
        return self.heads(tokens)


class DictHeads(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens):
        return {"tokens": self.proj(tokens), "pair": Pair(tokens, tokens.mean(1))}


@pytest.mark.parametrize(
    "getter",
    [
        pytest.param(lambda out: out[0], id="callable"),
        pytest.param({"attn": lambda out: out[0], "lstm": lambda out: out[0]}, id="mapping"),
    ],
)
def test_output_getter_reads_tuple_outputs(getter):
    torch.manual_seed(0)
    model, images = TupleLayers(), _images(16)
    scores = score_model(
        model,
        images,
        layers=["attn", "lstm"],
        transforms="vflip",
        layout="channels_last",
        output_getter=getter,
        **EXACT,
    )["vflip"]
    for layer in ("attn", "lstm"):
        a = _hooked(model, layer, images)[0]
        b = _hooked(model, layer, images.flip(-2))[0]
        _assert_scores(scores[layer], _reference(a, b, layout="channels_last"))


def test_output_getter_reads_dicts_and_named_tuples_and_a_failing_getter_names_it():
    torch.manual_seed(0)
    model, images = TupleLayers(), _images(16)
    getters = {"heads": lambda out: out["pair"].pooled, "lstm": lambda out: out.missing}
    result = SEISProbe(["heads", "lstm", "embed"], "vflip", output_getter=getters, **EXACT).score(model, images)
    a = _hooked(model, "heads", images)["pair"].pooled
    b = _hooked(model, "heads", images.flip(-2))["pair"].pooled
    _assert_scores(result.scores["vflip"]["heads"], _reference(a, b))
    assert "`output_getter` failed" in result.reasons["lstm"] and "AttributeError" in result.reasons["lstm"]
    assert math.isfinite(result.scores["vflip"]["embed"]["equivariance"])
    assert set(result.reasons) == {"lstm"}


# --------------------------------------------------------------------- token layouts the model declares


class Block(nn.Module):
    """A pre-norm transformer block: the class token mixes with the patch tokens."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, 2, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)

    def forward(self, tokens):
        return self.layer(tokens)


class TimmStyleViT(nn.Module):
    """timm's convention: ``num_prefix_tokens`` on the model, blocks output ``[N, 1 + T, D]``."""

    num_prefix_tokens = 1

    def __init__(self, dim: int = 16, patch: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.Sequential(*(Block(dim) for _ in range(depth)))
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.head(self.blocks(tokens)[:, 0])


class TimmStyleNHWC(nn.Module):
    """timm's convention for ConvNeXt/Swin-like models: ``output_fmt = "NHWC"``, stages output ``[N, H, W, C]``."""

    output_fmt = "NHWC"

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 3, padding=1)
        self.stages = nn.Sequential(Stage(dim), Stage(dim))

    def forward(self, x):
        return self.stages(self.stem(x).permute(0, 2, 3, 1))


class Stage(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, x):  # [N, H, W, C] in and out
        return self.mlp(torch.relu(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)))


def test_timm_num_prefix_tokens_drops_the_class_token():
    torch.manual_seed(0)
    model, images = TimmStyleViT(), _images(16)
    a, b = _hooked(model, "blocks.0", images), _hooked(model, "blocks.0", images.flip(-1))
    kept = _reference(a[:, 1:], b[:, 1:], layout="channels_last")
    scores = score_model(model, images, layers=["blocks.0"], transforms="hflip", **EXACT)["hflip"]["blocks.0"]
    _assert_scores(scores, kept)
    # Explicit options override what the model declares.
    with_class_token = _reference(a, b, layout="channels_last")
    assert with_class_token["equivariance"] != pytest.approx(kept["equivariance"], abs=1e-6)
    override = score_model(model, images, layers=["blocks.0"], transforms="hflip", num_prefix_tokens=0, **EXACT)
    _assert_scores(override["hflip"]["blocks.0"], with_class_token)
    per_layer = score_model(
        model, images, layers=["blocks.0"], transforms="hflip", num_prefix_tokens={"blocks.0": 0}, **EXACT
    )
    _assert_scores(per_layer["hflip"]["blocks.0"], with_class_token)


class PatchEmbed(nn.Module):
    """timm's ``PatchEmbed`` (``flatten=True``): tokens ``[N, T, D]`` before the class token, and ``num_patches``."""

    def __init__(self, dim: int = 16, patch: int = 4, image: int = 16) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.num_patches = (image // patch) ** 2

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmStyleTokenViT(TimmStyleViT):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed()

    def forward(self, x):
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), self.patch_embed(x)], dim=1)
        return self.head(self.blocks(tokens)[:, 0])


def test_timm_patch_embed_keeps_every_token():
    """The patch embedding runs before the class token is added: all 16 of its tokens are patches."""
    torch.manual_seed(0)
    model, images = TimmStyleTokenViT(), _images(16)
    layers = ["patch_embed", "blocks.0"]
    a, b = _hooked(model, layers, images), _hooked(model, layers, images.flip(-1))
    assert a["patch_embed"].shape[1] == 16 and a["blocks.0"].shape[1] == 17
    scores = score_model(model, images, layers=layers, transforms="hflip", **EXACT)["hflip"]
    _assert_scores(scores["patch_embed"], _reference(a["patch_embed"], b["patch_embed"], layout="channels_last"))
    _assert_scores(scores["blocks.0"], _reference(a["blocks.0"][:, 1:], b["blocks.0"][:, 1:], layout="channels_last"))


class Format(str, enum.Enum):
    """timm's ``timm.layers.Format``: ``str(Format.NHWC)`` is not ``"NHWC"``."""

    NCHW = "NCHW"
    NHWC = "NHWC"


@pytest.mark.parametrize("output_fmt", ["NHWC", Format.NHWC], ids=["str", "timm_Format"])
@pytest.mark.parametrize("on", ["model", "layer"])
def test_timm_output_fmt_nhwc_is_read_as_channels_last(output_fmt, on):
    torch.manual_seed(0)
    model, images = TimmStyleNHWC(), _images(16, size=8)
    if on == "layer":  # declared by the layer itself (as timm's PatchEmbed does): it comes before the model's
        model.output_fmt = "NCHW"
        model.stages[0].output_fmt = output_fmt
    else:
        model.output_fmt = output_fmt
    a, b = _hooked(model, "stages.0", images), _hooked(model, "stages.0", images.flip(-2))
    assert a.shape == (16, 8, 8, 8)
    channels_first = _reference(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2))
    scores = score_model(model, images, layers=["stages.0"], transforms="vflip", **EXACT)["vflip"]["stages.0"]
    _assert_scores(scores, channels_first)
    if on == "layer" or output_fmt is Format.NHWC:
        return
    # layout="channels_first" overrides the declaration: the raw [N, H, W, C] read as [N, C=H, W, C].
    override = score_model(model, images, layers=["stages.0"], transforms="vflip", layout="channels_first", **EXACT)
    _assert_scores(override["vflip"]["stages.0"], _reference(a, b))


def test_seis_attributes_on_the_model_declare_the_layout():
    torch.manual_seed(0)
    model, images = TimmStyleNHWC(), _images(16, size=8)
    model.output_fmt = "NCHW"
    model.seis_layout = {"stages.1": "channels_last"}
    a, b = _hooked(model, "stages.1", images), _hooked(model, "stages.1", images.flip(-1))
    scores = score_model(model, images, layers=["stages.1"], transforms="hflip", **EXACT)["hflip"]["stages.1"]
    _assert_scores(scores, _reference(a, b, layout="channels_last"))


# --------------------------------------------------------------------- torch.compile


class CompiledBody(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.body(x).mean((-2, -1)))


@pytest.mark.slow
def test_compiled_submodule_is_named_as_written_and_scored_after_an_eval_pass():
    torch.manual_seed(0)
    plain, images = CompiledBody(), _images(16)
    compiled = copy.deepcopy(plain)
    compiled.body = torch.compile(compiled.body)
    compiled.eval()
    with torch.no_grad():
        compiled(images[:8])  # compiled at the probe batch size, before any hook exists
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    options = dict(layers=["body.0", "body.2", "head"], transforms=list(FLIPS), batch_size=8, **EXACT)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*not scored", SEISWarning)  # e.g. "it did not run"
        got = score_model(compiled, images, **options)
    expected = score_model(plain, images, **options)
    for transform in FLIPS:
        assert list(got[transform]) == options["layers"]
        for layer in options["layers"]:
            assert math.isfinite(got[transform][layer]["equivariance"])
            for name in LOGGED:
                assert got[transform][layer][name] == pytest.approx(
                    expected[transform][layer][name], abs=1e-6, nan_ok=True
                )
    assert all(not m._forward_hooks for m in compiled.modules())
    with torch.no_grad():  # the compiled module still runs its graph afterwards, not recompiled
        assert torch.allclose(compiled(images[:8]), plain.eval()(images[:8]), atol=1e-5)
    assert counters["stats"]["unique_graphs"] == graphs


# --------------------------------------------------------------------- precision of the model


def test_bfloat16_model_is_scored_in_its_dtype():
    torch.manual_seed(0)
    model, images = CompiledBody(), _images(16)
    scores = score_model(model.to(torch.bfloat16), images, layers=["body.0"], transforms="hflip")
    assert math.isfinite(scores["hflip"]["body.0"]["equivariance"])
    assert next(model.parameters()).dtype == torch.bfloat16


def test_bf16_mixed_trainer_scores_through_the_callback(tmp_path):
    from seis_lightning import SEISCallback
    from tests.lightning_helpers import TinyCNN, digits_loaders, trainer

    train, val = digits_loaders(num_train=64, num_val=64)
    seis = SEISCallback(layers=["conv1", "conv2"], transforms="hflip", num_samples=64, log_figures=False)
    model = TinyCNN()
    run = trainer(tmp_path, [seis], max_epochs=1, precision="bf16-mixed", logger=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", ".*not scored", SEISWarning)
        run.fit(model, train, val)
    logged = seis.scores["hflip"]
    images = seis.probe_set
    full = score_model(model, images, layers=["conv1", "conv2"], transforms="hflip")["hflip"]
    for layer in ("conv1", "conv2"):
        assert math.isfinite(logged[layer]["equivariance"])
        assert logged[layer]["equivariance"] != full[layer]["equivariance"]  # the probe pass ran under autocast
        # bf16 activations: the same scores to bfloat16's few digits, not to float32's.
        assert logged[layer]["equivariance"] == pytest.approx(full[layer]["equivariance"], abs=0.05)
        assert logged[layer]["invariance"] == pytest.approx(full[layer]["invariance"], abs=0.05)


@pytest.mark.parametrize(("num_images", "batch_size", "world_size"), [(48, 16, 1), (50, 16, 2), (5, 2, 3), (3, 64, 4)])
def test_pass_plan_covers_every_image_once_with_its_global_offset(num_images, batch_size, world_size):
    from seis_lightning.pass_plan import pass_plan

    plans = [pass_plan(num_images, batch_size, rank, world_size) for rank in range(world_size)]
    counted = sorted((c.start, c.stop) for plan in plans for c in plan if c.counted)
    covered = [i for start, stop in counted for i in range(start, stop)]
    assert covered == list(range(num_images))  # each image once, at its offset in the whole probe set
    assert len({len(plan) for plan in plans}) == 1  # every rank runs as many forward passes
    assert all(c.stop - c.start <= batch_size for plan in plans for c in plan if num_images >= world_size)


def test_frozen_restores_modes_and_rng_and_turns_off_gradients():
    from seis_lightning.forward import frozen

    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(2, 2)).train()
    model[1].eval()
    state = torch.get_rng_state()
    with frozen(model):
        assert not model.training and not torch.is_grad_enabled()
        torch.rand(3)
    assert model.training and not model[1].training and torch.is_grad_enabled()
    assert torch.equal(torch.get_rng_state(), state)
