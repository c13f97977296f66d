"""``SEISMetric`` across devices and dtypes: float64 sums stay float64, on the CPU where the device has none.

No MPS here: a device without float64 is simulated by ``_has_float64`` answering False for ``meta``
(as it does for ``mps``), in ``functional`` and where ``metric`` imported it. Meta tensors hold no
data, so what runs on such a device is the routing (states, defaults, cached results stay on the
CPU while ``metric.device`` is the target) and the CPU side: updates adding CPU statistics into the
CPU states, ``compute``, ``reset``, state dicts and distributed sync of a metric moved there.
"""

from __future__ import annotations

import io

import pytest
import torch

import seis_lightning._precision
import seis_lightning.metric
from seis_lightning import SEISMetric
from seis_lightning.functional import SHIFTS, STATISTICS
from seis_lightning.statistics import ROW_STATISTICS
from tests.reference import reference_scores
from tests.test_functional import ALL_SCORES, assert_matches_reference, warped
from tests.test_metric import ddp_scores

# the sums, the mean maps they are taken about, and a vector layer's image side (scalar zeros here)
STATES = STATISTICS + SHIFTS + ROW_STATISTICS

CPU, META = torch.device("cpu"), torch.device("meta")


def _without_float64(device: torch.device) -> bool:
    return torch.device(device).type not in ("mps", "meta")


def _simulate_meta_without_float64() -> None:
    seis_lightning._precision._has_float64 = _without_float64


@pytest.fixture
def no_float64(monkeypatch):
    """The ``meta`` device counts as one without float64, like MPS."""
    monkeypatch.setattr(seis_lightning._precision, "_has_float64", _without_float64)


@pytest.fixture
def pair(digit_maps, generator):
    a = digit_maps[:192, :, ::2, ::2]
    return a, warped(a, generator)


def _states(metric: SEISMetric) -> dict[str, torch.Tensor]:
    return {name: getattr(metric, name) for name in STATES}


def _assert_float64_on(metric: SEISMetric, device: torch.device) -> None:
    for name in STATES:
        for where, value in (("state", getattr(metric, name)), ("default", metric._defaults[name])):
            assert value.dtype == torch.float64, (where, name)
            assert value.device == device, (where, name)


def _fed(metric: SEISMetric, a: torch.Tensor, b: torch.Tensor, batch: int = 64) -> SEISMetric:
    for x, y in zip(a.split(batch), b.split(batch)):
        metric.update(x, y)
    return metric


def test_states_stay_on_the_cpu_on_a_device_without_float64(no_float64):
    metric = SEISMetric(precision="float32").to("meta")
    assert metric.device == META
    _assert_float64_on(metric, CPU)
    metric.to(META, torch.float16)  # again, with a cast: still the CPU, still float64
    assert metric.device == META
    _assert_float64_on(metric, CPU)
    metric.reset()
    _assert_float64_on(metric, CPU)
    assert all(value.ndim == 0 and value.item() == 0 for value in _states(metric).values())


def test_states_follow_a_device_with_float64():
    metric = SEISMetric().to("cpu")
    assert metric.device == CPU
    _assert_float64_on(metric, CPU)
    metric.to("meta")  # unpatched, meta has float64: the states go there, as torchmetrics moves them
    assert metric.device == META
    _assert_float64_on(metric, META)
    metric.reset()
    _assert_float64_on(metric, META)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_states_follow_cuda_and_back(pair):
    a, b = pair
    metric = SEISMetric(precision="float64").cuda()
    assert metric.device.type == "cuda"
    _fed(metric, a.cuda(), b.cuda())
    _assert_float64_on(metric, torch.device("cuda", torch.cuda.current_device()))
    result = metric.cpu().compute()
    _assert_float64_on(metric, CPU)
    expected = _fed(SEISMetric(precision="float64"), a, b).compute()
    for name in ALL_SCORES:
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name


def test_the_default_device_without_float64_keeps_the_states_on_the_cpu(no_float64):
    with torch.device("meta"):
        metric = SEISMetric()
    assert metric.device == META
    _assert_float64_on(metric, CPU)


def test_the_default_device_with_float64_holds_the_states():
    with torch.device("meta"):
        metric = SEISMetric()
    assert metric.device == META
    _assert_float64_on(metric, META)


@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_float32_updates_into_cpu_states_equal_the_reference(no_float64, pair, precision):
    a, b = pair
    metric = SEISMetric(precision=precision).to("meta")
    result = _fed(metric, a, b).compute()
    assert metric.device == META
    _assert_float64_on(metric, CPU)
    assert metric.map_sum_a.shape == (32, 49)
    assert metric.num_images.item() == 192
    assert_matches_reference(result, reference_scores(a.flatten(2), b.flatten(2), batch_size=64), atol=1e-4)
    # the same sums and scores as a metric that never left the CPU: "auto" resolves against the
    # activations' device (the CPU here), not the metric's
    on_cpu = _fed(SEISMetric(precision=precision), a, b)
    for name in STATES:
        torch.testing.assert_close(getattr(metric, name), getattr(on_cpu, name), rtol=0, atol=0)
    expected = on_cpu.compute()
    for name in ALL_SCORES:
        assert result[name] == expected[name], name


def test_jackknife_and_forward_into_cpu_states(no_float64, pair):
    a, b = pair
    metric = SEISMetric(precision="float32", jackknife_groups=4).to("meta")
    batch_scores = [metric(x, y) for x, y in zip(a.split(64), b.split(64))]
    assert [scores["num_images"] for scores in batch_scores] == [64, 64, 64]
    _assert_float64_on(metric, CPU)
    assert metric.num_images.tolist() == [48.0, 48.0, 48.0, 48.0]
    result = metric.compute()
    expected = _fed(SEISMetric(precision="float64", jackknife_groups=4), a, b).compute()
    for name in ALL_SCORES:
        assert result[name] == pytest.approx(expected[name], abs=1e-4), name
        assert result[f"{name}_se"] == pytest.approx(expected[f"{name}_se"], abs=1e-4), name


def test_cached_scores_and_reset_after_a_move(no_float64, pair):
    a, b = pair
    metric = _fed(SEISMetric(precision="float32"), a, b)
    before = metric.compute()
    assert metric._computed is not None
    metric.to("meta")  # the cached result's float64 tensors stay on the CPU too
    cached = metric.compute()
    assert cached["spatial_rho"].device == CPU and cached["spatial_rho"].dtype == torch.float64
    torch.testing.assert_close(cached["spatial_rho"], before["spatial_rho"], rtol=0, atol=0)
    assert cached["equivariance"] == before["equivariance"]
    metric.reset()
    _assert_float64_on(metric, CPU)
    assert metric.num_images.item() == 0
    again = _fed(metric, a, b).compute()
    assert again["equivariance"] == before["equivariance"]


def test_the_metric_keeps_the_precision_of_its_first_update(no_float64, pair):
    """float64 statistics from CPU activations stay float64 statistics (eps, tie tolerance) once moved to meta."""
    a, b = pair
    metric = _fed(SEISMetric(precision="auto"), a[:64], b[:64])
    assert metric._resolved.precision == "float64"
    expected = metric.compute()
    metric.to("meta")
    result = metric.compute()
    for name in ALL_SCORES:
        assert result[name] == expected[name], name
    with pytest.raises(ValueError, match="meta, which has no float64"):
        SEISMetric(precision="float64").update(a[:2].to("meta"), b[:2].to("meta"))


CASTS = {
    "half": lambda m: m.half(),
    "float": lambda m: m.float(),
    "double": lambda m: m.double(),
    "bfloat16": lambda m: m.bfloat16(),
    "type(float32)": lambda m: m.type(torch.float32),
    "to(float32)": lambda m: m.to(torch.float32),
    "to(float16)": lambda m: m.to(torch.float16),
    "to(cpu, float16)": lambda m: m.to("cpu", torch.float16),
    "set_dtype(float32)": lambda m: m.set_dtype(torch.float32),
    "set_dtype(float16)": lambda m: m.set_dtype(torch.float16),
}


@pytest.mark.parametrize("cast", CASTS)
def test_casts_leave_the_sums_float64(cast, pair):
    a, b = pair
    metric = _fed(SEISMetric(precision="float32"), a, b)
    before = {name: value.clone() for name, value in _states(metric).items()}
    expected = metric.compute()
    metric.reset()
    _fed(metric, a, b)
    out = CASTS[cast](metric)
    assert out is metric
    assert metric.device == CPU
    _assert_float64_on(metric, CPU)
    for name in STATES:
        torch.testing.assert_close(getattr(metric, name), before[name], rtol=0, atol=0)
    result = metric.compute()
    for name in ALL_SCORES:
        assert result[name] == expected[name], name
    metric.reset()
    _assert_float64_on(metric, CPU)


# torchmetrics does not save the update count: a restored metric warns that compute comes before update.
@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric SEISMetric was called before:UserWarning")
@pytest.mark.parametrize("move", [False, True], ids=["cpu", "no-float64 device"])
def test_state_dict_round_trip(no_float64, pair, move):
    a, b = pair
    metric = SEISMetric(precision="float32")
    metric.persistent(True)
    if move:
        metric.to("meta")
    _fed(metric, a, b)
    expected = metric.compute()
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    assert set(saved) == set(STATES)
    assert all(value.device == CPU and value.dtype == torch.float64 for value in saved.values())
    restored = SEISMetric(precision="float32")
    restored.persistent(True)
    if move:
        restored.to("meta")
    restored.load_state_dict(saved)
    _assert_float64_on(restored, CPU)
    for name in STATES:
        torch.testing.assert_close(getattr(restored, name), getattr(metric, name), rtol=0, atol=0)
    result = restored.compute()
    for name in ALL_SCORES:
        assert result[name] == expected[name], name


def _float32_metric_on_meta() -> SEISMetric:
    _simulate_meta_without_float64()  # a fresh process: the patch is its own
    return SEISMetric(precision="float32").to("meta")


@pytest.mark.distributed
def test_two_processes_sync_cpu_states(pair, tmp_path):
    a, b = pair
    batches_a, batches_b = list(a.split(32)), list(b.split(32))
    synced = ddp_scores(_float32_metric_on_meta, batches_a, batches_b, tmp_path)
    assert synced["device"] == "meta"
    expected = _fed(SEISMetric(precision="float32"), a, b, batch=32).compute()
    for name in ALL_SCORES:
        assert synced["scores"][name] == pytest.approx(expected[name], abs=1e-9), name
