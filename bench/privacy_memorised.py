"""Membership inference where there is something to find: a `neural` model made to memorise.

`bench/privacy.py` attacks the default model, which already resists a loss-threshold attack
without DP (its early stopping on a validation window keeps it from memorising users), so
its advantage cannot be seen falling with ε. Here the non-private reference is made to
memorise on purpose, the usual way to test what DP-SGD buys:

- **Users.** A fixed hash of the user id takes about 120/256 of the bundled Taobao sample
  (388 users); a second hash splits them into *members* (trained on, 203) and
  *non-members* (185). Events before 2017-12-01 16:00 UTC (the sample's usual cut).
- **Non-private reference.** `neural` with no validation window (`validation_days=0`), 40
  epochs with no early stopping (`patience=40`), a 20-minute budget, 20 item epochs: it
  trains until it fits its members' sequences.
- **Private models.** ε = 8, 3, 1 with the DP defaults (clip 1.0, 64 users per step, 5
  epochs, δ = min(1e-5, 1/(10 n))), 20 item epochs as above.
- **Attack.** Loss threshold (Yeom et al., 2018) on the event loss per interval (time,
  category, buy: what DP-SGD protects; `NeuralModel.per_user_nll`): ROC-AUC, and the
  advantage max(TPR − FPR) at the best threshold in hindsight (optimistic). Under no
  effect the advantage of 203 vs 185 users is itself about 0.1 (a two-sample KS
  statistic), so compare rows, not each with 0.

Settings were fixed from how the model trains, not from attack numbers; one exploratory
run on 141 users (AUC 0.594, too few users to tell from chance) set the user share.

    python bench/privacy_memorised.py [--seeds 3] [--epsilons none,8,3,1]

Writes bench/RESULTS.md (section "Privacy: membership inference on a memorising model")
and bench/privacy_memorised.json.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from _results import machine, write_section
from _results import median_range as _cell
from ebbtide.datasets import taobao_sample_path
from ebbtide.evaluate import metrics
from ebbtide.features.history import snapshot
from ebbtide.ingest import ingest_file
from ebbtide.models.scoring import build_model
from ebbtide.store import EventStore

CUT = datetime(2017, 12, 1, 16, tzinfo=UTC)
SHARE = 120  # of 256: the users attacked
HERE = Path(__file__).resolve().parent
TITLE = "Privacy: membership inference on a memorising model"
MEMORISE = {"validation_days": 0, "epochs": 40, "patience": 40, "max_train_seconds": 1200}
ITEMS = {"item_epochs": 20, "item_patience": 20}


def _hash(user_id: str) -> bytes:
    return hashlib.blake2b(str(user_id).encode(), digest_size=8).digest()


def _attacked(user_id: str) -> bool:
    return _hash(user_id)[1] < SHARE


def _is_member(user_id: str) -> bool:
    return _hash(user_id)[0] % 2 == 0


def build_stores(folder: Path) -> tuple[Path, Path]:
    """Stores of the attacked users, and of the members among them."""
    paths = {name: folder / f"{name}.csv.gz" for name in ("all", "members")}
    with (
        gzip.open(taobao_sample_path(), "rt") as lines,
        gzip.open(paths["all"], "wt") as every,
        gzip.open(paths["members"], "wt") as members,
    ):
        for line in lines:
            user = line.split(",", 1)[0]
            if _attacked(user):
                every.write(line)
                if _is_member(user):
                    members.write(line)
    stores = []
    for name, path in paths.items():
        db = folder / f"{name}.duckdb"
        with EventStore(db) as store:
            ingest_file(store, path, "taobao")
        stores.append(db)
    return stores[0], stores[1]


def attack(every: EventStore, members: EventStore, epsilon: float | None, seed: int) -> dict:
    settings = {"seed": seed, **ITEMS}
    settings |= MEMORISE if epsilon is None else {"dp_epsilon": epsilon}
    started = time.perf_counter()
    model = build_model("neural", **settings)
    model.fit(members, cutoff=CUT)
    fit_s = time.perf_counter() - started
    losses = model.per_user_nll(snapshot(every, at=CUT))
    losses = losses[losses["intervals"] > 0]
    is_member = losses["user_id"].map(_is_member).to_numpy()
    score = -(losses["event_nll"] / losses["intervals"]).to_numpy(dtype=float)  # low: member
    order = np.argsort(-score, kind="stable")
    tpr = np.cumsum(is_member[order]) / max(is_member.sum(), 1)
    fpr = np.cumsum(~is_member[order]) / max((~is_member).sum(), 1)
    return {
        "epsilon": epsilon,
        "seed": seed,
        "auc": metrics.roc_auc(is_member, score),
        "advantage": float(np.max(tpr - fpr, initial=0.0)),
        "spent_epsilon": model.metrics_.get("privacy", {}).get("epsilon"),
        "fit_s": fit_s,
        "members": int(is_member.sum()),
        "non_members": int((~is_member).sum()),
    }


def report(rows: list[dict], args: argparse.Namespace, epsilons: list[float | None]) -> str:
    first = rows[0]
    lines = [
        f"## {TITLE}",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}, CPU only",
        f"- command: `python bench/privacy_memorised.py --seeds {args.seeds}"
        f" --epsilons {args.epsilons}`",
        f"- users: {first['members']} members trained on, {first['non_members']} non-members"
        " (hashes of the user id), Taobao sample events before 2017-12-01 16:00 UTC",
        "- non-private reference made to memorise: no validation window, 40 epochs, no early"
        " stopping; private models: the DP defaults (clip 1.0, 64 users per step, 5 epochs);"
        " settings fixed before the attack was read (see the script's docstring)",
        "- attack: loss threshold on the event loss per interval; advantage = max(TPR − FPR)"
        " at the best threshold in hindsight; median over seeds, range in brackets",
        "",
        "| model | ε spent | attack AUC | advantage | fit time |",
        "|---|---:|---:|---:|---:|",
    ]
    for epsilon in epsilons:
        mine = [r for r in rows if r["epsilon"] == epsilon]
        label = "no DP, memorising" if epsilon is None else f"ε = {epsilon:g}"
        spent = "∞" if epsilon is None else _cell(mine, "spent_epsilon", "{:.2f}")
        lines.append(
            f"| neural, {label} | {spent} | {_cell(mine, 'auc', '{:.3f}')} |"
            f" {_cell(mine, 'advantage', '{:.3f}')} | {_cell(mine, 'fit_s', '{:.0f} s')} |"
        )
    lines += [
        "",
        "With no DP the model gives its members a lower loss than users it never saw, and the"
        " attack finds them; with DP-SGD at ε = 8, 3 or 1 the attack is back at chance (AUC"
        " about 0.5, an advantage below the ~0.1 two random halves of these users show). The"
        " three private rows nearly coincide: with 203 users, the noise even ε = 8 needs"
        " leaves the network close to where it started (the utility table above shows the"
        " same on the full sample). The"
        " default non-private model (early stopping on a validation window) is already at"
        ' chance: see "Privacy: utility and membership inference against ε".',
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epsilons", default="none,8,3,1")
    args = parser.parse_args()
    epsilons = [None if e == "none" else float(e) for e in args.epsilons.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ebbtide-mia-") as tmp:
        every_db, members_db = build_stores(Path(tmp))
        with (
            EventStore(every_db, read_only=True) as every,
            EventStore(members_db, read_only=True) as members,
        ):
            for seed in range(args.seeds):
                for epsilon in epsilons:
                    rows.append(attack(every, members, epsilon, seed))
                    print(json.dumps(rows[-1]), flush=True)
    write_section(TITLE, report(rows, args, epsilons))
    (HERE / "privacy_memorised.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
