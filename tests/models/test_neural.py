"""The neural family: exact likelihood, finite on odd gaps, round-trips, beats chance."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.integrate import quad
from sklearn.metrics import roc_auc_score

from ebbtide.errors import ConfigError
from ebbtide.evaluate import engagement_labels, purchase_labels
from ebbtide.features.history import snapshot
from ebbtide.features.sequences import EventArrays
from ebbtide.ingest import ingest_file
from ebbtide.models.base import Model
from ebbtide.models.neural import (
    NeuralConfig,
    NeuralModel,
    _sequences,
    compensator,
    intensity,
    point_process_nll,
)
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)  # 2017-12-02 00:00 China time
DAY = timedelta(days=1)
FAST = {
    "epochs": 2,
    "item_negatives": 512,
    "max_train_seconds": 40.0,
    "hidden": 32,
    "item_epochs": 2,
}


@pytest.fixture(scope="module")
def model(taobao: EventStore) -> NeuralModel:
    start = time.monotonic()
    fitted = NeuralModel(NeuralConfig(**FAST)).fit(taobao, cutoff=CUT)
    fitted.fit_seconds = time.monotonic() - start
    return fitted


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory):
    """Three users with same-instant events and a 1000-day silence."""
    base = int(CUT.timestamp()) - 2 * 86_400
    rows = [
        ("1", "10", "100", "pv", base),
        ("1", "11", "100", "pv", base),  # duplicate timestamp
        ("1", "11", "100", "buy", base),
        ("1", "12", "101", "pv", base + 3600),
        ("2", "10", "100", "pv", base - 1000 * 86_400),
        ("2", "13", "102", "cart", base),  # after a 1000-day gap
        ("2", "13", "102", "buy", base + 60),
        ("3", "12", "101", "pv", base + 86_400 + 7200),
        ("3", "12", "101", "fav", base + 86_400 + 7200),
        ("3", "14", "102", "pv", base + 86_400 + 9000),
    ]
    path = tmp_path_factory.mktemp("odd") / "odd.csv"
    path.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    with EventStore(path.with_suffix(".duckdb")) as store:
        ingest_file(store, path, "taobao")
        yield store


def _hand_nll(mu, alpha, delta, gaps, marks, tau0=None) -> float:
    """NLL of a marked exponential-kernel process, written out with `math`."""
    total = 0.0
    for i, (tau, mark) in enumerate(zip(gaps, marks, strict=True)):
        start = 0.0 if tau0 is None else tau0[i]
        for c in range(len(mu[i])):
            m, a, d = mu[i][c], alpha[i][c], delta[i][c]

            def big_lambda(x: float, m=m, a=a, d=d) -> float:
                return m * x + a / d * (1.0 - math.exp(-d * x))

            total += big_lambda(tau) - big_lambda(start)
        if mark >= 0:
            m, a, d = mu[i][mark], alpha[i][mark], delta[i][mark]
            total -= math.log(m + a * math.exp(-d * tau))
    return total


def test_loss_equals_hand_computed_nll() -> None:
    # One user: c0 at 0, c1 at 0.5, no category at 0.5 (same instant), c0 at 2; end at 3.
    t = np.array([0.0, 0.5, 0.5, 2.0])
    events = EventArrays(
        user_idx=np.zeros(4, dtype=np.int32),
        item_idx=np.array([0, 1, 2, 0], dtype=np.int32),
        category_idx=np.array([0, 1, -1, 0], dtype=np.int32),
        behavior=np.array([0, 0, 3, 0], dtype=np.int8),
        t=t,
        offsets=np.array([0, 4]),
        n_users=1,
        n_items=3,
        n_categories=2,
        before=CUT,
    )
    share = np.array([0.5, 0.3, 0.2])  # c0, c1, no category
    seq = _sequences(events, 3, 2, t_end=3.0, share=share, prior_days=1.0)
    np.testing.assert_allclose(seq.tau, [0.5, 0.0, 1.5, 1.0])
    # long-run level of the next event's mark: (its events before the end + share) / (time
    # seen + 1 day), one number per pair over the whole period
    np.testing.assert_allclose(seq.level_mark[:3], [1.3 / 4.0, 1.2 / 4.0, 2.5 / 4.0])
    np.testing.assert_allclose(seq.level_total, [5.0 / 4.0] * 4)
    np.testing.assert_array_equal(seq.mark, [1, -1, 0, -1])  # no-category mark, survival
    np.testing.assert_array_equal(seq.next_buy, [False, True, False, False])
    mu = [[0.3, 0.1], [0.2, 0.4], [0.05, 0.6], [0.5, 0.5]]
    alpha = [[1.0, 2.0], [0.0, 3.0], [4.0, 0.1], [0.2, 0.3]]
    delta = [[2.0, 1.0], [0.5, 5.0], [1.0, 1e-3], [3.0, 0.7]]
    got = point_process_nll(
        *(torch.tensor(x, dtype=torch.float64) for x in (mu, alpha, delta)),
        torch.as_tensor(seq.tau),
        torch.as_tensor(seq.mark),
    ).sum()
    assert float(got) == pytest.approx(_hand_nll(mu, alpha, delta, seq.tau, seq.mark), rel=1e-12)

    # Validation scoring from t = 1.0: only intervals ending at or after it, from it on.
    val = _sequences(events, 3, 2, t_end=3.0, t_start=1.0, share=share, prior_days=1.0)
    np.testing.assert_array_equal(val.weight, [False, False, True, True])
    # scored from t = 1.0: the level counts only the events before it, over one day seen
    np.testing.assert_allclose(val.level_mark[2], (1 + 0.5) / 2.0)
    np.testing.assert_allclose(val.tau0, [0.5, 0.0, 0.5, 0.0])
    rows = np.flatnonzero(val.weight)
    got = point_process_nll(
        *(torch.tensor(x, dtype=torch.float64)[rows] for x in (mu, alpha, delta)),
        torch.as_tensor(val.tau[rows]),
        torch.as_tensor(val.mark[rows]),
        torch.as_tensor(val.tau0[rows]),
    ).sum()
    want = _hand_nll(
        [mu[i] for i in rows],
        [alpha[i] for i in rows],
        [delta[i] for i in rows],
        val.tau[rows],
        val.mark[rows],
        val.tau0[rows],
    )
    assert float(got) == pytest.approx(want, rel=1e-12)


def test_compensator_integrates_the_intensity() -> None:
    m, a, d = (torch.tensor(x, dtype=torch.float64) for x in (0.3, 2.0, 1.7))

    def f64(x: float) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float64)

    for tau in (0.0, 0.01, 1.0, 40.0):
        numeric = quad(lambda x: float(intensity(m, a, d, f64(x))), 0.0, tau)[0]
        assert float(compensator(m, a, d, f64(tau))) == pytest.approx(numeric, rel=1e-9)


def test_likelihood_is_finite_on_zero_and_huge_gaps() -> None:
    n = 4
    raw = torch.tensor([[-30.0, 0.0, 30.0]] * n, requires_grad=True)
    mu = torch.nn.functional.softplus(raw)
    alpha = torch.nn.functional.softplus(raw.flip(1))
    delta = torch.nn.functional.softplus(raw) + 1e-3
    tau = torch.tensor([0.0, 1e-9, 1000.0, 1e6])
    nll = point_process_nll(mu, alpha, delta, tau, torch.tensor([0, 1, 2, -1]))
    nll.sum().backward()
    assert torch.isfinite(nll).all()
    assert torch.isfinite(raw.grad).all()


def test_odd_sequences_train_and_answer_finite(odd: EventStore) -> None:
    cfg = NeuralConfig(
        epochs=3, item_epochs=1, hidden=8, embedding=4, rank=2, validation_days=0.5, seed=3
    )
    model = NeuralModel(cfg).fit(odd, cutoff=CUT)
    assert math.isfinite(model.metrics_["train_nll_per_interval"])
    assert math.isfinite(model.metrics_["validation_nll_per_interval"])
    users = ["1", "2", "3"]
    for at in (CUT, CUT + timedelta(days=1000)):
        frames = [
            model.p_return(snapshot(odd, at=at), users, horizon=DAY),
            model.p_buy(snapshot(odd, at=at), users, horizon=DAY),
            model.expected_return_time(snapshot(odd, at=at), users),
            model.interest(snapshot(odd, at=at), users, horizon=DAY),
        ]
        for frame in frames:
            values = frame.select_dtypes("number").to_numpy()
            assert np.isfinite(values).all()
        assert frames[0].p_return.between(0, 1).all()
        assert frames[2].expected_return_days.between(0, 365).all()
        assert (frames[3].half_life_days > 0).all()
    recs = model.recommend(snapshot(odd, at=CUT), users, k=2)
    assert np.isfinite(recs.score).all()
    bought = {("1", "11"), ("2", "13")}
    assert not bought & set(zip(recs.user_id, recs.item_id, strict=True))
    # Same seed, same numbers.
    again = NeuralModel(cfg).fit(odd, cutoff=CUT)
    pd.testing.assert_frame_equal(
        again.interest(snapshot(odd, at=CUT), users, horizon=DAY),
        model.interest(snapshot(odd, at=CUT), users, horizon=DAY),
    )


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError):
        NeuralConfig(hidden=0)
    with pytest.raises(ConfigError):
        NeuralConfig(lr=-1.0)
    with pytest.raises(ConfigError):
        NeuralConfig(device="tpu")
    with pytest.raises(ConfigError):
        NeuralConfig(validation_days=math.inf)
    with pytest.raises(ConfigError, match="or None for the automatic window"):
        NeuralConfig(validation_days=-1.0)
    assert NeuralConfig().validation_days is None  # automatic: scales with the log
    with pytest.raises(ConfigError, match="'auto', '32', 'bf16', 'fp16'"):
        NeuralConfig(precision="16")
    with pytest.raises(ConfigError, match="needs device='cuda'"):
        NeuralConfig(precision="fp16")


def test_category_reengagement_and_purchase_beat_chance(taobao: EventStore, model: NeuralModel):
    interest = model.interest(snapshot(taobao, at=CUT), horizon=DAY)
    assert len(interest) == 15_930  # every (user, category) touched before the cut
    engaged = engagement_labels(taobao, interest, at=CUT, horizon=DAY)
    engage_auc = roc_auc_score(engaged, interest.p_engage)
    p_buy = model.p_buy(snapshot(taobao, at=CUT), horizon=DAY)
    bought = purchase_labels(taobao, p_buy.user_id, at=CUT, horizon=DAY)
    buy_auc = roc_auc_score(bought, p_buy.p_buy)
    print(
        f"neural: engage AUC {engage_auc:.3f}, buy AUC {buy_auc:.3f},"
        f" fit {model.fit_seconds:.1f} s, {model.metrics_}"
    )
    assert engage_auc > 0.6
    assert buy_auc > 0.5


def test_save_load_gives_identical_answers(
    taobao: EventStore, model: NeuralModel, tmp_path: Path
) -> None:
    users = ["1", "100", "1000"]
    loaded = Model.load(model.save(tmp_path / "m"))
    assert type(loaded) is NeuralModel
    pd.testing.assert_frame_equal(
        loaded.interest(snapshot(taobao, at=CUT), users, horizon=DAY),
        model.interest(snapshot(taobao, at=CUT), users, horizon=DAY),
    )
    pd.testing.assert_frame_equal(
        loaded.p_buy(snapshot(taobao, at=CUT), users, horizon=DAY),
        model.p_buy(snapshot(taobao, at=CUT), users, horizon=DAY),
    )
    pd.testing.assert_frame_equal(  # the calibration of P(return) is saved too
        loaded.p_return(snapshot(taobao, at=CUT), users, horizon=DAY),
        model.p_return(snapshot(taobao, at=CUT), users, horizon=DAY),
    )
    np.testing.assert_array_equal(loaded.return_calibration_, model.return_calibration_)
    pd.testing.assert_frame_equal(
        loaded.recommend(snapshot(taobao, at=CUT), users, k=5),
        model.recommend(snapshot(taobao, at=CUT), users, k=5),
    )
    pd.testing.assert_frame_equal(
        loaded.expected_return_time(snapshot(taobao, at=CUT), users),
        model.expected_return_time(snapshot(taobao, at=CUT), users),
    )


def test_resuming_from_a_checkpoint_equals_one_uninterrupted_run(
    odd: EventStore, tmp_path: Path
) -> None:
    settings = {"hidden": 8, "embedding": 4, "rank": 2, "validation_days": 0.5, "seed": 5}
    settings["patience"] = 10
    straight = NeuralModel(NeuralConfig(epochs=4, **settings)).fit(odd, cutoff=CUT)
    checkpoint = tmp_path / "checkpoint.pt"
    NeuralModel(NeuralConfig(epochs=2, **settings)).fit(odd, cutoff=CUT, checkpoint=checkpoint)
    resumed = NeuralModel(NeuralConfig(epochs=4, **settings)).fit(
        odd, cutoff=CUT, checkpoint=checkpoint, resume=True
    )
    assert resumed.metrics_["epochs"] == straight.metrics_["epochs"] == 4
    for name, value in straight.net_.state_dict().items():
        torch.testing.assert_close(resumed.net_.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="other data"):
        NeuralModel(NeuralConfig(epochs=4, **{**settings, "seed": 6})).fit(
            odd, cutoff=CUT, checkpoint=checkpoint, resume=True
        )


def test_progress_reports_loss_speed_and_eta(odd: EventStore) -> None:
    seen: list[tuple[str, float]] = []
    cfg = NeuralConfig(epochs=2, item_epochs=1, hidden=8, embedding=4, rank=2, validation_days=0.5)
    NeuralModel(cfg).fit(odd, cutoff=CUT, progress=lambda m, f: seen.append((m, f)))
    assert seen and all(0.0 < f <= 1.0 for _, f in seen)
    assert seen[-1][1] == pytest.approx(1.0)
    point_process = [m for m, _ in seen if not m.startswith("next items")]
    assert point_process and all(
        ("loss" in m and "events/s" in m and "ETA" in m) for m in point_process
    )
    assert any("NDCG@10" in m for m, _ in seen[len(point_process) :])


def test_bf16_autocast_training_gives_the_float32_metrics(tmp_path: Path) -> None:
    """A CPU fit with ``precision="bf16"`` runs its training steps under autocast (the
    network's linear layers answer in bfloat16) and ends where float32 does.

    Tolerances: on this log, fits with seeds 0-2 in float32 spread by 0.05 in validation
    NLL per interval and 0.03 in window AUC (the noise a user sees), while bf16 moved them
    by at most 2e-4 and 6e-4 (2026-12-02). Bounds a tenth of the seed spread pass bf16's
    rounding and fail a training step that goes wrong (a lost gradient, a likelihood
    computed in bf16 whose log and exp lose the small gaps).
    """
    cfg = SynthConfig(users=60, days=5.0, categories=10, items_per_category=10, seed=3)
    path = tmp_path / "synth.csv"
    write_taobao_csv(generate(cfg), path)
    settings = {"epochs": 2, "item_epochs": 2, "hidden": 16, "embedding": 8, "rank": 4}
    seen: dict[int, set] = {}

    def record(module, args, output):
        if isinstance(output, torch.Tensor) and torch.is_autocast_enabled("cpu"):
            seen.setdefault(id(module), set()).add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        with EventStore(tmp_path / "synth.duckdb") as store:
            ingest_file(store, path, "taobao")
            cut = cfg.start + timedelta(days=cfg.days)
            full = NeuralModel(NeuralConfig(precision="32", **settings)).fit(store, cutoff=cut)
            assert not seen  # float32: no autocast region at all
            half = NeuralModel(NeuralConfig(precision="bf16", **settings)).fit(store, cutoff=cut)
    finally:
        handle.remove()
    assert (full.metrics_["precision"], half.metrics_["precision"]) == ("float32", "bfloat16")
    assert seen.get(id(half.net_.rates)) == {torch.bfloat16}  # the point process's step
    assert seen.get(id(half.next_item_.gate)) == {torch.bfloat16}  # the next-item head's
    a, b = full.metrics_, half.metrics_
    assert b["validation_nll_per_interval"] == pytest.approx(
        a["validation_nll_per_interval"], abs=5e-3
    )
    assert b["validation_window_1_minus_auc"] == pytest.approx(
        a["validation_window_1_minus_auc"], abs=3e-3
    )
    assert b["next_item_validation_ndcg@10"] == pytest.approx(
        a["next_item_validation_ndcg@10"], abs=0.02
    )
    keys = ("validation_nll_per_interval", "validation_window_1_minus_auc", "train_seconds")
    print({k: (a[k], b[k]) for k in (*keys, "next_item_validation_ndcg@10")})
