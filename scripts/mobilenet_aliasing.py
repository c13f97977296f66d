"""Reference: where a real network aliases. torchvision's ImageNet-pretrained MobileNetV2 on real photographs under
a horizontal pixel-shift sweep: equivariance against the shift per layer, each layer's stride marked, and its
aliasing gap ± SE (spec, "Aliasing gap").

    TORCH_HOME=/tmp/torchhome python -m scripts.mobilenet_aliasing --foolbox /tmp/wheels/foolbox-3.3.4-py3-none-any.whl
    python -m scripts.mobilenet_aliasing --table-only      # the table and figure again from the CSV

Weights and photographs as in ``scripts/reference_networks.py`` (offline: ``$TORCH_HOME/hub/checkpoints`` and
foolbox's wheel; see its docstring): random resized crops of the 22 photographs, ImageNet-normalised, so the
zeros a shift brings in are the ImageNet mean colour. The layers are block outputs at total strides 2, 4, 8, 16
and 32 (``features.1``, ``.3``, ``.6``, ``.13``, ``.17``), strides read from the map sizes. A layer's map is kept
whole only where it has at most ``--max-positions`` positions; a larger map keeps a fixed random subset of its
positions (spec, "Large maps"), on which a shift by whole map positions is no longer a permutation, so the
stride pattern of such a layer is read with that caveat (the script says which layers are reduced). The
jackknife groups hold whole photographs (as in ``reference_networks.py``): ``--groups`` must divide 22.

Each layer's gap uses the sweep's shifts up to its largest odd half-multiple of the stride, where multiples and
odd half-multiples have the same mean shift, so that a steady fall of equivariance with the shift does not bias
it; its SE comes from the per-shift jackknife SEs as if independent (an upper side). A layer whose sweep holds no
multiple of its stride (16 and 32 px with shifts up to 8 px) has no gap; its curve is still drawn.

Writes ``docs/figures/ref_mobilenet_aliasing.csv`` (one row per layer and shift: equivariance, its SE, the null,
the stride, and the layer's gap ± SE repeated on its rows) and ``docs/figures/ref_mobilenet_aliasing.png`` (drawn by
:func:`seis_lightning.plotting.aliasing_figure`), and prints the table of gaps in Markdown.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
import warnings
from pathlib import Path

import torch

try:
    from scripts._manifest import Build
except ModuleNotFoundError:  # run as `python scripts/mobilenet_aliasing.py`
    from _manifest import Build
from seis_lightning.functional import SEISWarning
from seis_lightning.plotting import aliasing_figure
from seis_lightning.sweeps import SHIFT_FAMILY, AliasingGap, aliasing_gap, sweep_families
from seis_lightning.transforms import parse_transforms

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["features.1", "features.3", "features.6", "features.13", "features.17"]
# to 8 px by half pixels, then to 12 px (stride 8: multiple 8 between odd half-multiples 4 and 12)
SWEEP = ["shift:0:8:0.5", "shift:9:12:1"]
WHOLE, WHOLE_POSITIONS, WHOLE_LABEL = "features.1", 1024, ", whole map"  # 32 x 32 at 64 px: kept whole
COLUMNS = ("layer", "stride", "positions", "kept", "shift", "equivariance", "equivariance_se", "equivariance_null",
           "gap", "gap_se", "gap_shifts")  # fmt: skip


def balanced_gap(
    shifts: list[float], values: list[float], errors: list[float], stride: int | None
) -> tuple[AliasingGap, str]:
    """The aliasing gap over the shifts up to the largest odd half-multiple of ``stride`` in the sweep (the
    multiples and the odd half-multiples then have the same mean shift), with its SE from the per-shift SEs;
    and those shifts (``"0-5"``; empty where the gap is undefined)."""
    halves = [d for d in shifts if stride and d > 0 and (d / stride - 0.5) % 1 == 0]
    end = max(halves, default=max(shifts))
    kept = [k for k, d in enumerate(shifts) if d <= end]
    gap = aliasing_gap([shifts[k] for k in kept], [values[k] for k in kept], stride, se=[errors[k] for k in kept])
    return gap, f"0-{end:g}" if halves and not gap.reason else ""


def score(args: argparse.Namespace) -> list[dict]:
    """Two passes: every layer under ``--sweep`` with maps reduced to ``--max-positions``; then the stride-2 layer
    alone with its whole map (``WHOLE``) under ``--whole-sweep`` (its 1024 positions make each shift's
    jackknife several times dearer, hence whole pixels only: its odd half-multiples are whole pixels)."""
    import torchvision

    from scripts.reference_networks import check_pretrained, photographs, probe_set
    from seis_lightning import score_model
    from seis_lightning.pass_plan import probe_order

    photos, labels = photographs(args.foolbox)
    if len(photos) % args.groups:
        raise SystemExit(f"--groups {args.groups} must divide the {len(photos)} photographs")
    images, _ = probe_set(photos, args.crops, args.size, seed=0)
    images = images[probe_order(len(images), 0).argsort()]  # jackknife group n mod G: whole photographs
    model = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")
    print(f"pretrained top-1 on the labelled photographs: {check_pretrained(model, photos, labels):.2f}")
    print(f"{len(images)} probe crops of {args.size}x{args.size}, {args.groups} jackknife groups, one thread")
    rows = []
    passes = [(LAYERS, args.sweep, args.max_positions, ""), ([WHOLE], args.whole_sweep, WHOLE_POSITIONS, WHOLE_LABEL)]
    for layers, sweep, max_positions, label in passes:
        started = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SEISWarning)  # sample sufficiency: read against the null
            scores = score_model(
                model,
                images,
                layers=layers,
                transforms=sweep,
                jackknife_groups=args.groups,
                batch_size=args.batch_size,
                max_positions=max_positions,
            )
        print(f"{sweep} at {layers} (max_positions={max_positions}): {time.process_time() - started:.1f} CPU s")
        members = sweep_families(parse_transforms(sweep))[SHIFT_FAMILY]
        shifts = [shift for shift, _ in members]
        for layer in layers:
            stride = scores.strides[layer].stride
            values = [scores[name][layer]["equivariance"] for _, name in members]
            errors = [scores[name][layer]["equivariance_se"] for _, name in members]
            gap, used = balanced_gap(shifts, values, errors, stride)
            positions = (args.size // stride) ** 2 if stride else ""
            for (shift, name), value, error in zip(members, values, errors):
                rows.append(
                    {"layer": layer + label, "stride": stride, "positions": positions, "kept": min(positions,
                     max_positions), "shift": shift, "equivariance": value, "equivariance_se": error,
                     "equivariance_null": scores[name][layer]["equivariance_null"], "gap": gap.gap,
                     "gap_se": gap.se, "gap_shifts": used}
                )  # fmt: skip
    return rows


def write_rows(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows([{k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows])


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for name in ("shift", "equivariance", "equivariance_se", "equivariance_null", "gap", "gap_se"):
            row[name] = float(row[name])
        row["stride"] = int(row["stride"]) if row["stride"] else None
        row["positions"], row["kept"] = int(row["positions"]), int(row["kept"])
    return rows


def figure_of(rows: list[dict]):
    """The rows as a ``shift`` sweep's scores, drawn by :func:`aliasing_figure` with the balanced gaps."""
    shifts = sorted({row["shift"] for row in rows})
    transforms = parse_transforms([f"shift:{shift:g},0" for shift in shifts])
    names = {shift: t.name for shift, t in zip(shifts, transforms)}
    scores: dict = {name: {} for name in names.values()}
    for row in rows:
        scores[names[row["shift"]]][row["layer"]] = {
            "equivariance": row["equivariance"],
            "equivariance_se": row["equivariance_se"],
            "equivariance_null": row["equivariance_null"],
        }
    strides = {row["layer"]: row["stride"] for row in rows}
    gaps = {row["layer"]: AliasingGap(row["gap"], row["gap_se"], "" if row["gap_shifts"] else "none") for row in rows}
    reduced = sorted(
        {f"{row['layer']}: {row['kept']} of {row['positions']}" for row in rows if row["kept"] < row["positions"]}
    )
    title = (
        "MobileNetV2 (ImageNet weights), real photographs: equivariance ± 2 SE against shift; dotted: multiples of"
        f" the stride, dashed: null\nrandom subset of map positions kept at {', '.join(reduced)}"
    )
    return aliasing_figure(scores, transforms, strides, title, gaps=gaps)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| layer (stride) | positions (kept) | gap ± SE | shifts | e at multiples | e at odd half-multiples | null |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in dict.fromkeys(row["layer"] for row in rows):
        mine = [row for row in rows if row["layer"] == layer]
        first = mine[0]
        stride, gap, se = first["stride"], first["gap"], first["gap_se"]
        positions = f"{first['positions']} ({first['kept']})"
        if not first["gap_shifts"] or math.isnan(gap):
            cells = ["–", "no multiple of the stride in the sweep", "", ""]
        else:
            end = float(first["gap_shifts"].split("-")[1])
            inside = [r for r in mine if 0 < r["shift"] <= end]
            on = [r for r in inside if (r["shift"] / stride) % 1 == 0]
            half = [r for r in inside if (r["shift"] / stride - 0.5) % 1 == 0]
            cells = [
                f"{gap:+.3f} ± {se:.3f}",
                first["gap_shifts"],
                ", ".join(f"{r['shift']:g}: {r['equivariance']:.3f}" for r in on),
                ", ".join(f"{r['shift']:g}: {r['equivariance']:.3f}" for r in half),
            ]
        null = sum(r["equivariance_null"] for r in mine) / len(mine)
        lines.append(f"| {layer} ({stride}) | {positions} | " + " | ".join(cells) + f" | {null:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--foolbox", type=Path, help="foolbox-3.3.4-py3-none-any.whl (the photographs)")
    parser.add_argument(
        "--sweep", nargs="+", default=SWEEP, help="the shift sweep of every layer, pixels (specs joined into one)"
    )
    parser.add_argument("--whole-sweep", default="shift:0:8:1", help=f"the sweep of {WHOLE} with its whole map")
    parser.add_argument("--crops", type=int, default=3, help="crops per photograph (22 photographs)")
    parser.add_argument("--size", type=int, default=64, help="side of the probe images")
    parser.add_argument("--groups", type=int, default=11, help="jackknife groups (must divide 22)")
    parser.add_argument("--batch-size", type=int, default=66)
    parser.add_argument("--max-positions", type=int, default=256, help="larger maps keep this many positions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="redraw the table and figure from the CSV")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.out / "ref_mobilenet_aliasing.csv"
    if args.table_only:
        rows = read_rows(path)
    else:
        if args.foolbox is None:
            parser.error("--foolbox is needed to score (or --table-only)")
        build = Build(seeds={"crops": 0, "probe_order": 0})
        rows = score(args)
        write_rows(rows, path)
        rows = read_rows(path)  # the figure and table from the file, as --table-only draws them
    figure_of(rows).savefig(args.out / "ref_mobilenet_aliasing.png", dpi=100)
    if not args.table_only:
        build.record(args.out, ["ref_mobilenet_aliasing.csv", "ref_mobilenet_aliasing.png"])
    print(markdown(rows))
    print(f"\n{path}, {args.out / 'ref_mobilenet_aliasing.png'}")


if __name__ == "__main__":
    main()
