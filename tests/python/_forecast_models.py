"""Tiny random-weight forecasting models built with the upstream classes, for parity tests."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def kronos_pair(seed: int = 0, layers: int = 3, d_model: int = 32, heads: int = 4):
    """An upstream (Kronos, KronosTokenizer) pair with random weights, in eval mode."""
    from model import Kronos, KronosTokenizer

    torch.manual_seed(seed)
    tokenizer = KronosTokenizer(
        d_in=6, d_model=d_model, n_heads=heads, ff_dim=2 * d_model, n_enc_layers=3,
        n_dec_layers=3, ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0, s1_bits=4,
        s2_bits=4, beta=0.05, gamma0=1.0, gamma=1.1, zeta=0.05, group_size=4).eval()
    model = Kronos(
        s1_bits=4, s2_bits=4, n_layers=layers, d_model=d_model, n_heads=heads,
        ff_dim=3 * d_model // 2, ffn_dropout_p=0.0, attn_dropout_p=0.0, resid_dropout_p=0.0,
        token_dropout_p=0.0, learn_te=True).eval()
    # Upstream initialises norms to one and biases to zero: perturb them so the parity tests see
    # every parameter.
    with torch.no_grad():
        for name, p in list(model.named_parameters()) + list(tokenizer.named_parameters()):
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model, tokenizer


def candles(steps: int, seed: int = 0, start: str = "2026-01-05 09:30", freq: str = "5min"):
    """A random-walk OHLCV DataFrame and its timestamps (plus the next `steps` stamps' start)."""
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, steps))
    frame = pd.DataFrame({
        "open": close + rng.normal(0, 0.3, steps),
        "high": close + np.abs(rng.normal(0, 0.5, steps)),
        "low": close - np.abs(rng.normal(0, 0.5, steps)),
        "close": close,
        "volume": rng.uniform(1e3, 5e3, steps),
    })
    stamps = pd.Series(pd.date_range(start, periods=steps, freq=freq))
    return frame, stamps


def future_stamps(stamps: pd.Series, steps: int, freq: str = "5min") -> pd.Series:
    return pd.Series(pd.date_range(stamps.iloc[-1] + pd.Timedelta(freq), periods=steps, freq=freq))
