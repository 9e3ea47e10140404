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


CHRONOS2_QUANTILES = [0.01, 0.05] + [round(0.1 + 0.05 * i, 2) for i in range(17)] + [0.95, 0.99]


def chronos2_pipeline(seed: int = 0, layers: int = 2, d_model: int = 32, heads: int = 4,
                      d_kv: int = 8, max_output_patches: int = 4, activation: str = "relu"):
    """An upstream Chronos2Pipeline over a random-weight Chronos2Model, in eval mode.

    Upstream initialises norms to 0.05 and projections near zero (an almost constant model), so
    the weights are redrawn at a scale where every parameter moves the forecast.
    """
    from chronos import Chronos2Pipeline
    from chronos.chronos2 import Chronos2Model
    from chronos.chronos2.config import Chronos2CoreConfig

    config = Chronos2CoreConfig(
        d_model=d_model, d_kv=d_kv, d_ff=2 * d_model, num_layers=layers, num_heads=heads,
        dropout_rate=0.1, layer_norm_epsilon=1e-6, rope_theta=10000.0,
        feed_forward_proj=activation, vocab_size=2, reg_token_id=1, attn_implementation="sdpa",
        chronos_config=dict(context_length=256, input_patch_size=16, input_patch_stride=16,
                            output_patch_size=16, max_output_patches=max_output_patches,
                            quantiles=CHRONOS2_QUANTILES, use_reg_token=True, use_arcsinh=True,
                            time_encoding_scale=256))
    torch.manual_seed(seed)
    model = Chronos2Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                p.normal_(0, 1.0 / p.shape[1] ** 0.5)
            else:
                p.normal_(1.0 if "layer_norm" in name else 0.0, 0.1)
    return Chronos2Pipeline(model)


def seasonal_series(count: int, length: int, seed: int = 0, period: int = 12) -> np.ndarray:
    """[count, length] float32: seasonal + trend + noise, each series its own level and phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    level = rng.uniform(-5, 20, (count, 1))
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    trend = rng.normal(0, 0.05, (count, 1)) * t
    noise = rng.normal(0, 0.3, (count, length))
    return (level + 3 * np.sin(2 * np.pi * t / period + phase) + trend + noise).astype(np.float32)


def toto_model(seed: int = 0, layers: int = 4, embed: int = 32, heads: int = 4,
               patch: int = 8, space_every: int = 2):
    """An upstream Toto (toto-ts) with random weights, in eval mode: time-wise layers with a
    space-wise one every ``space_every`` (upstream's own ordering), the SDPA path (no xformers)."""
    from toto.model.toto import Toto

    torch.manual_seed(seed)
    model = Toto(patch_size=patch, stride=patch, embed_dim=embed, num_layers=layers,
                 num_heads=heads, mlp_hidden_dim=2 * embed, dropout=0.1,
                 spacewise_every_n_layers=space_every, spacewise_first=False,
                 scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
                 output_distribution_classes=[
                     "<class 'model.distribution.MixtureOfStudentTsOutput'>"],
                 output_distribution_kwargs={"k_components": 3},
                 use_memory_efficient_attention=False, stabilize_with_global=True,
                 scale_factor_exponent=10.0).eval()
    with torch.no_grad():  # norms start at one and biases at zero upstream: move them
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def masked_timeseries(series: np.ndarray, ids=None):
    """A toto MaskedTimeseries over float32 series [variates, time] or [batch, variates, time],
    every step valid, one id per variate (all 0 unless given)."""
    from toto.data.util.dataset import MaskedTimeseries

    x = torch.from_numpy(np.asarray(series, dtype=np.float32))
    id_mask = torch.zeros(x.shape, dtype=torch.int)
    if ids is not None:
        id_mask += torch.as_tensor(ids, dtype=torch.int)[..., None]
    return MaskedTimeseries(
        series=x, padding_mask=torch.ones(x.shape, dtype=torch.bool), id_mask=id_mask,
        timestamp_seconds=torch.zeros(x.shape, dtype=torch.int),
        time_interval_seconds=torch.full(x.shape[:-1], 60, dtype=torch.int))
