"""The daily and weekly cycle of a shop's activity, as a change of clock.

Why: people shop in the evening and sleep at night, so a model whose intensity ignores the
hour forecasts as many returns in the hour after midnight as after dinner. The cycle is a
multiplicative rate ``g(t)`` with mean 1 over a week::

    g(t) = 1 + Σ_k a_k cos(ω_k x) + b_k sin(ω_k x),   x = t + local UTC offset (days)

with daily harmonics ``ω = 2πk / 1 day`` (k = 1..3) and, on logs of four weeks or more,
weekly ones ``ω = 2πk / 7 days`` (k = 1, 2). A model runs on *operational time*
``Φ(t) = ∫ g = t + Σ_k (a_k sin(ω_k x) − b_k cos(ω_k x)) / ω_k``: a process with intensity
``λ*(Φ(t))`` in operational time has ``g(t) λ*(Φ(t))`` in clock time, its compensator over
``[T, T + H]`` is ``Λ*(Φ(T + H)) − Λ*(Φ(T))``, so forecasts over hours follow the cycle with no
other change to the maths. With g fixed, the likelihood's ``Σ log g(t_i)`` does not depend on
the model's parameters: fitting in operational time is the maximum-likelihood fit with the
cycle given. Decays then run in operational time (interest fades more slowly while people
sleep); over a week an operational day is a clock day on average.

Estimation: the coefficients are projections of the event times, ``a_k = 2 mean cos(ω_k x_i)``,
over a window of whole periods ending at the cut-off (whole days for the daily harmonics, each
day weighted equally so that a growing or shrinking log does not bend the daily shape; whole
weeks for the weekly ones). The deviation from 1 is shrunk if needed so that ``g ≥ 0.1``
everywhere (Φ stays strictly increasing). No cycle is fitted (``g = 1``) from fewer than
`min_events` events or two whole days, and no daily one when the timestamps are dates (every
event at the same second of the day, as in CDNOW): an hour of day they do not record is not a
cycle. The local offset is the time zone's at the cut-off, held fixed (a daylight-saving shift
moves the cycle by an hour for part of the year; not modelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["Cycle"]

DAILY_HARMONICS = 3
WEEKLY_HARMONICS = 2
_MIN_RATE = 0.1
_WEEK = 7.0


@dataclass(frozen=True)
class Cycle:
    """A fitted daily/weekly cycle (see the module docstring); `Cycle()` is flat (g = 1).

    offset_days : local time minus UTC, in days.
    periods, cos, sin : per harmonic, its period (days) and coefficients ``a_k``, ``b_k``.
    note : why the cycle is flat or partial, for users ("" when fully fitted).
    """

    offset_days: float = 0.0
    periods: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cos: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sin: np.ndarray = field(default_factory=lambda: np.zeros(0))
    note: str = ""

    @classmethod
    def fit(
        cls,
        t: np.ndarray,
        *,
        end: float,
        start: float | None = None,
        time_zone: str = "UTC",
        min_events: int = 200,
    ) -> Cycle:
        """Fit the cycle of event times `t` (days since the epoch, UTC) seen up to `end`.

        `start` is where the log really begins (default: its earliest event); only whole
        days (weeks) ending at `end` are read.
        """
        at = datetime.fromtimestamp(end * 86_400.0, UTC)
        offset = ZoneInfo(time_zone).utcoffset(at).total_seconds() / 86_400.0
        t = np.asarray(t, dtype=np.float64)
        t = t[t < end]
        first = float(t.min()) if start is None and t.size else (start or end)
        days = math.floor(end - first + 1e-9)
        if t.size < min_events or days < 2:
            return cls(offset, note=f"no cycle: {t.size:,} events over {end - first:.1f} days")
        periods, cos, sin, notes = [], [], [], []
        seconds = np.round((t * 86_400.0) % 86_400.0)
        if np.unique(seconds).size <= 1:
            notes.append("no daily cycle: the timestamps are dates")
        else:
            window = t[t >= end - days]
            day = np.floor(end - window).astype(np.int64)  # 0 = the last whole day
            weight = 1.0 / np.bincount(day, minlength=days)[day]
            weight /= weight.sum()
            for k in range(1, DAILY_HARMONICS + 1):
                phase = 2.0 * math.pi * k * (window + offset)
                periods.append(1.0 / k)
                cos.append(2.0 * float(weight @ np.cos(phase)))
                sin.append(2.0 * float(weight @ np.sin(phase)))
        weeks = math.floor((end - first) / _WEEK + 1e-9)
        if weeks >= 4:
            window = t[t >= end - weeks * _WEEK]
            for k in range(1, WEEKLY_HARMONICS + 1):
                phase = 2.0 * math.pi * k * (window + offset) / _WEEK
                periods.append(_WEEK / k)
                cos.append(2.0 * float(np.cos(phase).mean()))
                sin.append(2.0 * float(np.sin(phase).mean()))
        else:
            notes.append(f"no weekly cycle: {end - first:.0f} days of log (needs 28)")
        cycle = cls(offset, np.array(periods), np.array(cos), np.array(sin), "; ".join(notes))
        return cycle._bounded()

    def _bounded(self) -> Cycle:
        """Shrink the deviation from 1 so that g ≥ 0.1 on a fine grid over a week."""
        if not self.periods.size:
            return self
        grid = np.arange(0.0, _WEEK, 1.0 / 288.0) - self.offset_days
        low = float(self.rate(grid).min())
        if low >= _MIN_RATE:
            return self
        shrink = (1.0 - _MIN_RATE) / (1.0 - low)
        cos, sin = self.cos * shrink, self.sin * shrink
        return Cycle(self.offset_days, self.periods, cos, sin, self.note)

    @property
    def is_flat(self) -> bool:
        return not self.periods.size

    def _phases(self, t: np.ndarray) -> np.ndarray:
        x = np.asarray(t, dtype=np.float64)[..., None] + self.offset_days
        return 2.0 * math.pi * x / self.periods

    def rate(self, t: np.ndarray) -> np.ndarray:
        """g(t): the activity at clock time `t` (days since the epoch) relative to the mean."""
        if self.is_flat:
            return np.ones_like(np.asarray(t, dtype=np.float64))
        phase = self._phases(t)
        return 1.0 + np.cos(phase) @ self.cos + np.sin(phase) @ self.sin

    def warp(self, t: np.ndarray | float) -> np.ndarray:
        """Φ(t): operational time (days) of clock time `t` (days since the epoch)."""
        t = np.asarray(t, dtype=np.float64)
        if self.is_flat:
            return t.copy()
        phase = self._phases(t)
        omega = 2.0 * math.pi / self.periods
        return t + (np.sin(phase) @ (self.cos / omega) - np.cos(phase) @ (self.sin / omega))

    def span(self, at: float, horizon: float | np.ndarray) -> np.ndarray | float:
        """Operational length of the clock interval ``[at, at + horizon]``."""
        out = self.warp(at + np.asarray(horizon, dtype=np.float64)) - self.warp(at)
        return float(out) if np.ndim(out) == 0 else out

    @property
    def daily_amplitude(self) -> float:
        """Amplitude of the first daily harmonic: 0.6 means the rate swings ±60% over a day."""
        daily = np.isclose(self.periods, 1.0)
        return float(np.hypot(self.cos[daily], self.sin[daily]).sum()) if daily.any() else 0.0

    @property
    def peak_hour(self) -> float:
        """Local hour (0–24) where the daily part of g peaks (NaN without a daily cycle)."""
        daily = self.periods <= 1.0 + 1e-9
        if not daily.any():
            return math.nan
        hours = np.arange(0.0, 24.0, 1.0 / 60.0)
        x = 2.0 * math.pi * (hours / 24.0)[:, None] / self.periods[daily]
        shape = np.cos(x) @ self.cos[daily] + np.sin(x) @ self.sin[daily]
        return float(hours[int(np.argmax(shape))])

    def hourly_profile(self) -> np.ndarray:
        """g averaged within each local hour of the day (24 values), over a week."""
        grid = np.arange(0.0, _WEEK, 1.0 / 240.0)  # local days, 6-minute steps
        values = self.rate(grid - self.offset_days)
        hour = np.floor((grid % 1.0) * 24.0).astype(np.int64)
        return np.bincount(hour, values, 24) / np.bincount(hour, minlength=24)

    def to_array(self) -> np.ndarray:
        """(1 + K, 3) float array for saving: [offset, 0, 0] then (period, a, b) rows."""
        rows = np.column_stack([self.periods, self.cos, self.sin]) if self.periods.size else []
        return np.vstack([[self.offset_days, 0.0, 0.0], *([rows] if len(rows) else [])])

    @classmethod
    def from_array(cls, values: np.ndarray, note: str = "") -> Cycle:
        values = np.asarray(values, dtype=np.float64).reshape(-1, 3)
        rest = values[1:]
        periods, cos, sin = (rest[:, k].copy() for k in range(3))
        return cls(float(values[0, 0]), periods, cos, sin, note)
