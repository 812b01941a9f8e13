"""`neural`: a time-aware GRU whose state drives a marked temporal point process.

A GRU reads each user's events (item, category and behaviour embeddings plus
``log1p(gap in hours)`` and a same-instant flag). After event i its state ``h_i`` gives, for
every category c, the intensity of the next event at elapsed time τ::

    λ_c(τ) = μ_c + α_c · exp(−δ_c τ),   Λ_c(τ) = μ_c τ + α_c / δ_c · (1 − e^{−δ_c τ})

``μ, α, δ = softplus(q_k(h_i) · K_k[c] + b_k[c] + w_k log1p(n_ic))`` for k ∈ {μ, α, δ}: a
low-rank bilinear form between the state and a category key, a per-category bias, and a
copy term on ``n_ic``, the user's events in c among the (at most `max_len`) events the GRU
read, so that touched categories are easy to excite. ``δ ≥ 1e-3`` per day.

Training minimises the exact negative log-likelihood of each user's sequence: for every
next event (gap τ, category c) ``−log λ_c(τ) + Σ_c Λ_c(τ)`` (events without a category keep
only the compensator), the survival term ``Σ_c Λ_c(T_end − t_last)`` from the last event to
the end of observation, the item choice ``−log softmax(q(h, e_c) · E_items)`` (tied item
embeddings, full softmax computed in chunks) and a buy process: a second intensity
``λ_b(τ) = μ_b + α_b e^{−δ_b τ}`` from h, trained with the same likelihood restricted to buy
events (every interval contributes its compensator, buys their log-intensity).

The last `validation_days` before the cut-off are held out: the network trains on events
before ``cutoff − validation_days``, the validation NLL scores the window's events given
their history, the best state is kept, and training stops after `patience` epochs without
improvement, after `epochs`, or after `max_train_seconds`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ebbtide.errors import ConfigError
from ebbtide.features.sequences import EventArrays
from ebbtide.models.base import Model, Progress
from ebbtide.schema import Behavior

DELTA_MIN = 1e-3  # per day
_KEY = np.int64(2**31)
_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 365.0, 400)])  # days, for return time
_BUY = Behavior.BUY.code
_LOG_FLOOR = 1e-12


@dataclass(frozen=True, slots=True, kw_only=True)
class NeuralConfig:
    """Parameters of `NeuralModel`.

    hidden, embedding, rank : int
        GRU state size, item/category embedding size, rank of the category heads.
    max_len : int
        Events per training chunk and the history length read at query time.
    epochs, batch_size, lr, weight_decay : training settings (Adam, chunks per batch).
    seed : int
        Seeds initialisation and shuffling: a seed gives identical results when training
        stops on `epochs` or `patience` (a wall-clock stop depends on the machine).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    max_train_seconds : float
        Wall-clock training budget.
    validation_days : float
        Held-out window before the cut-off for early stopping (0: train on all, no stop).
    patience : int
        Epochs without validation improvement before stopping.
    item_weight : float
        Weight of the item-choice log-likelihood in the loss.
    item_chunk : int
        Positions per chunk of the full item softmax.
    item_negatives : int
        0: train the item head with the exact full softmax. n > 0: a sampled softmax over
        the batch's target items plus n shared uniformly drawn items (much faster on CPU
        with many items); the validation NLL always uses the full softmax.
    recommend_categories : int
        Categories (most intense first) mixed by `recommend`.
    """

    hidden: int = 64
    embedding: int = 32
    rank: int = 16
    max_len: int = 128
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-6
    seed: int = 0
    device: str = "cpu"
    max_train_seconds: float = 150.0
    validation_days: float = 1.0
    patience: int = 2
    item_weight: float = 1.0
    item_chunk: int = 1024
    item_negatives: int = 0
    recommend_categories: int = 8

    def __post_init__(self) -> None:
        for name in (
            "hidden",
            "embedding",
            "rank",
            "max_len",
            "epochs",
            "batch_size",
            "item_chunk",
            "recommend_categories",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"NeuralConfig.{name}={value!r} must be an integer >= 1")
        if not isinstance(self.item_negatives, int) or self.item_negatives < 0:
            raise ConfigError(
                f"NeuralConfig.item_negatives={self.item_negatives!r} must be an integer >= 0"
            )
        if not isinstance(self.patience, int) or self.patience < 0:
            raise ConfigError(f"NeuralConfig.patience={self.patience!r} must be an integer >= 0")
        if not isinstance(self.seed, int):
            raise ConfigError(f"NeuralConfig.seed={self.seed!r} must be an integer")
        for name, low, strict in (
            ("lr", 0.0, True),
            ("weight_decay", 0.0, False),
            ("max_train_seconds", 0.0, True),
            ("validation_days", 0.0, False),
            ("item_weight", 0.0, False),
        ):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and math.isfinite(value)
            ok = ok and (value > low if strict else value >= low)
            if not ok:
                sign = ">" if strict else ">="
                raise ConfigError(f"NeuralConfig.{name}={value!r} must be a finite number {sign} 0")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"NeuralConfig.device={self.device!r}: use 'cpu' or 'cuda[:N]'")


# -- the point-process maths -----------------------------------------------------------
def intensity(mu: torch.Tensor, alpha: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor):
    """``λ(τ) = μ + α e^{−δτ}`` (per day), τ clamped at 0."""
    return mu + alpha * torch.exp(-delta * tau.clamp_min(0.0))


def compensator(mu: torch.Tensor, alpha: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor):
    """``Λ(τ) = ∫_0^τ λ = μτ + α/δ (1 − e^{−δτ})``, τ clamped at 0."""
    tau = tau.clamp_min(0.0)
    return mu * tau - alpha * torch.expm1(-delta * tau) / delta


def increment(
    mu: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    tau0: torch.Tensor,
    tau: torch.Tensor,
) -> torch.Tensor:
    """``Λ(τ) − Λ(τ0) = μ(τ − τ0) + α/δ e^{−δτ0} (1 − e^{−δ(τ − τ0)})`` for ``τ ≥ τ0 ≥ 0``."""
    tau0 = tau0.clamp_min(0.0)
    span = (tau - tau0).clamp_min(0.0)
    return mu * span - alpha * torch.exp(-delta * tau0) * torch.expm1(-delta * span) / delta


def point_process_nll(
    mu: torch.Tensor,
    alpha: torch.Tensor,
    delta: torch.Tensor,
    tau: torch.Tensor,
    mark: torch.Tensor,
    tau0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-interval NLL ``Σ_c (Λ_c(τ) − Λ_c(τ0)) − log λ_mark(τ)`` of a marked process.

    mu, alpha, delta : (N, C) parameters after each event; tau : (N,) time to the next
    event (or to the end of observation); mark : (N,) category of the next event, -1 for
    none (survival, or an event without a category: compensator only); tau0 : (N,) start
    of the scored part of the interval (default 0).
    """
    if tau0 is None:
        tau0 = torch.zeros_like(tau)
    comp = increment(mu, alpha, delta, tau0[:, None], tau[:, None]).sum(-1)
    has = mark >= 0
    idx = mark.clamp_min(0)[:, None]
    lam = intensity(
        mu.gather(1, idx)[:, 0], alpha.gather(1, idx)[:, 0], delta.gather(1, idx)[:, 0], tau
    )
    log_lam = torch.log(lam.clamp_min(_LOG_FLOOR))
    return comp - torch.where(has, log_lam, torch.zeros_like(log_lam))


def _inv_softplus(y: np.ndarray) -> np.ndarray:
    y = np.maximum(y, 1e-12)
    return y + np.log(-np.expm1(-y))


# -- the network -----------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self, n_items: int, n_categories: int, cfg: NeuralConfig) -> None:
        super().__init__()
        e, h, r = cfg.embedding, cfg.hidden, cfg.rank
        self.n_categories = n_categories
        self.item = nn.Embedding(n_items + 1, e)  # 0: padding / unknown item
        self.category = nn.Embedding(n_categories + 1, e)  # 0: no / unknown category
        self.behavior = nn.Embedding(len(Behavior), 8)
        self.gru = nn.GRU(2 * e + 8 + 2, h, batch_first=True)
        self.query = nn.Linear(h, 3 * r)
        self.keys = nn.Parameter(torch.randn(3, n_categories, r) * 0.1)
        self.bias = nn.Parameter(torch.zeros(3, n_categories))
        self.copy_weight = nn.Parameter(torch.tensor([1.0, 1.0, 0.0]))
        self.buy = nn.Linear(h + len(Behavior) + 1, 3)
        self.item_query = nn.Linear(h + e, e)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.normal_(self.category.weight, std=0.1)
        nn.init.normal_(self.query.weight, std=0.01)
        nn.init.zeros_(self.query.bias)

    def states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """States (B, L, H + 5) and per-position log1p category counts (B, L, C).

        The state is the GRU's, followed by log1p counts of each behaviour and of all
        events read so far (inputs of the buy head).
        """
        x = torch.cat(
            [
                self.item(batch["item"]),
                self.category(batch["cat"]),
                self.behavior(batch["beh"]),
                batch["gap"],
            ],
            dim=-1,
        )
        h, _ = self.gru(x)
        b, length = batch["cat"].shape
        counts = torch.zeros(b, length, self.n_categories + 1, device=h.device)
        counts.scatter_(2, batch["cat"][:, :, None], 1.0)
        counts = torch.log1p(counts.cumsum(1)[:, :, 1:])
        valid = batch["valid"][:, :, None].float()
        beh = F.one_hot(batch["beh"], len(Behavior)).float() * valid
        beh = torch.log1p(torch.cat([beh, valid], -1).cumsum(1))
        return torch.cat([h, beh], -1), counts

    def params(self, h: torch.Tensor, log_counts: torch.Tensor):
        """μ, α, δ (N, C) from states (N, H) and log1p counts (N, C)."""
        q = self.query(h[:, : self.gru.hidden_size]).view(h.shape[0], 3, -1)
        raw = torch.einsum("nkr,kcr->knc", q, self.keys) + self.bias[:, None, :]
        raw = raw + self.copy_weight[:, None, None] * log_counts[None]
        out = F.softplus(raw)
        return out[0], out[1], out[2] + DELTA_MIN

    def buy_params(self, h: torch.Tensor):
        out = F.softplus(self.buy(h))
        return out[:, 0], out[:, 1], out[:, 2] + DELTA_MIN

    def item_vector(self, h: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Item query (N, E) from states (N, H + 5) and category inputs (N,) (0 = none)."""
        return self.item_query(torch.cat([h[:, : self.gru.hidden_size], self.category(cat)], -1))

    def item_logits(self, h: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        """Item logits (N, n_items) over every fitted item."""
        return self.item_vector(h, cat) @ self.item.weight[1:].T + self.item_bias


# -- sequences and batches -------------------------------------------------------------
def _ranges(offsets: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event indices of `users` (in order) and, per index, the position of its user."""
    starts, ends = offsets[users], offsets[users + 1]
    lengths = ends - starts
    q = np.repeat(np.arange(users.size, dtype=np.int64), lengths)
    first = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return first + np.arange(q.size, dtype=np.int64), q


def _chunks(offsets: np.ndarray, max_len: int, last_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) event ranges cut from the end of each user's run, at most max_len long."""
    lo, hi = offsets[:-1], offsets[1:]
    n = hi - lo
    k = np.where(n > 0, 1 if last_only else -(-n // max_len), 0)
    user = np.repeat(np.arange(n.size), k)
    j = np.arange(user.size) - np.repeat(np.cumsum(k) - k, k)
    end = hi[user] - j * max_len
    start = np.maximum(lo[user], end - max_len)
    return start.astype(np.int64), end.astype(np.int64)


@dataclass
class _Sequences:
    """Per-event inputs and next-event targets of a set of `EventArrays`."""

    item: np.ndarray  # input ids (+1, 0 = unknown)
    cat: np.ndarray  # input ids (+1, 0 = none / unknown)
    beh: np.ndarray
    gap: np.ndarray  # (n, 2): log1p(gap hours), same-instant flag
    tau: np.ndarray  # days to the next event, or to the end of observation
    tau0: np.ndarray  # start of the scored part of the interval
    mark: np.ndarray  # next event's category (fitted range), -1 none / survival
    next_item: np.ndarray  # next event's item (fitted range), -1 none / survival
    next_cat: np.ndarray  # next event's category input id (+1, 0 none)
    next_buy: np.ndarray  # next event is a buy
    weight: np.ndarray  # interval is scored


def _sequences(
    events: EventArrays,
    n_items: int,
    n_categories: int,
    t_end: float,
    t_start: float | None = None,
) -> _Sequences:
    t = events.t
    n = t.size
    first = np.zeros(n, dtype=bool)
    first[events.offsets[:-1][events.lengths() > 0]] = True
    last = np.zeros(n, dtype=bool)
    last[events.offsets[1:][events.lengths() > 0] - 1] = True
    gap = np.zeros(n)
    if n:
        gap[1:] = np.where(first[1:], 0.0, np.maximum(t[1:] - t[:-1], 0.0))
    gap_feat = np.stack([np.log1p(gap * 24.0), (gap <= 0) & ~first], axis=1).astype(np.float32)
    item = np.where(events.item_idx < n_items, events.item_idx.astype(np.int64) + 1, 0)
    cat_raw = events.category_idx.astype(np.int64)
    known_cat = (cat_raw >= 0) & (cat_raw < n_categories)
    cat = np.where(known_cat, cat_raw + 1, 0)
    nxt = np.minimum(np.arange(n) + 1, max(n - 1, 0))
    t_next = np.where(last, t_end, t[nxt] if n else t)
    tau = np.maximum(t_next - t, 0.0)
    mark = np.where(last | ~known_cat[nxt], -1, cat_raw[nxt]) if n else cat_raw
    next_item = np.where(last | (item[nxt] == 0), -1, item[nxt] - 1) if n else item
    next_cat = np.where(last, 0, cat[nxt]) if n else cat
    next_buy = (~last & (events.behavior[nxt] == _BUY)) if n else last
    if t_start is None:
        tau0 = np.zeros(n)
        weight = np.ones(n, dtype=bool)
    else:
        tau0 = np.clip(t_start - t, 0.0, tau)
        weight = t_next >= t_start
    return _Sequences(
        item=item,
        cat=cat,
        beh=events.behavior.astype(np.int64),
        gap=gap_feat,
        tau=tau,
        tau0=tau0,
        mark=mark,
        next_item=next_item,
        next_cat=next_cat,
        next_buy=next_buy,
        weight=weight,
    )


def _batch(
    seq: _Sequences, start: np.ndarray, end: np.ndarray, device: torch.device
) -> dict[str, torch.Tensor]:
    length = int((end - start).max())
    idx = start[:, None] + np.arange(length)
    valid = idx < end[:, None]
    idx = np.where(valid, idx, start[:, None])

    def tensor(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(values, dtype=dtype, device=device)

    out = {
        "item": tensor(np.where(valid, seq.item[idx], 0), torch.long),
        "cat": tensor(np.where(valid, seq.cat[idx], 0), torch.long),
        "beh": tensor(seq.beh[idx], torch.long),
        "gap": tensor(seq.gap[idx] * valid[:, :, None], torch.float32),
        "valid": tensor(valid, torch.bool),
        "last": tensor(end - start - 1, torch.long),
    }
    flat = idx[valid]  # row-major: matches h[valid]
    out["flat"] = tensor(flat, torch.long)
    for name in ("tau", "tau0"):
        out[name] = tensor(getattr(seq, name)[flat], torch.float32)
    for name in ("mark", "next_item", "next_cat"):
        out[name] = tensor(getattr(seq, name)[flat], torch.long)
    out["next_buy"] = tensor(seq.next_buy[flat], torch.bool)
    out["weight"] = tensor(seq.weight[flat], torch.bool)
    return out


def _batch_loss(
    net: _Net,
    batch: dict[str, torch.Tensor],
    item_weight: float,
    item_chunk: int,
    negatives: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed NLL of the scored intervals of a batch, and how many there are.

    `negatives` (item ids) switches the item term to a sampled softmax over the batch's
    targets plus those items; None uses the exact full softmax.
    """
    h, counts = net.states(batch)
    valid = batch["valid"]
    keep = batch["weight"]
    hv, cv = h[valid][keep], counts[valid][keep]
    if hv.shape[0] == 0:
        return h.sum() * 0.0, 0
    tau, tau0 = batch["tau"][keep], batch["tau0"][keep]
    mu, alpha, delta = net.params(hv, cv)
    loss = point_process_nll(mu, alpha, delta, tau, batch["mark"][keep], tau0).sum()
    mb, ab, db = net.buy_params(hv)
    buy = torch.where(batch["next_buy"][keep], 0, -1)
    loss = loss + point_process_nll(mb[:, None], ab[:, None], db[:, None], tau, buy, tau0).sum()
    if item_weight > 0:
        target = batch["next_item"][keep]
        has = torch.nonzero(target >= 0)[:, 0]
        if negatives is not None and has.numel():
            cand = torch.unique(torch.cat([target[has], negatives]))
            q = net.item_vector(hv[has], batch["next_cat"][keep][has])
            logits = q @ net.item.weight[cand + 1].T + net.item_bias[cand]
            ce = F.cross_entropy(logits, torch.searchsorted(cand, target[has]), reduction="sum")
            return loss + item_weight * ce, int(hv.shape[0])
        for lo in range(0, int(has.numel()), item_chunk):
            rows = has[lo : lo + item_chunk]
            logits = net.item_logits(hv[rows], batch["next_cat"][keep][rows])
            ce = F.cross_entropy(logits, target[rows], reduction="sum")
            loss = loss + item_weight * ce
    return loss, int(hv.shape[0])


class NeuralModel(Model):
    """GRU-driven marked point process: category interest, return, purchase, items."""

    name = "neural"
    config_class = NeuralConfig
    state_attributes = ("n_items_", "n_categories_")

    # -- fitting -----------------------------------------------------------------------
    def _device(self) -> torch.device:
        device = torch.device(self.config.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"NeuralConfig.device={self.config.device!r}: no CUDA device here")
        return device

    def _fit(self, events: EventArrays, progress: Progress | None) -> None:
        cfg = self.config
        device = self._device()
        clock = time.monotonic()
        t_end = self.cutoff_.timestamp() / 86_400
        n_items, n_cat = events.n_items, max(events.n_categories, 1)
        self.n_items_, self.n_categories_ = np.asarray(n_items), np.asarray(n_cat)
        t_train = t_end - cfg.validation_days
        train = events.select(events.t < t_train) if cfg.validation_days > 0 else events
        if train.n_events == 0:
            train, t_train = events, t_end
        has_val = t_train < t_end  # survival through the window is scored too

        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        net = _Net(n_items, n_cat, cfg)
        self._init_biases(net, train, t_train)
        net.to(device)
        self.net_ = net
        optimiser = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        seq = _sequences(train, n_items, n_cat, t_train)
        starts, ends = _chunks(train.offsets, cfg.max_len, last_only=False)
        if has_val:
            val_seq = _sequences(events, n_items, n_cat, t_end, t_start=t_train)
            val_starts, val_ends = _chunks(events.offsets, cfg.max_len, last_only=True)

        best, best_state, stale, epoch, stop = math.inf, None, 0, 0, "epochs"
        train_nll = math.nan
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            order = torch.randperm(starts.size, generator=generator).numpy()
            total, count = 0.0, 0
            for lo in range(0, order.size, cfg.batch_size):
                rows = order[lo : lo + cfg.batch_size]
                batch = _batch(seq, starts[rows], ends[rows], device)
                negatives = None
                if cfg.item_negatives:
                    negatives = torch.randint(
                        n_items, (cfg.item_negatives,), generator=generator
                    ).to(device)
                loss, n = _batch_loss(net, batch, cfg.item_weight, cfg.item_chunk, negatives)
                if n == 0:
                    continue
                optimiser.zero_grad()
                (loss / n).backward()
                nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                optimiser.step()
                total, count = total + float(loss.detach()), count + n
                if time.monotonic() - clock > cfg.max_train_seconds:
                    stop = "time"
                    break
            train_nll = total / max(count, 1)
            if has_val:
                val = self._validation_nll(net, val_seq, val_starts, val_ends, device)
                if val < best:
                    best, best_state, stale = val, copy.deepcopy(net.state_dict()), 0
                else:
                    stale += 1
            if progress is not None:
                progress(f"neural epoch {epoch}", best if has_val else train_nll)
            if stop == "time":
                break
            if has_val and stale > cfg.patience:
                stop = "patience"
                break
            if time.monotonic() - clock > cfg.max_train_seconds:
                stop = "time"
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.metrics_ = {
            "epochs": epoch,
            "stopped_by": stop,
            "train_nll_per_interval": train_nll,
            "validation_nll_per_interval": best if has_val else None,
            "train_seconds": time.monotonic() - clock,
            "events": int(events.n_events),
        }

    def _init_biases(self, net: _Net, events: EventArrays, t_end: float) -> None:
        """Start μ_c, α_c near the category's share of a typical user's event rate."""
        n_cat = net.n_categories
        cat = events.category_idx[events.category_idx >= 0]
        share = (np.bincount(cat, minlength=n_cat)[:n_cat] + 0.1) / (cat.size + 0.1 * n_cat)
        active = events.lengths() > 0
        first = events.t[events.offsets[:-1][active]] if events.n_events else np.zeros(1)
        span = max(float(np.median(t_end - first)) if first.size else 1.0, 1e-3)
        rate = events.n_events / max(int(active.sum()), 1) / span
        delta0 = 24.0  # one-hour time constant of the excitation
        with torch.no_grad():
            net.bias[0] = torch.as_tensor(_inv_softplus(0.2 * rate * share), dtype=torch.float32)
            net.bias[1] = torch.as_tensor(_inv_softplus(0.5 * delta0 * share), dtype=torch.float32)
            net.bias[2] = float(_inv_softplus(np.asarray(delta0)))
            net.buy.bias[:] = torch.as_tensor(
                _inv_softplus(np.asarray([0.02 * rate, 0.5, delta0])), dtype=torch.float32
            )

    def _validation_nll(
        self,
        net: _Net,
        seq: _Sequences,
        starts: np.ndarray,
        ends: np.ndarray,
        device: torch.device,
    ) -> float:
        net.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for lo in range(0, starts.size, self.config.batch_size):
                batch = _batch(
                    seq,
                    starts[lo : lo + self.config.batch_size],
                    ends[lo : lo + self.config.batch_size],
                    device,
                )
                loss, n = _batch_loss(net, batch, self.config.item_weight, self.config.item_chunk)
                total, count = total + float(loss.detach()), count + n
        return total / max(count, 1)

    # -- persistence -------------------------------------------------------------------
    def _save_extra(self, directory: Path) -> None:
        torch.save(self.net_.state_dict(), directory / "network.pt")

    def _load_extra(self, directory: Path) -> None:
        net = _Net(int(self.n_items_), int(self.n_categories_), self.config)
        state = torch.load(directory / "network.pt", map_location=self._device(), weights_only=True)
        net.load_state_dict(state)
        net.to(self._device())
        net.eval()
        self.net_ = net

    # -- shared query machinery --------------------------------------------------------
    def _query(self, events: EventArrays, users: np.ndarray, at: float, chunk: int = 64):
        """Per queried user: last GRU state and μ, α, δ (U, C), buy params, τ = at − t_last.

        Users without events get the zero state, no counts and τ = 0.
        """
        net, device = self.net_, self._device()
        n_items, n_cat = int(self.n_items_), int(self.n_categories_)
        sub_offsets = np.concatenate([[0], np.cumsum(events.lengths()[users])])
        idx, _ = _ranges(events.offsets, users)
        sub = EventArrays(
            user_idx=np.repeat(np.arange(users.size), np.diff(sub_offsets)).astype(np.int32),
            item_idx=events.item_idx[idx],
            category_idx=events.category_idx[idx],
            behavior=events.behavior[idx],
            t=events.t[idx],
            offsets=sub_offsets.astype(np.int64),
            n_users=int(users.size),
            n_items=events.n_items,
            n_categories=events.n_categories,
            before=events.before,
        )
        seq = _sequences(sub, n_items, n_cat, at)
        lengths = sub.lengths()
        has = lengths > 0
        ends = sub_offsets[1:]
        starts = np.maximum(sub_offsets[:-1], ends - self.config.max_len)
        out = {
            "h": np.zeros((users.size, self.config.hidden + len(Behavior) + 1), dtype=np.float32),
            "mu": np.zeros((users.size, n_cat)),
            "alpha": np.zeros((users.size, n_cat)),
            "delta": np.ones((users.size, n_cat)),
            "buy": np.zeros((users.size, 3)),
        }
        with torch.no_grad():
            for lo in range(0, users.size, chunk):
                rows = np.arange(lo, min(lo + chunk, users.size))
                live = rows[has[rows]]
                h = torch.zeros(rows.size, self.config.hidden + len(Behavior) + 1, device=device)
                counts = torch.zeros(rows.size, n_cat, device=device)
                if live.size:
                    batch = _batch(seq, starts[live], ends[live], device)
                    states, log_counts = net.states(batch)
                    pick = torch.arange(live.size, device=device)
                    where = torch.as_tensor(live - lo, device=device)
                    h[where] = states[pick, batch["last"]]
                    counts[where] = log_counts[pick, batch["last"]]
                mu, alpha, delta = net.params(h, counts)
                mb, ab, db = net.buy_params(h)
                out["h"][rows] = h.cpu().numpy()
                out["mu"][rows] = mu.double().cpu().numpy()
                out["alpha"][rows] = alpha.double().cpu().numpy()
                out["delta"][rows] = delta.double().cpu().numpy()
                out["buy"][rows] = torch.stack([mb, ab, db], 1).double().cpu().numpy()
        t_last = np.where(has, sub.t[np.maximum(ends - 1, 0)] if sub.t.size else 0.0, at)
        out["tau"] = np.maximum(at - t_last, 0.0)
        return out

    @staticmethod
    def _increment(mu, alpha, delta, tau, horizon):
        """``Λ(τ + H) − Λ(τ)`` elementwise (numpy), τ broadcast over the last axis."""
        return mu * horizon - alpha * np.exp(-delta * tau) * np.expm1(-delta * horizon) / delta

    # -- queries -----------------------------------------------------------------------
    def _interest(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> dict[str, np.ndarray]:
        """p_engage = 1 − exp(−(Λ_c(τ+H) − Λ_c(τ))) per (user, touched category).

        Categories first seen after the fit have no parameters and are left out.
        """
        p = self._query(events, users, at)
        idx, q = _ranges(events.offsets, users)
        cat = events.category_idx[idx].astype(np.int64)
        keep = (cat >= 0) & (cat < int(self.n_categories_))
        keys = np.unique(q[keep] * _KEY + cat[keep])
        pq, pc = keys // _KEY, keys % _KEY
        mu, alpha, delta = p["mu"][pq, pc], p["alpha"][pq, pc], p["delta"][pq, pc]
        tau = p["tau"][pq]
        p_engage = -np.expm1(-self._increment(mu, alpha, delta, tau, horizon))
        excitation = alpha * np.exp(-delta * tau)
        order = np.lexsort((pc, -p_engage, pq))
        return {
            "user_idx": users[pq[order]],
            "category_idx": pc[order],
            "p_engage": p_engage[order],
            "level": (mu + excitation)[order],
            "baseline": mu[order],
            "excitation": excitation[order],
            "half_life_days": (math.log(2.0) / delta)[order],
        }

    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        """``1 − exp(−Σ_c (Λ_c(τ+H) − Λ_c(τ)))`` over all categories."""
        p = self._query(events, users, at)
        inc = self._increment(p["mu"], p["alpha"], p["delta"], p["tau"][:, None], horizon)
        return -np.expm1(-inc.sum(1))

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        """``1 − exp(−(Λ_b(τ+H) − Λ_b(τ)))`` of the buy intensity head."""
        p = self._query(events, users, at)
        b = p["buy"]
        inc = self._increment(b[:, 0], b[:, 1], b[:, 2], p["tau"], horizon)
        return -np.expm1(-inc)

    def _expected_return_days(
        self, events: EventArrays, users: np.ndarray, at: float
    ) -> np.ndarray:
        """``∫_0^365 exp(−Σ_c (Λ_c(τ+s) − Λ_c(τ))) ds``: trapezoid rule on a log grid."""
        p = self._query(events, users, at)
        rate = p["mu"].sum(1)
        excitation = p["alpha"] * np.exp(-p["delta"] * p["tau"][:, None])
        cum = rate[:, None] * _GRID
        for s in range(0, p["delta"].shape[1], 256):
            d, e = p["delta"][:, s : s + 256], excitation[:, s : s + 256]
            jump = -np.expm1(-d[:, :, None] * _GRID) / d[:, :, None]
            cum = cum + np.einsum("uc,ucg->ug", e, jump)
        return np.trapezoid(np.exp(-cum), _GRID, axis=1)

    def _recommend(
        self, events: EventArrays, users: np.ndarray, at: float, k: int, exclude_bought: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """``score_i = Σ_c p(c | h) p(i | h, c)``, p(c | h) ∝ λ_c(τ) over the top categories.

        The mixture keeps the `recommend_categories` most intense categories (renormalised);
        items bought before `at` are left out when asked.
        """
        p = self._query(events, users, at)
        net, device = self.net_, self._device()
        n_items = int(self.n_items_)
        k = min(k, n_items)
        lam = p["mu"] + p["alpha"] * np.exp(-p["delta"] * p["tau"][:, None])
        m = min(self.config.recommend_categories, lam.shape[1])
        top = np.argsort(-lam, axis=1, kind="stable")[:, :m]
        weight = np.take_along_axis(lam, top, 1)
        weight = weight / np.maximum(weight.sum(1, keepdims=True), 1e-300)
        idx, q = _ranges(events.offsets, users)
        buy = (events.behavior[idx] == _BUY) & (events.item_idx[idx] < n_items)
        items_out = np.empty((users.size, k), dtype=np.int64)
        scores_out = np.empty((users.size, k))
        with torch.no_grad():
            for lo in range(0, users.size, 16):
                hi = min(lo + 16, users.size)
                h = torch.as_tensor(p["h"][lo:hi], device=device)
                cats = torch.as_tensor(top[lo:hi] + 1, device=device)
                hh = h[:, None, :].expand(-1, m, -1).reshape(-1, h.shape[1])
                prob = torch.softmax(net.item_logits(hh, cats.reshape(-1)).double(), -1)
                w = torch.as_tensor(weight[lo:hi], device=device)
                score = (prob.view(hi - lo, m, -1) * w[:, :, None]).sum(1)
                if exclude_bought:
                    sel = buy & (q >= lo) & (q < hi)
                    rows = torch.as_tensor(q[sel] - lo, device=device)
                    cols = torch.as_tensor(
                        events.item_idx[idx][sel].astype(np.int64), device=device
                    )
                    score[rows, cols] = -math.inf
                val, item = torch.topk(score, k, dim=1)
                items_out[lo:hi] = item.cpu().numpy()
                scores_out[lo:hi] = val.cpu().numpy()
        return items_out, scores_out
