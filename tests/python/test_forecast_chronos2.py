"""Chronos2Wrapper against upstream chronos-forecasting's Chronos2Pipeline, run in the same test."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from _forecast_models import chronos2_pipeline, seasonal_series
from infermode.devices import ModeChoice
from infermode.forecast import Chronos2Wrapper, Forecast

# Upstream and native differ only by float32 rounding inside the encoder (a few ulp of the
# forecast: ~1e-5 relative measured); sinh() of the scaled output amplifies it with the size of
# the forecast, hence the relative tolerance.
RTOL, ATOL = 1e-4, 1e-4


@pytest.fixture(scope="module")
def pipeline():
    return chronos2_pipeline()


def _close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=RTOL, atol=ATOL)


def _inputs():
    """Every masking case at once: tasks of different lengths (NaN left-padding to the longest in
    a batch), missing values, two targets per task (group attention), a covariate known in the
    future and a past-only one."""
    tasks = []
    for i, length in enumerate((100, 37, 64)):
        rows = seasonal_series(4, length, seed=i + 1)
        tasks.append({"target": rows[:2],
                      "past_covariates": {"load": rows[2], "price": rows[3]},
                      "future_covariates": {"load": seasonal_series(1, 24, seed=10 + i)[0]}})
    tasks[0]["target"][1, 50:53] = np.nan
    tasks[2]["past_covariates"]["price"][:5] = np.nan
    return tasks


def test_predict_matches_upstream_with_padding_groups_and_covariates(pipeline):
    wrapper = Chronos2Wrapper(pipeline)
    assert wrapper.native, wrapper.reason
    want = pipeline.predict(_inputs(), prediction_length=24)
    _close(wrapper.predict(_inputs(), prediction_length=24), want)
    # Batches of 5 rows: each four-row task then goes alone, without padding.
    _close(wrapper.predict(_inputs(), prediction_length=24, batch_size=5),
           pipeline.predict(_inputs(), prediction_length=24, batch_size=5))


def test_a_3d_array_is_a_batch_of_multivariate_tasks_and_cross_learning_mixes_them(pipeline):
    x = torch.from_numpy(seasonal_series(12, 80, seed=4).reshape(4, 3, 80))
    wrapper = Chronos2Wrapper(pipeline)
    _close(wrapper.predict(x, prediction_length=16), pipeline.predict(x, prediction_length=16))
    mixed = wrapper.predict(x, prediction_length=16, cross_learning=True)
    _close(mixed, pipeline.predict(x, prediction_length=16, cross_learning=True))
    alone = wrapper.predict(x, prediction_length=16)
    assert max(float((m - a).abs().max()) for m, a in zip(mixed, alone)) > 1e-3


def test_univariate_series_of_different_lengths_each_alone_in_its_group(pipeline):
    """Each series is its own group (the fused output-after-value path); the shorter ones are
    left-padded, so some of their tokens see no key at all."""
    series = [torch.from_numpy(seasonal_series(1, n, seed=n)[0]) for n in (120, 45, 77)]
    wrapper = Chronos2Wrapper(pipeline)
    _close(wrapper.predict(series, prediction_length=32),
           pipeline.predict(series, prediction_length=32))


def test_the_wrapper_follows_parameters_changed_in_place(pipeline):
    x = torch.from_numpy(seasonal_series(2, 64, seed=8)[:, None])
    wrapper = Chronos2Wrapper(pipeline)
    before = wrapper.predict(x, prediction_length=16)
    group = pipeline.model.encoder.block[0].layer[1].self_attention
    kept = [p.detach().clone() for p in (group.v.weight, group.o.weight)]
    try:
        with torch.no_grad():  # as an optimizer step would: in place, versions bumped
            group.v.weight.mul_(3.0)
            group.o.weight.add_(0.05)
        after = wrapper.predict(x, prediction_length=16)
        _close(after, pipeline.predict(x, prediction_length=16))
        assert max(float((a - b).abs().max()) for a, b in zip(after, before)) > 1e-3
    finally:
        with torch.no_grad():
            group.v.weight.copy_(kept[0])
            group.o.weight.copy_(kept[1])


def test_a_horizon_past_the_models_own_unrolls_as_upstream(pipeline):
    # max_output_patches 4 * 16 = 64 steps; 80 makes upstream feed its own quantiles back.
    x = torch.from_numpy(seasonal_series(2, 90, seed=5)[:, None])
    wrapper = Chronos2Wrapper(pipeline)
    with pytest.warns(UserWarning):
        got = wrapper.predict(x, prediction_length=80)
    with pytest.warns(UserWarning):
        want = pipeline.predict(x, prediction_length=80)
    _close(got, want)


def test_predict_quantiles_and_predict_df_match_upstream(pipeline):
    wrapper = Chronos2Wrapper(pipeline)
    levels = [0.1, 0.33, 0.5, 0.9]  # 0.33 is not one of the model's: interpolated upstream
    q, mean = wrapper.predict_quantiles(_inputs(), prediction_length=24, quantile_levels=levels)
    q_want, mean_want = pipeline.predict_quantiles(_inputs(), prediction_length=24,
                                                   quantile_levels=levels)
    _close(q, q_want)
    _close(mean, mean_want)

    series = seasonal_series(2, 60, seed=6)
    df = pd.DataFrame({
        "item_id": np.repeat(["a", "b"], 60),
        "timestamp": np.tile(pd.date_range("2026-01-01", periods=60, freq="h"), 2),
        "target": series.reshape(-1),
    })
    got = wrapper.predict_df(df, prediction_length=12, quantile_levels=[0.1, 0.5, 0.9])
    want = pipeline.predict_df(df, prediction_length=12, quantile_levels=[0.1, 0.5, 0.9])
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got.drop(columns=["predictions", "0.1", "0.5", "0.9"]),
                                  want.drop(columns=["predictions", "0.1", "0.5", "0.9"]))
    for column in ("predictions", "0.1", "0.5", "0.9"):
        np.testing.assert_allclose(got[column], want[column], rtol=RTOL, atol=ATOL)


def test_the_users_model_is_left_as_it_was(pipeline):
    model = pipeline.model
    encoder, parameters = model.encoder, {n: p.clone() for n, p in model.named_parameters()}
    model.train()  # dropout on in the user's model: the wrapper still forecasts without it
    try:
        wrapper = Chronos2Wrapper(pipeline)
        x = torch.from_numpy(seasonal_series(2, 40, seed=7)[:, None])
        first = wrapper.predict(x, prediction_length=16)
        _close(wrapper.predict(x, prediction_length=16), first)  # no dropout: the same twice
        assert model.encoder is encoder and model.training
        for name, p in model.named_parameters():
            assert torch.equal(p, parameters[name]), name
    finally:
        model.eval()
    _close(first, pipeline.predict(x, prediction_length=16))


def test_forecast_holds_the_models_quantiles_and_history(pipeline):
    x = seasonal_series(3, 50, seed=8)
    wrapper = Chronos2Wrapper(pipeline)
    forecast = wrapper.forecast(list(x), prediction_length=16)  # a list of 1-d series
    assert isinstance(forecast, Forecast)
    assert forecast.shape == (3, 1, 16)
    want = pipeline.predict(list(x), prediction_length=16)
    levels = list(pipeline.quantiles)
    median = np.stack([w[:, levels.index(0.5)].numpy() for w in want])
    np.testing.assert_allclose(forecast.median, median, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(forecast.history[:, 0], x)
    band = forecast.quantiles([0.1, 0.9])  # the model's own levels: its columns exactly
    for i, level in enumerate((0.1, 0.9)):
        np.testing.assert_array_equal(band[..., i], forecast.quantile_values[
            ..., levels.index(level)])


def test_an_unsupported_device_runs_upstream_under_no_grad_and_says_why(pipeline, monkeypatch,
                                                                      caplog):
    import infermode.forecast._wrapper as wrapper_module

    monkeypatch.setattr(wrapper_module, "select_mode", lambda device, native=True: ModeChoice(
        "no_grad", "xla: the native core does not run on this device"))
    with caplog.at_level(logging.WARNING, logger="infermode.forecast"):
        wrapper = Chronos2Wrapper(pipeline)
    assert not wrapper.native
    assert "xla" in caplog.text and "falling back" in caplog.text
    x = torch.from_numpy(seasonal_series(2, 40, seed=9)[:, None])
    for g, w in zip(wrapper.predict(x, prediction_length=16),
                    pipeline.predict(x, prediction_length=16)):
        assert torch.equal(g, w)


def test_an_activation_the_core_lacks_falls_back():
    wrapper = Chronos2Wrapper(chronos2_pipeline(activation="gelu"))
    assert not wrapper.native and "'gelu'" in wrapper.reason


def test_out_of_memory_halves_the_batch(pipeline, monkeypatch):
    wrapper = Chronos2Wrapper(pipeline)
    native = wrapper._active
    sizes = []
    real = native.predict

    def tight(inputs, batch_size=256, **kwargs):
        sizes.append(batch_size)
        if batch_size > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to ...")
        return real(inputs, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(native, "predict", tight)
    x = torch.from_numpy(seasonal_series(4, 40, seed=10)[:, None])
    got = wrapper.predict(x, prediction_length=16, batch_size=8)
    assert sizes == [8, 4, 2]
    _close(got, pipeline.predict(x, prediction_length=16))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="Chronos2Pipeline"):
        Chronos2Wrapper(object())
    wrapper = Chronos2Wrapper(chronos2_pipeline())
    with pytest.raises(ValueError, match="batch_size must be positive"):
        wrapper.predict(torch.zeros(1, 1, 20), prediction_length=4, batch_size=0)


@pytest.mark.parametrize("inputs,error,match", [
    (torch.full((2, 1, 30), float("nan")), ValueError, r"inputs\[0\]\[0\] is all NaN"),
    ([np.arange(30.0), np.full(20, np.nan)], ValueError, r"inputs\[1\] is all NaN"),
    ([{"target": np.stack([np.arange(30.0), np.r_[np.ones(29), np.inf]])}], ValueError,
     r"inputs\[0\]\['target'\]\[1\] holds inf at step 29"),
    ([{"past_covariates": {"x": np.ones(30)}}], ValueError, r"inputs\[0\] has no 'target'"),
    (torch.zeros(1, 1, 0), ValueError, r"inputs\[0\] has no time steps"),
    (torch.zeros(1, 1, 1, 30), ValueError, "Expected 3-d tensor"),  # upstream's own message
])
def test_bad_series_are_refused_naming_them(inputs, error, match):
    wrapper = Chronos2Wrapper(chronos2_pipeline())
    with pytest.raises(error, match=match):
        wrapper.predict(inputs, prediction_length=8)


@pytest.mark.parametrize("length,error", [(0, ValueError), (-3, ValueError), (2.5, TypeError),
                                          (True, TypeError)])
def test_prediction_length_must_be_a_positive_whole_number(length, error):
    wrapper = Chronos2Wrapper(chronos2_pipeline())
    x = torch.from_numpy(seasonal_series(1, 30)[:, None])
    with pytest.raises(error, match="prediction_length"):
        wrapper.predict(x, prediction_length=length)
    with pytest.raises(error, match="prediction_length"):
        wrapper.predict_quantiles(x, prediction_length=length)


def test_bad_data_frames_are_refused_naming_the_item_or_column():
    wrapper = Chronos2Wrapper(chronos2_pipeline())
    df = pd.DataFrame({"item_id": np.repeat(["a", "b"], 30),
                       "timestamp": np.tile(pd.date_range("2026-01-01", periods=30, freq="h"), 2),
                       "target": np.r_[np.arange(30.0), np.full(30, np.nan)]})
    with pytest.raises(ValueError, match="item 'b' has no observed 'target'"):
        wrapper.predict_df(df, prediction_length=8)
    with pytest.raises(ValueError, match="Missing columns: {'target'}"):  # upstream's check
        wrapper.predict_df(df.drop(columns="target"), prediction_length=8)
    with pytest.raises(ValueError, match="prediction_length must be positive"):
        wrapper.predict_df(df, prediction_length=0)
