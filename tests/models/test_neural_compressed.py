"""Compressed scoring of neural: ONNX and int8 answer what float32 answers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.errors import ConfigError
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.base import Model
from ebbtide.models.neural import NeuralConfig, NeuralModel
from ebbtide.models.neural_compressed import ONNX_FILE
from ebbtide.models.scoring import build_model
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

SYNTH = SynthConfig(users=40, days=5.0, categories=8, items_per_category=8, seed=5)
CUT = SYNTH.start + timedelta(days=SYNTH.days)
SMALL = {"epochs": 1, "item_epochs": 1, "hidden": 16, "embedding": 8, "rank": 4}
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a small store (``synth.duckdb``) and a tiny neural model fitted on
    it (``model/``; about 5 s on 2 cores)."""
    root = tmp_path_factory.mktemp("compressed")
    path = root / "synth.csv"
    write_taobao_csv(generate(SYNTH), path)
    with EventStore(root / "synth.duckdb") as store:
        ingest_file(store, path, "taobao")
        NeuralModel(NeuralConfig(**SMALL)).fit(store, cutoff=CUT).save(root / "model")
    return root


def _answers(model: Model, root: Path) -> dict[str, np.ndarray]:
    with EventStore(root / "synth.duckdb", read_only=True) as store:
        history = snapshot(store, at=CUT + timedelta(hours=6))
    interest = model.interest(history, horizon=DAY)
    return {
        "p_return": model.p_return(history, horizon=DAY)["p_return"].to_numpy(),
        "p_buy": model.p_buy(history, horizon=DAY)["p_buy"].to_numpy(),
        "p_engage": interest["p_engage"].to_numpy(),
        "half_life_days": interest["half_life_days"].to_numpy(),
        "days": model.expected_return_time(history)["expected_return_days"].to_numpy(),
    }


def _fresh(root: Path, name: str) -> NeuralModel:
    """A copy of the saved model in its own folder (each test writes its own model.onnx)."""
    import shutil

    folder = root / name
    shutil.copytree(root / "model", folder, dirs_exist_ok=True)
    return Model.load(folder)


def test_onnx_gives_the_float32_answers(fitted) -> None:
    """The ONNX graph is the float network's last-event row: same answers to float32
    rounding (1e-4), and the model folder holds model.onnx afterwards."""
    root = fitted
    model = _fresh(root, "onnx")
    reference = _answers(model, root)
    model.compress("onnx", directory=root / "onnx", threads=1)
    assert model.runtime == "onnx" and (root / "onnx" / ONNX_FILE).stat().st_size > 1000
    answers = _answers(model, root)
    for name, expected in reference.items():
        assert expected.size > 10
        np.testing.assert_allclose(answers[name], expected, rtol=1e-4, atol=1e-4, err_msg=name)
    assert np.ptp(reference["p_return"]) > 0.01  # the check compares varied numbers


def test_int8_is_close_to_float32(fitted) -> None:
    """int8 weights move each probability by well under 0.05 on this model (measured
    max 0.004 on 2026-12-02), and keep the ranking: a broken quantised layer (wrong
    scale, lost state) moves them by tenths and scrambles the order."""
    root = fitted
    model = _fresh(root, "int8")
    reference = _answers(model, root)
    model.compress("int8")
    answers = _answers(model, root)
    for name in ("p_return", "p_buy", "p_engage"):
        np.testing.assert_allclose(answers[name], reference[name], atol=0.05, err_msg=name)
        rho = pd.Series(answers[name]).corr(pd.Series(reference[name]), method="spearman")
        assert rho > 0.95, name
    model.compress("torch")  # back to the training network: the exact answers again
    np.testing.assert_array_equal(_answers(model, root)["p_return"], reference["p_return"])


def test_exported_file_round_trips_through_save_and_load(fitted) -> None:
    """model.onnx written beside a saved model is read back by a loaded copy (not
    exported again), and a model saved again afterwards gets a fresh export."""
    root = fitted
    first = _fresh(root, "round")
    first.compress("onnx", directory=root / "round")
    onnx_path = root / "round" / ONNX_FILE
    written = onnx_path.stat().st_mtime_ns
    expected = _answers(first, root)
    loaded = Model.load(root / "round").compress("onnx", directory=root / "round")
    assert onnx_path.stat().st_mtime_ns == written  # read, not exported again
    np.testing.assert_allclose(_answers(loaded, root)["p_buy"], expected["p_buy"], rtol=1e-6)
    loaded.save(root / "round")  # network.pt now newer than model.onnx
    Model.load(root / "round").compress("onnx", directory=root / "round")
    assert onnx_path.stat().st_mtime_ns > written


def test_unknown_runtime_and_threads_are_refused(fitted) -> None:
    root = fitted
    model = _fresh(root, "refuse")
    with pytest.raises(ConfigError, match="use one of torch, int8, onnx"):
        model.compress("tensorrt")
    with pytest.raises(ConfigError, match="threads=0"):
        model.compress("onnx", threads=0)


def test_score_runtime_onnx_through_the_cli(cli, fitted, tmp_path: Path) -> None:
    """`ebbtide score --runtime onnx` writes the float answers and model.onnx; a model
    other than neural is refused with the way out."""
    root = fitted
    db = root / "synth.duckdb"
    folder = root / "cli"
    _fresh(root, "cli")
    at = (CUT + timedelta(hours=6)).isoformat()
    base = ["score", "--db", str(db), "--model-dir", str(folder), "--at", at]
    cli.ok(*base, "--out", str(tmp_path / "float.csv"))
    cli.ok(*base, "--runtime", "onnx", "--threads", "1", "--out", str(tmp_path / "onnx.csv"))
    assert (folder / ONNX_FILE).exists()
    float_scores = pd.read_csv(tmp_path / "float.csv")
    onnx_scores = pd.read_csv(tmp_path / "onnx.csv")
    assert list(onnx_scores.user_id) == list(float_scores.user_id)
    for column in ("p_return", "p_buy", "expected_return_days"):
        np.testing.assert_allclose(onnx_scores[column], float_scores[column], rtol=1e-4)

    popular = tmp_path / "popular"
    with EventStore(db, read_only=True) as store:
        build_model("popular").fit(store, cutoff=CUT).save(popular)
    refused = cli("score", "--db", str(db), "--model-dir", str(popular), "--at", at,
                  "--runtime", "onnx", "--out", str(tmp_path / "p.csv"))  # fmt: skip
    assert refused.exit_code == 1
    assert "--runtime applies to the neural model only, not 'popular'" in refused.output
