"""What the probe benches (``bench_probe_cost.py``, ``bench_probe_memory.py``, ``bench_probe_floor.py``) measure:
one definition of the seeded probe images and model, so that the three measure the same."""

# Source run in each bench's child process once it has ``torch``, ``torchvision`` and its arguments ``name`` (a
# torchvision.models constructor), ``images``, ``size`` and ``weights`` (a weights name, or "none": untrained,
# 10 classes): it defines the probe images ``x`` [images, 3, size, size] and ``model``.
IMAGES_AND_MODEL = r"""
x = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
torch.manual_seed(0)
if weights != "none":
    model = getattr(torchvision.models, name)(weights=weights)
else:
    model = getattr(torchvision.models, name)(weights=None, num_classes=10)
"""
