"""Which item comes next: repeat something the user touched, or explore the catalogue.

`neural` answers "what will this user take next" with a head of its own. The point
process above it models *when* and *in which category*; an item choice trained into the same
state lost to a plain recency list on logs where most next events are repeats (Taobao:
two in three), and to RecBole's GRU4Rec where nothing repeats (MovieLens).

The head is RepeatNet's mixture (Ren et al., AAAI 2019) with time in it::

    p(i) = g · p_repeat(i) + (1 − g) · p_explore(i)

* ``p_repeat`` points at the user's recent events ``j``: the weight of each is
  ``exp(a_b(j) + log k(Δt_j) − γ·(steps back) + q·e_item(j))``, with a two-rate decay
  kernel ``k(Δt) = w e^{−δ₁Δt} + (1 − w) e^{−δ₂Δt}`` over the time from the event to the
  moment of the prediction, so interest in what the user touched decays as it does in
  `decay`; an item touched several times collects the weight of each touch.
* ``p_explore`` is a full softmax over the items *not* in that window (tied embeddings).
* the gate ``g`` and both queries read a GRU state and the time since the last event.

The log decides the mix: where users never come back to an item, ``g`` learns to be about
0 and the head recommends unseen items only; where they do, it ranks their own history by
recency, frequency and behaviour. Training is full-softmax cross-entropy on every next
event of sliding windows; each user's last event before the cut-off is held out, and the
epoch whose NDCG@10 on those events is best is kept (early stopping).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ebbtide.features.sequences import EventArrays, user_event_ranges
from ebbtide.metrics_core import ndcg_at_k
from ebbtide.models.base import Progress

if TYPE_CHECKING:
    from ebbtide.models.dp_sgd import UserLevelDPSGD
from ebbtide.schema import ITEM_BEHAVIORS

__all__ = ["NextItemNet", "NextItemSettings", "fit_next_item", "score_next_items"]

_N_BEH = len(ITEM_BEHAVIORS)
_MASKED = -1e4  # a log-weight that is zero after exp, without the NaN gradients of -inf
_VALID_K = 10


@dataclass(frozen=True, slots=True)
class NextItemSettings:
    """What `fit_next_item` needs (taken from `NeuralConfig`'s ``item_*`` fields)."""

    hidden: int
    max_len: int
    epochs: int
    patience: int
    max_seconds: float
    dropout: float
    lr: float
    batch_size: int
    item_chunk: int
    seed: int
    negatives: int = 0  # uniformly drawn items of a sampled explore softmax; 0: full softmax
    autocast: torch.dtype | None = None  # training steps' autocast type (neural.amp_dtype)


class NextItemNet(nn.Module):
    """The mixture above; `n_items` fitted items (id + 1 in the embedding, 0 = padding).

    An item's vector is its own embedding plus its category's, so items of a category the
    user is into share the evidence (sparse logs have few events per item).
    """

    def __init__(self, n_items: int, n_categories: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.n_items = n_items
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.category = nn.Embedding(n_categories + 1, hidden, padding_idx=0)
        self.register_buffer("item_category", torch.zeros(n_items + 1, dtype=torch.long))
        self.behavior = nn.Embedding(_N_BEH, hidden)
        self.gap = nn.Linear(2, hidden)  # log1p(hours since the previous event), same-instant
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.when = nn.Linear(2, hidden)  # log1p(hours from the last event to the prediction)
        self.drop = nn.Dropout(dropout)
        self.explore_bias = nn.Parameter(torch.zeros(n_items))
        self.repeat_query = nn.Linear(hidden, hidden)
        self.repeat_behavior = nn.Parameter(torch.zeros(_N_BEH))
        # two decay rates per day (1-hour and 1-week half-lives to start) and their mix
        self.log_delta = nn.Parameter(torch.log(torch.tensor([24.0, 1.0 / 7.0]) * math.log(2.0)))
        self.kernel_mix = nn.Parameter(torch.zeros(()))
        self.step_decay = nn.Parameter(torch.tensor(-2.0))  # γ = softplus(.)
        self.gate = nn.Linear(hidden, 1)
        for table in (self.item, self.category):
            nn.init.normal_(table.weight, std=0.05)
            with torch.no_grad():
                table.weight[0] = 0.0

    def item_vectors(self) -> torch.Tensor:
        """(n_items + 1, H): item plus category embedding; row 0 (padding) is zero."""
        return self.item.weight + self.category(self.item_category)

    def states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """GRU states (B, L, H): position i has read events up to and including i."""
        x = self.item_vectors()[batch["item"]] + self.behavior(batch["beh"])
        x = x + self.gap(batch["gap"])
        return self.gru(self.drop(x))[0].float()  # float32 also under autocast

    def query(self, h: torch.Tensor, lead: torch.Tensor) -> torch.Tensor:
        """The states that choose (…, H): GRU state plus the time to the prediction."""
        hours = torch.log1p(lead.clamp_min(0.0) * 24.0)
        return self.drop(h + self.when(torch.stack([hours, lead <= 0], -1).float()))

    def repeat_logits(self, s: torch.Tensor, batch: dict, t_pred: torch.Tensor) -> torch.Tensor:
        """Log-weights (B, L, L) of window event j for the choice after position i.

        s : (B, L, H) queries; t_pred : (B, L) the instant each position predicts for
        (days since the window's start). Unreadable pairs (j > i, padding) are masked.
        """
        j = torch.arange(s.shape[1], device=s.device)
        steps = (j[:, None] - j[None, :]).clamp_min(0).float()  # i − j
        age = (t_pred[:, :, None] - batch["t"][:, None, :]).clamp_min(0.0)
        delta = torch.exp(self.log_delta)
        w = torch.sigmoid(self.kernel_mix)
        kernel = torch.logaddexp(torch.log(w) - delta[0] * age, torch.log1p(-w) - delta[1] * age)
        keys = self.item_vectors()[batch["item"]]  # (B, L, H)
        affinity = (self.repeat_query(s) @ keys.transpose(1, 2)).float() / math.sqrt(s.shape[-1])
        logits = affinity + kernel + self.repeat_behavior[batch["beh"]][:, None, :]
        logits = logits - F.softplus(self.step_decay) * steps
        return torch.where(_readable(batch), logits, torch.full_like(logits, _MASKED))

    def explore_logits(
        self,
        s: torch.Tensor,
        items: torch.Tensor,
        mask: torch.Tensor,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (N, n_items) over the catalogue, or (N, K) over sorted `candidates`
        (item ids), with the window's readable items masked out."""
        if candidates is None:
            logits = (s @ self.item_vectors()[1:].T).float() + self.explore_bias
            col = items - 1
        else:
            logits = (s @ self.item_vectors()[candidates + 1].T).float()
            logits = logits + self.explore_bias[candidates]
            col = torch.searchsorted(candidates, items - 1).clamp_max(candidates.numel() - 1)
            mask = mask & (candidates[col] == items - 1)
        logits = F.pad(logits, (0, 1))  # a spare column takes the unreadable positions
        cols = torch.where(mask & (items > 0), col, logits.shape[1] - 1)
        return logits.scatter(1, cols, _MASKED)[:, :-1]

    def log_gate(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.gate(s)[:, 0].float()
        return F.logsigmoid(z), F.logsigmoid(-z)


# -- data ------------------------------------------------------------------------------
@dataclass
class _Inputs:
    """Per-event model inputs of one `EventArrays`."""

    item: np.ndarray  # id + 1 (0 = not a fitted item)
    beh: np.ndarray
    gap: np.ndarray  # (n, 2)
    t: np.ndarray  # days


def _inputs(events: EventArrays, n_items: int) -> _Inputs:
    known = (events.item_idx >= 0) & (events.item_idx < n_items)
    item = np.where(known, events.item_idx.astype(np.int64) + 1, 0)
    beh = events.behavior.astype(np.int64)
    return _Inputs(item=item, beh=beh, gap=events.gap_features(), t=events.t)


def _windows(offsets: np.ndarray, length: int) -> tuple[np.ndarray, ...]:
    """Training windows ``[start, end)`` and the first scored position of each.

    Windows of `length` events overlap by half; each scores the positions it adds (the
    first window of a user scores all of them), so a next event is predicted once, from
    at least ``length / 2`` events of context where the user has them.
    """
    lo, hi = offsets[:-1], offsets[1:]
    n = hi - lo
    stride = max(length // 2, 1)
    count = np.where(n >= 2, 1 + np.maximum(0, -(-(n - 1 - length) // stride)), 0)
    user = np.repeat(np.arange(n.size), count)
    k = np.arange(user.size) - np.repeat(np.cumsum(count) - count, count)
    start = lo[user] + k * stride
    end = np.minimum(start + length, hi[user])
    first_scored = np.where(k == 0, start, start + length - stride)
    return start, end, first_scored, hi[user]


def _pad(inputs: _Inputs, start: np.ndarray, end: np.ndarray, device: torch.device) -> dict:
    """(B, L) tensors of the ranges, left-aligned; times relative to each range's start."""
    length = int((end - start).max())
    idx = start[:, None] + np.arange(length)
    valid = idx < end[:, None]
    idx = np.where(valid, idx, start[:, None])
    t0 = inputs.t[start][:, None]

    def tensor(values, dtype):
        return torch.as_tensor(values, dtype=dtype, device=device)

    return {
        "idx": idx,
        "valid": tensor(valid, torch.bool),
        "item": tensor(np.where(valid, inputs.item[idx], 0), torch.long),
        "beh": tensor(inputs.beh[idx], torch.long),
        "gap": tensor(inputs.gap[idx] * valid[:, :, None], torch.float32),
        "t": tensor(np.where(valid, inputs.t[idx] - t0, 0.0), torch.float32),
        "t0": t0[:, 0],
    }


def _readable(batch: dict) -> torch.Tensor:
    """(B, L, L): window event j is readable from position i (j ≤ i, not padding)."""
    j = torch.arange(batch["item"].shape[1], device=batch["item"].device)
    return batch["valid"][:, None, :] & (j[None, :, None] >= j[None, None, :])


def _choose(net: NextItemNet, batch: dict, rows, pos, t_pred, candidates=None):
    """For the positions (rows, pos) (N of them): queries, repeat log-weights over the
    window, explore logits (over `candidates` if given) and the window's items.
    t_pred : (B, L) days since each window's start of the instant each position predicts
    for."""
    h = net.states(batch)
    s_all = net.query(h, t_pred - batch["t"])
    rep = net.repeat_logits(s_all, batch, t_pred)[rows, pos]
    items = batch["item"][rows]
    s = s_all[rows, pos]
    explore = net.explore_logits(s, items, _readable(batch)[rows, pos], candidates)
    return s, rep, explore, items


def _log_likelihood(net, batch, rows, pos, t_pred, target, negatives=None) -> torch.Tensor:
    """Summed log p(target) of the positions (target: fitted item ids).

    `negatives` (item ids) switch the explore softmax to a sampled one: each position's
    target against those shared items and as many of the batch's other targets (drawn as
    often as they are bought or viewed, so popular items are pushed back too); a negative
    equal to the target is left out. None uses the whole catalogue.
    """
    candidates = None
    if negatives is not None:
        stride = max(target.numel() // max(negatives.numel(), 1), 1)
        candidates = torch.unique(torch.cat([negatives, target[::stride]]))
    s, rep, explore, items = _choose(net, batch, rows, pos, t_pred, candidates)
    log_g, log_not_g = net.log_gate(s)
    hit = items == (target[:, None] + 1)
    lp_repeat = torch.logsumexp(torch.where(hit, rep, _MASKED), 1) - torch.logsumexp(rep, 1)
    if candidates is None:
        lp_explore = F.log_softmax(explore, 1).gather(1, target[:, None])[:, 0]
    else:
        vectors = net.item_vectors()[target + 1]
        own = (s * vectors).sum(1) + net.explore_bias[target]
        seen = (hit & _readable(batch)[rows, pos]).any(1)  # explore never offers it
        own = torch.where(seen, torch.full_like(own, _MASKED), own)
        others = torch.where(candidates[None, :] == target[:, None], _MASKED, explore)
        lp_explore = own - torch.logsumexp(torch.cat([own[:, None], others], 1), 1)
    return torch.logaddexp(log_g + lp_repeat, log_not_g + lp_explore).sum()


def _distribution(net, batch, rows, pos, t_pred) -> torch.Tensor:
    """p(i) (N, n_items) of the positions: the mixture over the whole catalogue."""
    s, rep, explore, items = _choose(net, batch, rows, pos, t_pred)
    log_g, log_not_g = net.log_gate(s)
    p = torch.softmax(explore, 1) * log_not_g.exp()[:, None]
    attention = torch.softmax(rep, 1) * log_g.exp()[:, None]
    cols = torch.where(items > 0, items - 1, 0)
    return p.scatter_add(1, cols, torch.where(items > 0, attention, 0.0))


# -- fitting -----------------------------------------------------------------------------
def _held_out(events: EventArrays) -> np.ndarray:
    """Each user's last event, for users with at least three (validation targets)."""
    n = events.lengths()
    return events.offsets[1:][n >= 3] - 1


def fit_next_item(
    events: EventArrays,
    n_items: int,
    settings: NextItemSettings,
    device: torch.device,
    progress: Progress | None = None,
    *,
    private: UserLevelDPSGD | None = None,
    steps: int = 0,
) -> tuple[NextItemNet, dict]:
    """Train the head on `events`; returns the best epoch's network and how it went.

    With `private` (the point process's DP-SGD engine, whose budget planned these
    `steps`) it trains `steps` user-level private steps on every event instead: no
    held-out events, no early stopping, no popularity start (`_fit_private`).
    """
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    n_categories = max(int(events.n_categories), 1)  # as `NeuralModel.n_categories_`
    net = NextItemNet(n_items, n_categories, settings.hidden, settings.dropout).to(device)
    _init_tables(net, events, n_items, n_categories, popularity=private is None)
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    if private is not None:
        run = (net, optimiser, private, steps, generator)
        return net, _fit_private(*run, events, n_items, settings, device, progress)
    valid_idx = _held_out(events)
    keep = np.ones(events.n_events, dtype=bool)
    keep[valid_idx] = False
    train = events.select(keep)
    inputs = _inputs(train, n_items)
    windows = _windows(train.offsets, settings.max_len)
    start = windows[0]
    valid_users = np.flatnonzero(events.lengths() >= 3)
    valid_target = events.item_idx[valid_idx].astype(np.int64)
    valid_t = events.t[valid_idx]

    clock = time.monotonic()
    best = {"ndcg": -1.0, "epoch": 0, "seconds": 0.0, "state": None}
    history, stale, stop, epoch = [], 0, "epochs", 0
    batches = max(-(-start.size // settings.batch_size), 1)
    amp = settings.autocast
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    for epoch in range(1, settings.epochs + 1):
        net.train()
        order = torch.randperm(start.size, generator=generator).numpy()
        total, count = 0.0, 0
        for b, lo in enumerate(range(0, order.size, settings.batch_size)):
            sel = order[lo : lo + settings.batch_size]

            def draw() -> torch.Tensor | None:
                if not settings.negatives:
                    return None
                return torch.randint(n_items, (settings.negatives,), generator=generator)

            loss, scored = _windows_nll(net, inputs, windows, sel, device, amp, draw)
            if scored == 0:
                continue
            optimiser.zero_grad()
            scaler.scale(loss / scored).backward()
            scaler.unscale_(optimiser)
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            scaler.step(optimiser)
            scaler.update()
            total, count = total + float(loss.detach()), count + scored
            if progress is not None and (b % 10 == 0 or b == batches - 1):
                shown = max(best["ndcg"], 0.0)
                progress(
                    f"next items: epoch {epoch} batch {b + 1}/{batches}"
                    f" · loss {total / count:.3f} · best NDCG@{_VALID_K} {shown:.3f}",
                    (epoch - 1 + (b + 1) / batches) / settings.epochs,
                )
            if time.monotonic() - clock > settings.max_seconds:
                stop = "time"
                break
        ndcg = _validation_ndcg(net, train, inputs, valid_users, valid_target, valid_t, settings)
        history.append(round(ndcg, 5))
        if ndcg > best["ndcg"]:
            best = {
                "ndcg": ndcg,
                "epoch": epoch,
                "seconds": time.monotonic() - clock,
                "state": copy.deepcopy(net.state_dict()),
            }
            stale = 0
        else:
            stale += 1
        if stop == "time":
            break
        if stale >= settings.patience:
            stop = "patience"
            break
        if time.monotonic() - clock > settings.max_seconds:
            stop = "time"
            break
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    if progress is not None:
        progress(f"next items: best NDCG@{_VALID_K} {max(best['ndcg'], 0.0):.3f}", 1.0)
    return net, {
        "epochs": epoch,
        "stopped_by": stop,
        "best_epoch": best["epoch"],
        f"validation_ndcg@{_VALID_K}": best["ndcg"] if best["state"] is not None else None,
        "seconds_to_best": best["seconds"],
        "seconds": time.monotonic() - clock,
        f"validation_ndcg@{_VALID_K}_by_epoch": history,
        "validation_users": int(valid_users.size),
    }


def _init_tables(
    net: NextItemNet, events: EventArrays, n_items: int, n_categories: int, popularity: bool = True
) -> None:
    """Each item's category (its latest event's) and an explore bias at popularity, most
    of what a first epoch would learn anyway. Without `popularity` (a private fit) the
    bias stays 0: counts of who touched what are private; the item → category map is
    catalogue metadata, like the item vocabulary itself."""
    known = (events.item_idx >= 0) & (events.item_idx < n_items)
    items = events.item_idx[known]
    counts = np.bincount(items, minlength=n_items)[:n_items] + 1.0
    category = np.zeros(n_items + 1, dtype=np.int64)
    cat = events.category_idx[known].astype(np.int64)
    ok = (cat >= 0) & (cat < n_categories)
    category[items[ok] + 1] = cat[ok] + 1  # later events overwrite earlier ones
    with torch.no_grad():
        if popularity:
            bias = np.log(counts / counts.sum())
            net.explore_bias[:] = torch.as_tensor(bias, dtype=torch.float32)
        net.item_category[:] = torch.as_tensor(category)


def _windows_nll(net, inputs, windows, sel, device, amp, draw_negatives):
    """Summed next-item NLL of the windows `sel` and how many positions it scores (0:
    none, and `draw_negatives` is not called, so the random stream is left as it was)."""
    start, end, first_scored, user_end = windows
    batch = _pad(inputs, start[sel], end[sel], device)
    idx = batch["idx"]
    nxt = idx + 1
    scored = (
        batch["valid"].cpu().numpy()
        & (idx >= first_scored[sel][:, None])
        & (nxt < user_end[sel][:, None])
    )
    target = inputs.item[np.minimum(nxt, inputs.item.size - 1)] - 1
    scored &= target >= 0
    rows_np, pos_np = np.nonzero(scored)
    if rows_np.size == 0:
        return None, 0
    t_pred = inputs.t[np.minimum(nxt, inputs.t.size - 1)] - batch["t0"][:, None]
    negatives = draw_negatives()
    with torch.autocast(device.type, amp or torch.bfloat16, enabled=amp is not None):
        loss = -_log_likelihood(
            net,
            batch,
            torch.as_tensor(rows_np, device=device),
            torch.as_tensor(pos_np, device=device),
            torch.as_tensor(t_pred, dtype=torch.float32, device=device),
            torch.as_tensor(target[rows_np, pos_np], device=device),
            None if negatives is None else negatives.to(device),
        )
    return loss, int(rows_np.size)


def _fit_private(
    net, optimiser, engine, steps, generator, events, n_items, settings, device, progress
) -> dict:
    """`steps` user-level DP-SGD steps of `engine` (`ebbtide.models.dp_sgd`) on all of
    `events`: each sampled user's loss is the NLL of all of their windows. Stops early
    only on the wall clock (`max_seconds`), which spends less of the budget."""
    inputs = _inputs(events, n_items)
    windows = _windows(events.offsets, settings.max_len)
    user = np.searchsorted(events.offsets, windows[0], side="right") - 1  # by user
    first = np.searchsorted(user, np.arange(events.offsets.size))
    params = [p for p in net.parameters() if p.requires_grad]
    clock, stop, taken = time.monotonic(), "epochs", 0
    net.train()
    for step in range(steps):
        negatives = None
        if settings.negatives:
            negatives = torch.randint(n_items, (settings.negatives,), generator=generator)

        def user_loss(u: int, negatives=negatives) -> torch.Tensor | None:
            sel = np.arange(first[u], first[u + 1])
            if sel.size == 0:
                return None
            loss, _ = _windows_nll(
                net, inputs, windows, sel, device, settings.autocast, lambda: negatives
            )
            return loss

        optimiser.zero_grad()
        summed, counted = engine.private_gradient(params, engine.sample(), user_loss)
        optimiser.step()
        taken = step + 1
        if progress is not None and (step % 10 == 0 or taken == steps):
            progress(
                "next items: " + engine.progress_line(taken, steps, summed, counted),
                taken / max(steps, 1),
            )
        if time.monotonic() - clock > settings.max_seconds:
            stop = "time"
            break
    net.eval()
    return {
        "epochs": round(taken * engine.sample_rate, 3),  # expected passes over the users
        "stopped_by": stop,
        "steps": taken,
        "seconds": time.monotonic() - clock,
    }


def _validation_ndcg(net, history, inputs, users, target, t_pred, settings) -> float:
    """NDCG@10 of the held-out last events, ranked over every item (ties count against)."""
    if users.size == 0:
        return 0.0
    device = next(net.parameters()).device
    ranks = []
    with torch.no_grad():
        net.eval()
        for lo in range(0, users.size, _users_per_chunk(settings)):
            part = slice(lo, lo + _users_per_chunk(settings))
            p = _user_distribution(net, history, inputs, users[part], t_pred[part], settings)
            tgt = torch.as_tensor(target[part], device=device)
            known = (tgt >= 0) & (tgt < net.n_items)
            score = p.gather(1, tgt.clamp(0, net.n_items - 1)[:, None])
            rank = (p >= score).sum(1)  # ties count against the target
            ranks.append(torch.where(known, rank, _VALID_K + 1).cpu().numpy())
    return float(ndcg_at_k(np.concatenate(ranks), _VALID_K))


def _users_per_chunk(settings: NextItemSettings) -> int:
    """Users scored at once: each holds a row over the whole catalogue."""
    return max(settings.item_chunk // 4, 1)


def _user_distribution(net, events, inputs, users, t_pred, settings) -> torch.Tensor:
    """p(i) (U, n_items) for users at instants `t_pred` (days) from their last `max_len`
    events; users without events get the explore softmax of an empty history."""
    device = next(net.parameters()).device
    n = events.lengths()[users]
    out = torch.empty((users.size, net.n_items), device=device)
    has = np.flatnonzero(n > 0)
    if has.size:
        end = events.offsets[users[has] + 1]
        start = np.maximum(events.offsets[users[has]], end - settings.max_len)
        batch = _pad(inputs, start, end, device)
        rows = torch.arange(has.size, device=device)
        pos = torch.as_tensor(end - start - 1, device=device)
        ahead = np.repeat((t_pred[has] - batch["t0"])[:, None], batch["item"].shape[1], 1)
        t = torch.as_tensor(ahead, dtype=torch.float32, device=device)
        out[torch.as_tensor(has, device=device)] = _distribution(net, batch, rows, pos, t)
    empty = np.flatnonzero(n == 0)
    if empty.size:
        zero = torch.zeros((1, net.item.embedding_dim), device=device)
        s = net.query(zero, torch.zeros(1, device=device))
        out[torch.as_tensor(empty, device=device)] = torch.softmax(
            s @ net.item_vectors()[1:].T + net.explore_bias, 1
        )
    return out


def score_next_items(
    net: NextItemNet,
    events: EventArrays,
    users: np.ndarray,
    at: float,
    settings: NextItemSettings,
    k: int,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` items and their probabilities for `users` at `at` (days).

    exclude : (user positions, item ids) pairs to leave out, e.g. what they bought.
    """
    inputs = _inputs(events, net.n_items)
    k = min(k, net.n_items)
    items_out = np.empty((users.size, k), dtype=np.int64)
    scores_out = np.empty((users.size, k))
    chunk = _users_per_chunk(settings)
    with torch.no_grad():
        for lo in range(0, users.size, chunk):
            hi = min(lo + chunk, users.size)
            when = np.full(hi - lo, at)
            p = _user_distribution(net, events, inputs, users[lo:hi], when, settings).double()
            if exclude is not None:
                q, item = exclude
                sel = (q >= lo) & (q < hi) & (item >= 0) & (item < net.n_items)
                p[torch.as_tensor(q[sel] - lo), torch.as_tensor(item[sel])] = -math.inf
            val, item = torch.topk(p, k, dim=1)
            items_out[lo:hi] = item.cpu().numpy()
            scores_out[lo:hi] = val.cpu().numpy()
    return items_out, scores_out


def exclusion_pairs(events: EventArrays, users: np.ndarray, behavior: int):
    """(user position, item) of `users`' events with `behavior`, for `score_next_items`."""
    idx, q = user_event_ranges(events.offsets, users)
    sel = events.behavior[idx] == behavior
    return q[sel], events.item_idx[idx][sel].astype(np.int64)
