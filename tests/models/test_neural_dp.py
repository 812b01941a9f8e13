"""User-level DP-SGD for neural: the account agrees with Google's, clipping bounds a user,
a private fit keeps its budget and round-trips, and the CLI passes the flags on."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import RdpAccountant

from ebbtide.errors import ConfigError
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.base import Model
from ebbtide.models.dp_sgd import UserLevelDPSGD, noise_multiplier, spent_epsilon
from ebbtide.models.neural import NeuralConfig, NeuralModel, _batch, _batch_loss, _chunks
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

SYNTH = SynthConfig(users=80, days=4.0, categories=6, items_per_category=6, seed=11)
CUT = SYNTH.start + timedelta(days=SYNTH.days)
TINY = {
    "epochs": 1,
    "item_epochs": 1,
    "hidden": 16,
    "embedding": 8,
    "rank": 4,
    "max_len": 50,
    "context_len": 50,
    "item_max_len": 50,
}
PRIVATE = {**TINY, "dp_epsilon": 3.0, "dp_users_per_step": 20, "dp_epochs": 1, "dp_item_epochs": 1}
DAY = timedelta(days=1)
CPU = torch.device("cpu")


def _reference_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    """ε of `steps` Poisson-sampled Gaussian steps by Google's dp_accounting RDP."""
    accountant = RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


@pytest.fixture(scope="module")
def synth_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dp")
    write_taobao_csv(generate(SYNTH), root / "synth.csv")
    with EventStore(root / "synth.duckdb") as store:
        ingest_file(store, root / "synth.csv", "taobao")
    return root / "synth.duckdb"


@pytest.fixture(scope="module")
def private(synth_db: Path) -> NeuralModel:
    """A private fit: 4 + 4 steps of about 20 users (a few seconds on 2 cores)."""
    with EventStore(synth_db, read_only=True) as store:
        return NeuralModel(NeuralConfig(**PRIVATE)).fit(store, cutoff=CUT)


# -- accounting ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("q", "sigma", "steps"), [(0.05, 1.1, 200), (0.25, 2.0, 40), (0.01, 0.8, 3000)]
)
def test_the_account_matches_dp_accounting(q: float, sigma: float, steps: int) -> None:
    """Our engine's ε after `steps` steps is Google's RDP accountant's within 2% (both
    bound the same sampled Gaussian mechanism; they differ in the Rényi orders tried)."""
    delta = 1e-5
    reference = _reference_epsilon(q, sigma, steps, delta)
    assert spent_epsilon(sigma, q, steps, delta) == pytest.approx(reference, rel=0.02)
    if steps <= 200:  # the engine itself, stepping with nobody sampled (noise only)
        users = np.arange(round(1 / q) * 10)
        engine = UserLevelDPSGD(users, users_per_step=10, max_grad_norm=1.0, noise=sigma,
                                target_epsilon=10.0, delta=delta)  # fmt: skip
        weight = torch.nn.Parameter(torch.zeros(3))
        for _ in range(steps):
            engine.private_gradient([weight], users[:0], lambda u: None)
        assert engine.sample_rate == pytest.approx(q)
        assert engine.guarantee().epsilon == pytest.approx(reference, rel=0.02)
        assert engine.guarantee().steps == steps


@pytest.mark.parametrize(("target", "q", "steps"), [(1.0, 0.02, 500), (8.0, 0.08, 1650)])
def test_the_noise_chosen_for_a_target_spends_at_most_it(target, q, steps) -> None:
    sigma = noise_multiplier(target, 1e-5, q, steps)
    spent = _reference_epsilon(q, sigma, steps, 1e-5)
    assert spent_epsilon(sigma, q, steps, 1e-5) <= target
    assert 0.9 * target <= spent <= 1.02 * target  # not much more noise than needed


# -- clipping --------------------------------------------------------------------------
def test_clipping_bounds_one_users_influence_on_the_update(private: NeuralModel, synth_db):
    """Noise off: one user whose loss is multiplied a thousandfold (as if their events
    were repeated) moves the update by at most 2C / (q n), and alone gives exactly C / (q n)."""
    model = private
    with EventStore(synth_db, read_only=True) as store:
        history = snapshot(store, at=CUT)
    events = model._warped(model.catalogue_.localise(history).events)
    t_end = float(model.cycle.warp(CUT.timestamp() / 86_400))
    cfg = model.config
    seq = model._sequences(events, t_end)
    chunks = _chunks(events.offsets, cfg.max_len, False, cfg.context_len)
    plain = model._user_loss(model.net_, seq, chunks, events.offsets, CPU, None, None, 0.0)
    users = np.flatnonzero(events.lengths() > 0)
    victim = int(users[np.argmax(events.lengths()[users])])

    def heavy(u: int):
        loss = plain(u)
        return loss * 1000.0 if u == victim else loss

    params = [p for p in model.net_.parameters() if p.requires_grad]
    c = 0.5

    def update(loss_of, who) -> torch.Tensor:
        engine = UserLevelDPSGD(users, users_per_step=20, max_grad_norm=c, noise=0.0,
                                target_epsilon=1.0, delta=1e-5)  # fmt: skip
        engine.private_gradient(params, who, loss_of)
        return torch.cat([p.grad.flatten() for p in params]), engine.expected_batch

    alone, batch = update(heavy, np.array([victim]))
    assert float(alone.norm()) == pytest.approx(c / batch, rel=1e-4)
    sample = users[:20]
    with_victim, _ = update(heavy, np.append(sample, victim))
    without, _ = update(plain, sample)
    assert float((with_victim - without).norm()) <= c / batch * (1 + 1e-5)
    everyone, _ = update(heavy, users)
    assert float(everyone.norm()) <= users.size * c / batch * (1 + 1e-5)


# -- a private fit ---------------------------------------------------------------------
def test_a_private_fit_keeps_its_budget_and_takes_nothing_else(private: NeuralModel) -> None:
    guarantee = private.metrics_["privacy"]
    assert guarantee["unit"] == "user" and guarantee["accountant"] == "rdp (opacus)"
    assert 0 < guarantee["epsilon"] <= guarantee["target_epsilon"] == 3.0
    n_users = 78  # of the 80, those with events before the cut-off
    assert guarantee["sample_rate"] == pytest.approx(20 / n_users)
    assert guarantee["steps"] == 2 * math.ceil(n_users / 20)  # one epoch of each phase
    assert guarantee["delta"] == pytest.approx(min(1e-5, 1 / (10 * n_users)))
    assert guarantee["noise_multiplier"] > 0.5
    # nothing read off the data outside the noisy gradients
    assert private.cycle.daily_amplitude == 0.0
    assert np.allclose(private.level_share_, 1.0 / private.level_share_.size)
    assert np.isnan(private.half_life_intervals_).all()
    assert float(private.validation_days_) == 0.0
    assert list(private.return_calibration_) == [1.0, 0.0, 0.0, 1.0]
    assert float(private.next_item_.explore_bias.detach().abs().max()) > 0  # learned, from 0
    assert private.catalogue_.user_ids.size == 0  # who trained is not written down


def test_a_private_model_saves_its_guarantee_and_answers(private, synth_db, tmp_path) -> None:
    private.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["metrics"]["privacy"] == private.metrics_["privacy"]
    assert saved["config"]["dp_epsilon"] == 3.0
    loaded = Model.load(tmp_path / "m")
    with EventStore(synth_db, read_only=True) as store:
        history = snapshot(store, at=CUT + timedelta(hours=6))
    p_return = loaded.p_return(history, horizon=DAY)["p_return"]
    assert np.allclose(p_return, private.p_return(history, horizon=DAY)["p_return"])
    p_buy = loaded.p_buy(history, horizon=DAY)["p_buy"]
    top = loaded.recommend(history, k=3)
    assert p_return.between(0, 1).all() and np.isfinite(p_return).all()
    assert p_buy.between(0, 1).all() and np.isfinite(p_buy).all()
    assert np.isfinite(top.score).all() and len(top) == 3 * p_return.size


def test_an_ordinary_fit_has_no_privacy_entry(synth_db: Path) -> None:
    with EventStore(synth_db, read_only=True) as store:
        model = NeuralModel(NeuralConfig(**TINY, item_patience=0)).fit(store, cutoff=CUT)
    assert "privacy" not in model.metrics_


def test_per_user_nll_splits_the_training_loss_by_user(private, synth_db) -> None:
    """Summed over users, it is the loss of all chunks scored in one batch; each user's
    intervals are their events."""
    with EventStore(synth_db, read_only=True) as store:
        history = snapshot(store, at=CUT)
    table = private.per_user_nll(history)
    columns = ["user_id", "nll", "event_nll", "intervals", "nll_per_interval"]
    assert list(table.columns) == columns
    events = private.catalogue_.localise(history).events
    assert table.intervals.sum() == events.n_events and (table.intervals > 0).all()
    assert np.isfinite(table.nll).all()
    assert np.allclose(table.nll_per_interval, table.nll / table.intervals)
    warped = private._warped(events)
    cfg = private.config
    seq = private._sequences(warped, float(private.cycle.warp(CUT.timestamp() / 86_400)))
    reads, starts, ends = _chunks(warped.offsets, cfg.max_len, False, cfg.context_len)
    with torch.no_grad():
        batch = _batch(seq, reads, ends, CPU, starts)
        whole, n = _batch_loss(private.net_, batch, cfg.item_weight, cfg.item_chunk)
        no_items, _ = _batch_loss(private.net_, batch, 0.0, cfg.item_chunk)
    assert n == events.n_events
    assert table.nll.sum() == pytest.approx(float(whole), rel=1e-4)
    assert table.event_nll.sum() == pytest.approx(float(no_items), rel=1e-4)
    assert (table.event_nll < table.nll).all()
    two = private.per_user_nll(history, users=list(table.user_id[:2]))
    assert np.allclose(two.nll, table.nll[:2], rtol=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dp_epsilon": 0.0}, "dp_epsilon=0.0 must be a finite number > 0"),
        ({"dp_epsilon": math.inf}, "dp_epsilon=inf must be a finite number > 0"),
        ({"dp_epsilon": 1.0, "dp_delta": 1.0}, "dp_delta=1.0 must be in (0, 1)"),
        ({"dp_delta": 1e-6}, "set dp_epsilon too"),
        ({"dp_max_grad_norm": 0.0}, "dp_max_grad_norm=0.0 must be a finite number > 0"),
        ({"dp_users_per_step": 0}, "dp_users_per_step=0 must be an integer >= 1"),
        ({"dp_epsilon": 1.0, "validation_days": 1.0}, "leave validation_days out"),
    ],
)
def test_privacy_settings_are_checked(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NeuralConfig(**settings)


# -- the command line ------------------------------------------------------------------
def test_train_dp_epsilon_prints_the_guarantee(cli, synth_db: Path, tmp_path: Path) -> None:
    """Default epochs under a 2-second budget per phase: the stop spends less than planned."""
    result = cli.ok(
        "train", "--db", str(synth_db), "--model", "neural", "--out-dir", str(tmp_path / "m"),
        "--cutoff", CUT.isoformat(), "--dp-epsilon", "8", "--dp-delta", "1e-6",
        "--max-seconds", "2", "--quiet",
    )  # fmt: skip
    text = " ".join(result.stdout.split())
    assert "privacy" in text and "-DP, unit: one user's whole history" in text
    saved = json.loads((tmp_path / "m" / "config.json").read_text())["metrics"]["privacy"]
    assert saved["delta"] == 1e-6 and saved["epsilon"] <= 8.0
    assert f"ε = {saved['epsilon']:.3g}, δ = 1e-06" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--model", "decay", "--dp-epsilon", "8"), "--dp-epsilon applies to the neural model"),
        (("--model", "gbdt", "--dp-delta", "1e-6"), "--dp-delta applies to the neural model"),
        (("--model", "neural", "--dp-delta", "1e-6"), "give --dp-epsilon too"),
        (("--model", "neural", "--dp-epsilon", "8", "--nproc", "2"), "leave out --nproc"),
    ],
)
def test_train_refuses_dp_flags_where_they_do_not_apply(cli, synth_db, tmp_path, extra, message):
    result = cli("train", "--db", str(synth_db), "--out-dir", str(tmp_path / "x"), *extra)
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())


def test_the_noise_and_the_sample_are_not_seeded_by_the_fit() -> None:
    """A known seed would let anyone redraw the noise and subtract it: two engines made
    alike draw different samples and different noise."""
    users = np.arange(200)

    def draw() -> tuple[np.ndarray, torch.Tensor]:
        engine = UserLevelDPSGD(users, users_per_step=50, max_grad_norm=1.0, noise=1.0,
                                target_epsilon=1.0, delta=1e-5)  # fmt: skip
        weight = torch.nn.Parameter(torch.zeros(8))
        engine.private_gradient([weight], users[:0], lambda u: None)
        return engine.sample(), weight.grad.clone()

    (first, noise_a), (second, noise_b) = draw(), draw()
    assert not np.array_equal(first, second)
    assert not torch.equal(noise_a, noise_b)
