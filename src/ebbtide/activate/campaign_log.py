"""Read and validate a campaign log: one row per user per campaign, with arm and outcomes.

Why a separate step: every campaign number (A/B effects, uplift, off-policy values) is only as
good as the log behind it, and logs arrive with typos in arm names, ``"yes"``/``"no"``
outcomes, half-written last lines and users unknown to the event store. `prepare_campaign`
settles all of that once, loudly: a row is either kept or listed in ``dropped`` with its reason,
so ``len(frame) + len(dropped)`` always equals the input rows, and anything that would make
the analysis meaningless (no control, an empty arm, a wrong outcome column) raises
`CampaignLogError` with what to do next.

A log without a user id column is accepted: most published randomised trials (e.g. the
Hillstrom MineThatData e-mail test) list one customer per row and no id. Then the rows are
the units, numbered ``row_1``, ``row_2``, ... by their position in the log, and said so in
the notes; only joining the event store needs real user ids (`require_user_column`).

Examples
--------
>>> import pandas as pd
>>> log = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "arm": ["control", "push"] * 2,
...                     "conversion": ["yes", "no", "no", "yes"]})
>>> data = prepare_campaign(log, arm_col="arm", control="control", outcomes=["conversion"])
>>> data.arm_counts().to_dict()
{'control': 2, 'push': 2}
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_float_dtype, is_numeric_dtype

from ebbtide.errors import CampaignLogError, CampaignWarning, ConfigError

__all__ = [
    "DEFAULT_USER_COL",
    "CampaignData",
    "prepare_campaign",
    "read_campaign_log",
    "require_user_column",
]

#: The user id column's default name; a log without it is read as one customer per row.
DEFAULT_USER_COL = "user_id"

_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".csv.zst")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_TRUE_WORDS = frozenset({"true", "yes"})
_FALSE_WORDS = frozenset({"false", "no"})
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class CampaignData:
    """A validated campaign log, ready for `analyze_ab` and `estimate_policy_value`.

    Attributes
    ----------
    frame : DataFrame
        Kept rows (original index), outcome columns converted to float and user ids to str.
    arm : ndarray of str
        Arm of each kept row, aligned with ``frame``.
    control : str
        The control arm.
    treatments : list of str
        Treatment arms, in order of first appearance unless given.
    outcomes : list of str
        Outcome columns analysed.
    propensity : ndarray of float or None
        Logged probability of each row's own arm, in (0, 1], when a column was given.
    dropped : DataFrame
        Excluded input rows (original index) plus a ``reason`` column.
    user_col, arm_col : str
        Column names, so later steps need not be told again.
    rows_are_units : bool
        True when the log had no user id column: ``frame[user_col]`` then holds the row
        numbers ``row_1``, ``row_2``, ... (position in the input, dropped rows included).
    notes : list of str
        The warnings raised while preparing, for reports.
    """

    frame: pd.DataFrame
    arm: np.ndarray
    control: str
    treatments: list[str]
    outcomes: list[str]
    propensity: np.ndarray | None
    dropped: pd.DataFrame
    user_col: str = "user_id"
    arm_col: str = "arm"
    notes: list[str] = field(default_factory=list)
    rows_are_units: bool = False

    @property
    def arms(self) -> list[str]:
        """Control first, then the treatments."""
        return [self.control, *self.treatments]

    def arm_counts(self) -> pd.Series:
        """Kept rows per arm, control first (a quick look at the split before any test)."""
        counts = pd.Series(self.arm).value_counts()
        return counts.reindex(self.arms, fill_value=0).astype(np.int64).rename("n")

    def outcome_values(self, outcome: str) -> np.ndarray:
        """The float values of one outcome column, aligned with ``arm``."""
        if outcome not in self.outcomes:
            raise ConfigError(f"outcome {outcome!r} was not prepared; use one of {self.outcomes}")
        return self.frame[outcome].to_numpy(dtype=float)


def read_campaign_log(
    path: str | Path, *, user_col: str = "user_id", what: str = "campaign log"
) -> pd.DataFrame:
    """Read a campaign log from CSV or Parquet (chosen by suffix), user ids as strings.

    Ids stay strings so ``"007"`` is not read as ``7`` and still matches the event store.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (optionally compressed, e.g. ``.csv.gz``) or ``.parquet``/``.pq``.
    user_col : str
        Column read as string.
    what : str
        What the file is, for error messages (the same reader serves effects and contact
        tables).

    Returns
    -------
    DataFrame
        The raw rows; validate them with `prepare_campaign`.

    Raises
    ------
    CampaignLogError
        Missing, empty, binary, garbled or unparsable file, unknown suffix, or no rows.

    Warns
    -----
    CampaignWarning
        A CSV whose last line looks cut off (no final newline and missing fields).
    """
    path = Path(path)
    if not path.is_file():
        raise CampaignLogError(f"{what} {path}: no such file; check the path")
    if path.stat().st_size == 0:
        raise CampaignLogError(f"{what} {path}: the file is empty; export the log again")
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        frame = _read_parquet(path, user_col, what)
    elif name.endswith(_CSV_SUFFIXES):
        frame = _read_csv(path, user_col, what)
    else:
        raise CampaignLogError(
            f"{what} {path}: unknown file type {path.suffix!r}; use .csv or .parquet"
        )
    if frame.empty:
        raise CampaignLogError(
            f"{what} {path}: no rows (columns: {list(frame.columns)}); "
            "export the log again with its data"
        )
    return frame


def _read_parquet(path: Path, user_col: str, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise CampaignLogError(
            f"{what} {path}: not a readable Parquet file ({type(exc).__name__}: {exc}); "
            "check that the file is complete"
        ) from exc
    if user_col in frame.columns:
        ids = frame[user_col]
        frame[user_col] = ids.where(ids.isna(), ids.astype(str))
    return frame


def _read_csv(path: Path, user_col: str, what: str) -> pd.DataFrame:
    plain = path.suffix.lower() == ".csv"
    if plain:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
        if b"\x00" in head:
            raise CampaignLogError(
                f"{what} {path}: binary content (NUL bytes) in a .csv file; "
                "is it Parquet or compressed? Rename it to its real type or export CSV again"
            )
    try:
        frame = pd.read_csv(path, dtype={user_col: str}, encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise CampaignLogError(
            f"{what} {path}: no header and no rows; export the log again"
        ) from exc
    except UnicodeDecodeError as exc:
        raise CampaignLogError(
            f"{what} {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); the file"
            " is garbled or in another encoding: re-export it as UTF-8 CSV"
        ) from exc
    except (pd.errors.ParserError, ValueError, OSError, EOFError) as exc:
        raise CampaignLogError(
            f"{what} {path}: cannot parse as CSV ({exc}); the file may be truncated or "
            "garbled; export it again"
        ) from exc
    if plain and len(frame) and len(frame.columns) > 1:
        with path.open("rb") as handle:
            handle.seek(-1, 2)
            last = handle.read(1)
        if last not in (b"\n", b"\r") and frame.iloc[-1].isna().iloc[-1]:
            warnings.warn(
                f"{what} {path}: the last line has no newline and missing fields; the file"
                " looks truncated (that row will be dropped if an outcome is missing)",
                CampaignWarning,
                stacklevel=2,
            )
    return frame


def prepare_campaign(
    frame: pd.DataFrame,
    *,
    arm_col: str,
    control: str,
    outcomes: Sequence[str] | str,
    treatments: Sequence[str] | None = None,
    propensity_col: str | None = None,
    user_col: str = "user_id",
    known_users: Collection[str] | np.ndarray | pd.Index | None = None,
) -> CampaignData:
    """Validate a campaign log and keep the rows an analysis can use, accounting for the rest.

    Parameters
    ----------
    frame : DataFrame
        One row per user per campaign (e.g. from `read_campaign_log`).
    arm_col : str
        Column holding the arm each user received.
    control : str
        Value of ``arm_col`` that marks the control (hold-out) group.
    outcomes : sequence of str
        Outcome columns: 0/1, true/false, yes/no, or numbers (negative spend = refunds is fine).
    treatments : sequence of str, optional
        Treatment arms to analyse; rows of other arms are dropped. Default: every non-control
        arm, in order of first appearance.
    propensity_col : str, optional
        Logged probability of each row's own arm; must lie in (0, 1].
    user_col : str
        User id column (compared as strings). When it is the default ``"user_id"`` and the
        log has no such column, every row is one unit (see ``CampaignData.rows_are_units``);
        any other name must be a column of the log.
    known_users : collection of str, optional
        Ids in the event store; ids outside it are analysed but warned about. Refused for a
        log without user ids, whose rows cannot be matched to the store.

    Returns
    -------
    CampaignData

    Raises
    ------
    CampaignLogError
        Missing columns, no control rows, a requested arm absent, a single arm, an arm emptied
        by cleaning, an outcome column more than half unusable, a bad propensity, or
        `known_users` for a log without user ids.
    ConfigError
        Contradictory options (no outcomes, control listed as a treatment, repeated arms).

    Warns
    -----
    CampaignWarning
        Rows dropped (with counts per reason), duplicate user ids, users unknown to the store,
        and rows taken as the units of a log without user ids.

    Examples
    --------
    A published trial without ids (Hillstrom's columns): each row is one customer.

    >>> import warnings
    >>> trial = pd.DataFrame({"segment": ["No E-Mail", "Mens E-Mail"] * 2,
    ...                       "visit": [0, 1, 0, 0], "history": [30.0, 120.5, 80.0, 45.2]})
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     data = prepare_campaign(trial, arm_col="segment", control="No E-Mail",
    ...                             outcomes="visit")
    >>> data.rows_are_units, data.frame["user_id"].tolist()
    (True, ['row_1', 'row_2', 'row_3', 'row_4'])
    """
    outcome_list = [outcomes] if isinstance(outcomes, str) else list(outcomes)
    _check_options(control, outcome_list, treatments)
    control = str(control)
    rows_are_units = user_col == DEFAULT_USER_COL and user_col not in frame.columns
    needed = [arm_col, *outcome_list] + ([propensity_col] if propensity_col else [])
    needed += [] if rows_are_units else [user_col]
    missing = [name for name in dict.fromkeys(needed) if name not in frame.columns]
    if missing:
        hint = ""
        if user_col in missing:
            hint = (
                f"; if each row is one customer and the log has no id column, leave the user"
                f" id column at its default {DEFAULT_USER_COL!r}"
            )
        raise CampaignLogError(
            f"campaign log lacks column(s) {missing}; available: {list(frame.columns)}; "
            f"name the right columns (arm, outcomes, propensity, user id){hint}"
        )
    if frame.empty:
        raise CampaignLogError("campaign log has no rows; nothing to analyse")
    unit_notes: list[str] = []
    if rows_are_units:
        if known_users is not None:
            require_user_column(frame, user_col)
        frame = frame.copy()
        ids = np.char.add("row_", np.arange(1, len(frame) + 1).astype(str)).astype(object)
        frame.insert(0, user_col, ids)  # by position, whatever the index
        unit_notes.append(
            f"the log has no {user_col!r} column, so each of its {len(frame)} rows is taken as"
            f" one customer (ids row_1 … row_{len(frame)} by position in the file); name an"
            " id column to analyse per user"
        )

    n_rows = len(frame)
    arm = _clean_arms(frame[arm_col])
    seen = list(pd.unique(arm[arm.notna()]))
    if control not in seen:
        raise CampaignLogError(
            f"control arm {control!r} not found in column {arm_col!r} (values seen: {seen}); "
            "every row looks treated, so there is nothing to compare against: "
            "pass the control value used in the log"
        )
    if treatments is None:
        treatment_list = [value for value in seen if value != control]
    else:
        treatment_list = [str(value) for value in treatments]
        absent = [value for value in treatment_list if value not in seen]
        if absent:
            raise CampaignLogError(
                f"treatment arm(s) {absent} not found in column {arm_col!r} "
                f"(values seen: {seen}); check the spelling or drop them from treatments"
            )
    if not treatment_list:
        raise CampaignLogError(
            f"column {arm_col!r} holds a single arm ({control!r}); an A/B analysis needs the "
            "control and at least one treatment arm"
        )
    arms = [control, *treatment_list]

    reason = np.full(n_rows, None, dtype=object)
    kind = np.full(n_rows, None, dtype=object)

    def drop(mask: np.ndarray, why: np.ndarray | str, what: str) -> None:
        new = mask & _isnull(reason)
        reason[new] = why[new] if isinstance(why, np.ndarray) else why
        kind[new] = what

    arm_missing = arm.isna().to_numpy()
    drop(arm_missing, "arm missing", "arm missing")
    unknown_arm = ~arm_missing & ~arm.isin(arms).to_numpy()
    labels = np.array([f"arm {value!r} not one of {arms}" for value in arm.to_numpy()[unknown_arm]])
    why_arm = np.full(n_rows, None, dtype=object)
    why_arm[unknown_arm] = labels
    drop(unknown_arm, why_arm, "arm not in control/treatments")
    users = frame[user_col]
    users = users.where(users.isna(), users.astype(str))
    users = users.where(users.isna() | (users.str.strip() != ""), None)
    drop(users.isna().to_numpy(), "user id missing", "user id missing")

    base = _isnull(reason)
    converted: dict[str, np.ndarray] = {}
    for name in outcome_list:
        values, why = _parse_outcome(frame[name], name)
        bad = ~_isnull(why) & base
        if bad.sum() * 2 > base.sum():
            examples = frame[name].to_numpy()[bad][:3].tolist()
            raise CampaignLogError(
                f"outcome column {name!r}: {int(bad.sum())} of {int(base.sum())} rows are not "
                f"usable numbers (e.g. {examples}); the column is probably wrong: "
                "choose the right outcome column or clean it"
            )
        drop(~_isnull(why), why, f"outcome {name} unusable")
        converted[name] = values

    keep = _isnull(reason)
    kept_arm = arm.to_numpy()[keep]
    counts = pd.Series(kept_arm).value_counts()
    empty = [value for value in arms if counts.get(value, 0) == 0]
    if empty:
        raise CampaignLogError(
            f"arm(s) {empty} have no rows left after dropping unusable rows "
            f"({int((~keep).sum())} dropped); fix those rows or leave the arm out"
        )

    kept = frame.iloc[np.flatnonzero(keep)].copy()
    kept[user_col] = users.to_numpy()[keep]
    kept[arm_col] = kept_arm
    for name, values in converted.items():
        kept[name] = values[keep]
    propensity = None
    if propensity_col is not None:
        propensity = _check_propensity(kept, propensity_col, user_col)

    dropped = frame.iloc[np.flatnonzero(~keep)].copy()
    dropped["reason"] = reason[~keep].astype(str)
    notes = unit_notes
    if len(dropped):
        breakdown = pd.Series(kind[~keep]).value_counts()
        parts = ", ".join(f"{int(n)} × {what}" for what, n in breakdown.items())
        notes.append(
            f"dropped {len(dropped)} of {n_rows} rows ({parts}); see CampaignData.dropped "
            "for each row and its reason"
        )
    notes += _duplicate_note(kept[user_col])
    if known_users is not None:
        notes += _unknown_user_note(kept[user_col], known_users)
    for note in notes:
        warnings.warn(note, CampaignWarning, stacklevel=2)

    return CampaignData(
        frame=kept,
        arm=kept_arm.astype(str),
        control=control,
        treatments=treatment_list,
        outcomes=outcome_list,
        propensity=propensity,
        dropped=dropped,
        user_col=user_col,
        arm_col=arm_col,
        notes=notes,
        rows_are_units=rows_are_units,
    )


def require_user_column(frame: pd.DataFrame, user_col: str = DEFAULT_USER_COL) -> None:
    """Refuse a log without user ids where rows must be matched to the event store's users.

    Why: a log of anonymous rows can be analysed on its own (`prepare_campaign` numbers the
    rows), but store features or "known user" checks would join on ids that do not exist.

    Raises
    ------
    CampaignLogError
        When `user_col` is not a column of `frame`, saying what to add.
    """
    if user_col in frame.columns:
        return
    raise CampaignLogError(
        f"campaign log has no user id column {user_col!r} (columns: {list(frame.columns)}),"
        " so its rows cannot be matched to the event store's users: add a column with each"
        " row's user id as the store knows it (and name it with --user-col / user_col if it"
        f" is not {DEFAULT_USER_COL!r}), or analyse the log without the store (no --db)"
    )


def _check_options(control: object, outcomes: list[str], treatments: Iterable[str] | None) -> None:
    if control is None or (isinstance(control, str) and not control.strip()):
        raise ConfigError(f"control={control!r}: give the arm value that marks the control group")
    if not outcomes:
        raise ConfigError("outcomes=[]: name at least one outcome column (e.g. conversion)")
    if len(set(outcomes)) != len(outcomes):
        raise ConfigError(f"outcomes={outcomes}: each outcome column only once")
    if treatments is not None:
        values = [str(value) for value in treatments]
        if not values:
            raise ConfigError("treatments=[]: name at least one arm, or leave it out for all")
        if str(control) in values:
            raise ConfigError(
                f"treatments={values} include the control {control!r}; list treatment arms only"
            )
        if len(set(values)) != len(values):
            raise ConfigError(f"treatments={values}: each arm only once")


def _clean_arms(raw: pd.Series) -> pd.Series:
    """Arm labels as stripped strings; NaN and blanks become missing; 1.0 reads as "1"."""
    values = raw
    if is_float_dtype(values):
        whole = values.dropna()
        if len(whole) and (whole == np.round(whole)).all():
            values = values.astype("Int64")
    text = values.astype(object).where(values.notna(), None)
    text = text.map(lambda v: str(v).strip(), na_action="ignore")
    return text.where(text.notna() & (text != ""), None).astype(object)


def _isnull(values: np.ndarray) -> np.ndarray:
    return pd.isna(values)


def _parse_outcome(raw: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Float values plus a reason (or None) per row: numbers, or true/false and yes/no words."""
    why = np.full(len(raw), None, dtype=object)
    if is_bool_dtype(raw) or is_numeric_dtype(raw):
        values = raw.astype(float).to_numpy()
    else:
        text = raw.map(lambda v: str(v).strip(), na_action="ignore")
        text = text.where(text.notna() & (text != ""), None)
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        words = text.str.lower()
        values = np.where(
            words.isin(_TRUE_WORDS), 1.0, np.where(words.isin(_FALSE_WORDS), 0.0, numbers)
        )
        not_number = text.notna().to_numpy() & np.isnan(values)
        why[not_number] = [f"outcome {name} not a number: {v!r}" for v in text[not_number]]
    missing = np.isnan(values) & _isnull(why)
    why[missing] = f"outcome {name} missing"
    infinite = np.isinf(values)
    why[infinite] = [f"outcome {name} not finite: {v}" for v in values[infinite]]
    return values, why


def _check_propensity(kept: pd.DataFrame, column: str, user_col: str) -> np.ndarray:
    raw = kept[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~((values > 0) & (values <= 1))  # also catches NaN
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise CampaignLogError(
            f"propensity column {column!r}: {int(bad.sum())} row(s) outside (0, 1] or missing, "
            f"e.g. row {kept.index[first]!r} (user {kept[user_col].iloc[first]!r}) has "
            f"{raw.iloc[first]!r}; it must be the logged probability of that row's arm"
        )
    return values


def _duplicate_note(users: pd.Series) -> list[str]:
    repeated = users.duplicated(keep=False)
    if not repeated.any():
        return []
    n_ids = users[repeated].nunique()
    return [
        f"{n_ids} user id(s) appear more than once ({int(repeated.sum())} rows); kept, but a "
        "user should appear once per campaign: check that the log holds a single campaign"
    ]


def _unknown_user_note(users: pd.Series, known_users: object) -> list[str]:
    known = pd.Index(np.asarray(list(known_users), dtype=object)).astype(str)
    unknown = ~users.isin(known)
    n_unknown = int(unknown.sum())
    if n_unknown == 0:
        return []
    return [
        f"{n_unknown} of {len(users)} users ({n_unknown / len(users):.1%}) are not in the "
        "event store: they are analysed, but have no behaviour history for features"
    ]
