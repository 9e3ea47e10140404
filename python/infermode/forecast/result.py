"""One probabilistic forecast for every model: quantiles, median, mean, samples, a table, a plot."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

DEFAULT_LEVELS = (0.1, 0.5, 0.9)


@dataclass
class Forecast:
    """Forecasts of ``series`` series with ``variates`` variables each over ``horizon`` steps.

    A sampling model (Toto, Kronos) fills ``samples`` [series, variates, horizon, n]; a quantile
    model (Chronos-2) fills ``quantile_levels`` and ``quantile_values`` [series, variates, horizon,
    levels]. ``history`` [series, variates, context] (optional) is what ``plot`` draws before the
    forecast; ``index`` the horizon's time stamps (optional, one per step, shared or per series).
    """

    samples: Optional[np.ndarray] = None
    quantile_levels: Optional[Sequence[float]] = None
    quantile_values: Optional[np.ndarray] = None
    mean_values: Optional[np.ndarray] = None
    history: Optional[np.ndarray] = None
    variate_names: Optional[Sequence[str]] = None
    index: Any = None
    series_ids: Optional[Sequence[Any]] = None
    model: str = ""
    _levels: tuple = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.samples is None and self.quantile_values is None and self.mean_values is None:
            raise ValueError("Forecast needs samples, quantile values or mean values")
        if self.quantile_values is not None:
            levels = np.asarray(self.quantile_levels, dtype=float)
            if levels.ndim != 1 or len(levels) != self.quantile_values.shape[-1]:
                raise ValueError(
                    f"quantile_levels has {len(levels)} levels but quantile_values has "
                    f"{self.quantile_values.shape[-1]} on its last axis")
            self._levels = tuple(float(q) for q in levels)

    @property
    def shape(self) -> tuple:
        """(series, variates, horizon)."""
        for values in (self.samples, self.quantile_values, self.mean_values):
            if values is not None:
                return tuple(values.shape[:3])
        raise AssertionError("unreachable")

    def quantiles(self, levels: Sequence[float] = DEFAULT_LEVELS) -> np.ndarray:
        """[series, variates, horizon, len(levels)]: from the samples, or interpolated linearly
        between the model's own quantile levels (a level outside them is a ValueError)."""
        wanted = np.asarray(levels, dtype=float)
        if wanted.ndim != 1 or np.any((wanted < 0) | (wanted > 1)):
            raise ValueError(f"levels must be a list of numbers in [0, 1], got {list(levels)}")
        if self.samples is not None:
            return np.moveaxis(np.quantile(self.samples, wanted, axis=-1), 0, -1)
        if self.quantile_values is None:
            raise ValueError(f"this {self.model or 'model'}'s forecast has a mean only (the "
                             "fallback path returns no samples); quantiles need samples")
        known = np.asarray(self._levels)
        outside = wanted[(wanted < known.min() - 1e-9) | (wanted > known.max() + 1e-9)]
        if outside.size:
            raise ValueError(f"levels {outside.tolist()} lie outside the model's quantile levels "
                             f"[{known.min()}, {known.max()}]")
        values = self.quantile_values
        out = np.empty(values.shape[:3] + (len(wanted),), dtype=values.dtype)
        for i, q in enumerate(wanted):
            j = int(np.clip(np.searchsorted(known, q, side="right") - 1, 0, len(known) - 2))
            lo, hi = known[j], known[j + 1]
            w = 0.0 if hi == lo else (q - lo) / (hi - lo)
            out[..., i] = (1 - w) * values[..., j] + w * values[..., j + 1]
        return out

    @property
    def median(self) -> np.ndarray:
        """[series, variates, horizon]."""
        return self.quantiles([0.5])[..., 0]

    @property
    def mean(self) -> np.ndarray:
        """[series, variates, horizon]: the model's mean, the samples' mean, or the median of a
        quantile model (its point forecast)."""
        if self.mean_values is not None:
            return self.mean_values
        if self.samples is not None:
            return self.samples.mean(axis=-1)
        return self.median

    def to_dataframe(self, levels: Sequence[float] = DEFAULT_LEVELS) -> Any:
        """A long table: one row per series, variate and step, with mean and quantile columns."""
        import pandas as pd

        series, variates, horizon = self.shape
        names = list(self.variate_names or range(variates))
        ids = list(self.series_ids if self.series_ids is not None else range(series))
        table = {
            "series": np.repeat(ids, variates * horizon),
            "variate": np.tile(np.repeat(names, horizon), series),
            "step": np.tile(np.arange(horizon), series * variates),
            "mean": self.mean.reshape(-1),
        }
        has_spread = self.samples is not None or self.quantile_values is not None
        if has_spread:
            values = self.quantiles(levels)
            for i, q in enumerate(levels):
                table[f"q{q:g}"] = values[..., i].reshape(-1)
        frame = pd.DataFrame(table)
        if self.index is not None:
            stamps = np.asarray(self.index)
            frame.insert(2, "timestamp",
                         np.tile(stamps, series * variates) if stamps.ndim == 1 else
                         np.repeat(stamps, variates, axis=0).reshape(-1))
        return frame

    def plot(self, series: int = 0, variate: int = 0, ax: Any = None) -> Any:
        """History, median and the 10-90% band of one series' variate (matplotlib)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(8, 3))
        context = 0
        if self.history is not None:
            past = np.asarray(self.history[series][variate], dtype=float)
            context = len(past)
            ax.plot(np.arange(context), past, color="0.3", lw=1, label="history")
        steps = np.arange(context, context + self.shape[2])
        if self.samples is not None or self.quantile_values is not None:
            band = self.quantiles([0.1, 0.5, 0.9])[series, variate]
            ax.fill_between(steps, band[:, 0], band[:, 2], alpha=0.3, label="10-90%")
            ax.plot(steps, band[:, 1], lw=1.5, label="median")
        else:
            ax.plot(steps, self.mean[series, variate], lw=1.5, label="mean")
        name = self.variate_names[variate] if self.variate_names else f"variate {variate}"
        ax.set_title(f"{self.model} forecast: series {series}, {name}".strip())
        ax.legend(loc="upper left")
        return ax
