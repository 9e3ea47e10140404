"""KronosWrapper against upstream Kronos (kronos-model-arch), run in the same test."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from model import KronosPredictor
from model import kronos as upstream

from _forecast_models import candles, future_stamps, kronos_pair
from infermode.devices import ModeChoice
from infermode.forecast import Forecast, KronosWrapper


@pytest.fixture(scope="module")
def pair():
    return kronos_pair()


def _inputs(batch: int, lookback: int, pred_len: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, lookback, 6, generator=g)
    x_stamp = torch.randint(0, 5, (batch, lookback, 5), generator=g).float()
    y_stamp = torch.randint(0, 5, (batch, pred_len, 5), generator=g).float()
    return x, x_stamp, y_stamp


@pytest.mark.parametrize("lookback,pred_len,max_context", [
    (20, 12, 64),   # the window never fills: every step is a cached one
    (20, 12, 24),   # it fills at step 4, then slides: whole-window re-runs
    (30, 6, 24),    # the lookback alone exceeds max_context
])
def test_greedy_matches_upstream_including_a_sliding_window(pair, lookback, pred_len, max_context):
    model, tokenizer = pair
    x, x_stamp, y_stamp = _inputs(3, lookback, pred_len)
    want = upstream.auto_regressive_inference(tokenizer, model, x, x_stamp, y_stamp, max_context,
                                              pred_len, 5, 1.0, 1, 0.99, 1)
    k = KronosWrapper(model, tokenizer, max_context=max_context)
    assert k.native
    got = k.auto_regressive_inference(x, x_stamp, y_stamp, pred_len, clip=5, T=1.0, top_k=1,
                                      top_p=0.99, sample_count=1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_seeded_sampling_gives_upstreams_paths(pair):
    model, tokenizer = pair
    x, x_stamp, y_stamp = _inputs(2, 18, 10, seed=1)
    torch.manual_seed(7)
    want = upstream.auto_regressive_inference(tokenizer, model, x, x_stamp, y_stamp, 22, 10, 5,
                                              0.9, 0, 0.9, 3)
    k = KronosWrapper(model, tokenizer, max_context=22)
    torch.manual_seed(7)
    paths = k.auto_regressive_inference(x, x_stamp, y_stamp, 10, T=0.9, top_k=0, top_p=0.9,
                                        sample_count=3, return_samples=True)
    assert paths.shape == (2, 3, 22, 6)
    np.testing.assert_allclose(paths.mean(axis=1), want, atol=1e-4, rtol=0)
    assert np.abs(paths[:, 0] - paths[:, 1]).max() > 1e-3  # the paths differ, as sampled


def test_predict_and_predict_batch_match_kronos_predictor(pair):
    model, tokenizer = pair
    frames, xs, ys = [], [], []
    for seed in range(3):
        df, stamps = candles(40, seed=seed)
        frames.append(df)
        xs.append(stamps)
        ys.append(future_stamps(stamps, 8))
    ref = KronosPredictor(model, tokenizer, device="cpu", max_context=32)
    k = KronosWrapper(model, tokenizer, max_context=32)
    want = ref.predict(frames[0], xs[0], ys[0], pred_len=8, T=1.0, top_k=1, verbose=False)
    got = k.predict(frames[0], xs[0], ys[0], pred_len=8, T=1.0, top_k=1)
    assert list(got.columns) == list(want.columns) and got.index.equals(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-4, atol=1e-3)
    wants = ref.predict_batch(frames, xs, ys, pred_len=8, top_k=1, verbose=False)
    gots = k.predict_batch(frames, xs, ys, pred_len=8, top_k=1)
    for g, w in zip(gots, wants):
        np.testing.assert_allclose(g.to_numpy(), w.to_numpy(), rtol=1e-4, atol=1e-3)


def test_forecast_keeps_every_path_in_data_units(pair):
    model, tokenizer = pair
    df, stamps = candles(30, seed=4)
    ys = future_stamps(stamps, 6)
    k = KronosWrapper(model, tokenizer, max_context=32)
    torch.manual_seed(3)
    f = k.forecast(df, stamps, ys, pred_len=6, top_p=0.9, sample_count=5)
    assert isinstance(f, Forecast) and f.samples.shape == (1, 6, 6, 5)
    torch.manual_seed(3)
    mean_df = k.predict(df, stamps, ys, pred_len=6, top_p=0.9, sample_count=5)
    np.testing.assert_allclose(f.mean[0].T, mean_df.to_numpy(), rtol=1e-4, atol=1e-3)
    q = f.quantiles([0.1, 0.5, 0.9])
    assert q.shape == (1, 6, 6, 3) and np.all(q[..., 0] <= q[..., 2])
    table = f.to_dataframe()
    assert {"series", "variate", "timestamp", "step", "mean", "q0.1", "q0.9"} <= set(table.columns)
    assert len(table) == 6 * 6


def test_fallback_runs_upstream_exactly_and_says_why(pair, monkeypatch, caplog):
    model, tokenizer = pair
    reason = "test: this device is not supported by the native core"
    monkeypatch.setattr("infermode.forecast._wrapper.select_mode",
                        lambda device, native=False: ModeChoice("no_grad", reason, "cpu"))
    with caplog.at_level(logging.WARNING, logger="infermode.forecast"):
        k = KronosWrapper(model, tokenizer, max_context=24)
    assert not k.native and reason in caplog.text
    df, stamps = candles(30, seed=2)
    ys = future_stamps(stamps, 5)
    torch.manual_seed(5)
    want = KronosPredictor(model, tokenizer, device="cpu", max_context=24).predict(
        df, stamps, ys, pred_len=5, top_p=0.9, sample_count=2, verbose=False)
    torch.manual_seed(5)
    got = k.predict(df, stamps, ys, pred_len=5, top_p=0.9, sample_count=2)
    assert np.array_equal(got.to_numpy(), want.to_numpy())
    f = k.forecast(df, stamps, ys, pred_len=5)
    assert f.samples is None and f.mean.shape == (1, 6, 5)
    with pytest.raises(ValueError, match="mean only"):
        f.quantiles([0.5])


def test_memory_error_halves_the_batch_and_gives_the_same_result(pair, monkeypatch, caplog):
    model, tokenizer = pair
    x, x_stamp, y_stamp = _inputs(4, 16, 5, seed=3)
    k = KronosWrapper(model, tokenizer, max_context=32)
    want = k.generate(x.numpy(), x_stamp.numpy(), y_stamp.numpy(), 5, 1.0, 1, 0.99, 1)
    real = k.auto_regressive_inference
    sizes = []

    def tight(x, *args, **kwargs):
        sizes.append(x.shape[0])
        if x.shape[0] > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")
        return real(x, *args, **kwargs)

    monkeypatch.setattr(k, "auto_regressive_inference", tight)
    with caplog.at_level(logging.WARNING, logger="infermode.forecast"):
        got = k.generate(x.numpy(), x_stamp.numpy(), y_stamp.numpy(), 5, 1.0, 1, 0.99, 1)
    assert sizes[:3] == [4, 2, 1] and "retrying with 2" in caplog.text
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_bad_inputs_raise_errors_naming_them(pair):
    model, tokenizer = pair
    k = KronosWrapper(model, tokenizer, max_context=32)
    df, stamps = candles(20)
    ys = future_stamps(stamps, 4)
    for bad, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="pred_len"):
            k.predict(df, stamps, ys, pred_len=bad)
    with pytest.raises(ValueError, match="pred_len 40 exceeds max_context 32"):
        k.predict(df, stamps, future_stamps(stamps, 40), pred_len=40)
    with pytest.raises(ValueError, match="close"):
        k.predict(df.drop(columns=["close"]), stamps, ys, pred_len=4)
    with pytest.raises(ValueError, match="NaN"):
        k.predict(df.assign(open=np.nan), stamps, ys, pred_len=4)
    x, x_stamp, y_stamp = _inputs(1, 10, 4)
    with pytest.raises(ValueError, match="y_stamp"):
        k.auto_regressive_inference(x, x_stamp, y_stamp[:, :3], 4)
    with pytest.raises(ValueError, match="sample_count"):
        k.auto_regressive_inference(x, x_stamp, y_stamp, 4, sample_count=0)
    with pytest.raises(ValueError, match="max_context"):
        KronosWrapper(model, tokenizer, max_context=0)
