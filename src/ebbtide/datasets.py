"""Data that ships with ebbtide: the real Taobao sample, and where to find the rest.

`../shared/datasets` exists only in the development checkout, so the sample the demo and
tests rely on is bundled inside the package (gzip, 0.8 MB) with its provenance. The
synthetic generator with known ground truth lives in `ebbtide.synthetic`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Facts about the bundled Taobao slice, from its PROVENANCE file (what tests check).
TAOBAO_SAMPLE_FACTS = {
    "rows": 84_475,
    "users": 815,
    "items": 55_368,
    "categories": 2_914,
    "behaviors": {"view": 75_872, "cart": 4_497, "fav": 2_356, "buy": 1_750},
    "timezone": "Asia/Shanghai",
    "truncated_user": "100370",
}


def taobao_sample_path() -> Path:
    """Path of the bundled Taobao UserBehavior slice (Taobao format, gzip).

    84,475 events of 815 users (complete 9-day histories, 2017-11-25 … 12-03 China time,
    except user 100370, cut short). Columns, no header: user_id, item_id, category_id,
    behavior_type (pv|cart|fav|buy), timestamp (epoch seconds). Source: Alibaba Tianchi
    "UserBehavior", research use; see `taobao_sample_provenance()`.
    """
    return Path(str(resources.files("ebbtide.data") / "taobao_userbehavior_slice.csv.gz"))


def taobao_sample_provenance() -> str:
    """Where the bundled sample comes from, how it was cut, and its checked statistics."""
    return (resources.files("ebbtide.data") / "taobao_userbehavior_PROVENANCE.md").read_text()
