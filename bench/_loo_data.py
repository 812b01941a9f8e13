"""The two leave-one-out data sets shared by the RecBole peers and our own models.

One definition for both sides, so the same interactions and the same split are scored:

- ``ml-100k``: RecBole's own MovieLens 100K atomic file; every rating is an interaction.
- ``taobao``: the Taobao UserBehavior head slice; every behaviour (pv, cart, fav, buy) is an
  interaction, user 100370 (cut by the slice) is dropped, then iterative 5-core filtering.
  Repeated (user, item) interactions are kept: repeat consumption is the signal.

Rows are sorted by (user_id, timestamp, original file order). RecBole sorts by timestamp
with a stable sort and groups by user, so with a file in this order its leave-one-out split
(last interaction of a user = test, the one before = validation, the rest = training) is the
split of `leave_one_out` below, ties in time included.

    python bench/_loo_data.py          # prints the size of both data sets
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATASETS = HERE.parent.parent / "shared" / "datasets"
NAMES = ("ml-100k", "taobao")

ML100K_FILE = DATASETS / "ml-100k" / "ml-100k.inter"
TAOBAO_FILE = DATASETS / "taobao_userbehavior" / "UserBehavior_head_slice.csv"
#: The last user of the Taobao head slice: the byte-level cut goes through its history.
TAOBAO_CUT_USER = "100370"
TAOBAO_CORE = 5
#: (interactions, users, items) after filtering; checked on every load.
TAOBAO_EXPECTED = (11_875, 476, 1_653)

COLUMNS = ["user_id", "item_id", "timestamp"]


def load_interactions(name: str) -> pd.DataFrame:
    """Interactions of data set `name` as ``user_id`` (str), ``item_id`` (str), ``timestamp``.

    ``timestamp`` is int64 Unix seconds. Rows are sorted by (user_id, timestamp, original
    file order) and the index is 0..n-1.
    """
    if name == "ml-100k":
        df = _load_ml100k()
    elif name == "taobao":
        df = _load_taobao()
    else:
        raise ValueError(f"unknown data set {name!r}: use one of {', '.join(NAMES)}")
    df = df.assign(_row=np.arange(len(df)))
    df = df.sort_values(["user_id", "timestamp", "_row"], kind="stable")
    return df[COLUMNS].reset_index(drop=True)


def _load_ml100k() -> pd.DataFrame:
    raw = pd.read_csv(ML100K_FILE, sep="\t", dtype=str)
    raw.columns = [c.split(":")[0] for c in raw.columns]
    ts = raw["timestamp"].astype(float)
    if not (ts == ts.round()).all():
        raise ValueError(f"{ML100K_FILE}: timestamps are not whole seconds")
    return pd.DataFrame(
        {"user_id": raw["user_id"], "item_id": raw["item_id"], "timestamp": ts.astype(np.int64)}
    )


def _load_taobao() -> pd.DataFrame:
    raw = pd.read_csv(
        TAOBAO_FILE,
        header=None,
        names=["user_id", "item_id", "category_id", "behavior", "timestamp"],
        dtype={"user_id": str, "item_id": str, "category_id": str, "behavior": str},
    )
    raw = raw[raw["user_id"] != TAOBAO_CUT_USER]
    df = _k_core(raw[COLUMNS].astype({"timestamp": np.int64}), TAOBAO_CORE)
    got = (len(df), df["user_id"].nunique(), df["item_id"].nunique())
    if got != TAOBAO_EXPECTED:
        raise AssertionError(
            f"taobao after {TAOBAO_CORE}-core: {got} (interactions, users, items),"
            f" expected {TAOBAO_EXPECTED}"
        )
    return df


def _k_core(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than `k` interactions, repeated until nothing changes."""
    while True:
        users = df["user_id"].map(df["user_id"].value_counts())
        items = df["item_id"].map(df["item_id"].value_counts())
        keep = (users >= k) & (items >= k)
        if keep.all():
            return df
        df = df[keep]


def write_atomic(name: str, folder: str | Path) -> Path:
    """Write ``<folder>/<name>/<name>.inter`` in RecBole's atomic format; return its path.

    Columns ``user_id:token``, ``item_id:token``, ``timestamp:float``, tab separated, in the
    order of `load_interactions`.
    """
    df = load_interactions(name)
    path = Path(folder) / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "user_id:token\titem_id:token\ttimestamp:float\n"
    body = df.to_csv(sep="\t", header=False, index=False, lineterminator="\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + body)
    tmp.replace(path)
    return path


def leave_one_out(df: pd.DataFrame) -> np.ndarray:
    """Split label of every row of `df` (as from `load_interactions`): 0 train, 1 valid, 2 test.

    A user's last row is the test interaction, the one before the validation interaction,
    the rest are training (RecBole's ``{LS: valid_and_test}`` with ``order: TO``).
    """
    from_end = df.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    return np.select([from_end == 0, from_end == 1], [2, 1], 0).astype(np.int8)


if __name__ == "__main__":
    for _name in NAMES:
        _df = load_interactions(_name)
        _split = leave_one_out(_df)
        print(
            f"{_name}: {len(_df):,} interactions, {_df['user_id'].nunique():,} users,"
            f" {_df['item_id'].nunique():,} items; train/valid/test"
            f" {np.bincount(_split, minlength=3).tolist()}"
        )
