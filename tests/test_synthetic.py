"""``seis-lightning synthetic``: the paper's Figure 1 analog on the embedded digits."""

from __future__ import annotations

import csv

import pytest

from seis_lightning.synthetic import main


def test_synthetic_writes_table_chart_and_numbers(tmp_path, capsys):
    results = main(["--num-images", "256", "--output", str(tmp_path / "bars.png"), "--csv", str(tmp_path / "n.csv")])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["case", "B"]
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
    rows = {row["case"]: row for row in csv.DictReader((tmp_path / "n.csv").open())}
    assert list(rows) == ["identity", "rot90", "roll3", "rotate30", "channel_mixing", "noise", "shuffled"]
    for name, result in results.items():
        assert float(rows[name]["equivariance"]) == pytest.approx(result["equivariance"], abs=1e-6)
    assert float(rows["identity"]["invariance"]) >= 0.999
    assert float(rows["rot90"]["equivariance"]) >= 0.95 and float(rows["rot90"]["invariance"]) <= 0.3
    assert float(rows["channel_mixing"]["channel_invariance"]) >= 0.99


def test_synthetic_rejects_too_many_images(capsys):
    with pytest.raises(SystemExit):
        main(["--num-images", "5000"])
    assert "between 2 and 1797" in capsys.readouterr().err


def test_synthetic_on_mnist_files(tmp_path, capsys):
    from tests.test_data import write_mnist

    write_mnist(tmp_path, num_train=10, num_test=64)
    args = ["--data", "mnist", "--root", str(tmp_path), "--num-images", "64", "--output", str(tmp_path / "bars.png")]
    results = main(args)
    assert results["identity"]["invariance"] == pytest.approx(1.0, abs=1e-6)
    assert results["rot90"]["equivariance"] >= 0.95 and results["channel_mixing"]["channel_invariance"] >= 0.99
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        main(["--data", "mnist", "--root", str(tmp_path / "none"), "--output", str(tmp_path / "b.png")])
