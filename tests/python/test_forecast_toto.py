"""TotoWrapper against upstream toto-ts's TotoForecaster, run in the same test."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from toto.inference.forecaster import TotoForecaster

from _forecast_models import masked_timeseries, seasonal_series, toto_model
from infermode.devices import ModeChoice
from infermode.forecast import Forecast, TotoWrapper

ATOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return toto_model()


def _batch():
    """Two series of three variates each, ids grouping them differently (space-wise attention
    within each group only), 45 steps (left-padded upstream to 48, a multiple of the patch)."""
    return masked_timeseries(seasonal_series(6, 45, seed=1).reshape(2, 3, 45),
                             ids=[[0, 0, 1], [0, 1, 1]])


def _close(got, want):
    assert got.shape == want.shape
    scale = max(1.0, float(want.abs().max()))
    assert float((got - want).abs().max()) <= ATOL * scale


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_mean_forecast_matches_upstream_with_and_without_the_kv_cache(model, use_kv_cache):
    # Upstream's cached and uncached forecasts differ (xPos centres its scale per call); each
    # native mode matches upstream's same mode.
    wrapper = TotoWrapper(model)
    assert wrapper.native, wrapper.reason
    got = wrapper.forecast(_batch(), prediction_length=20, use_kv_cache=use_kv_cache)
    want = TotoForecaster(model.model).forecast(_batch(), prediction_length=20,
                                               use_kv_cache=use_kv_cache)
    assert got.samples is None
    _close(got.mean, want.mean)


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_seeded_samples_are_upstreams_paths(model, use_kv_cache):
    # The context is encoded once and shared by the paths, yet every draw is upstream's.
    wrapper = TotoWrapper(model)
    torch.manual_seed(3)
    got = wrapper.forecast(_batch(), prediction_length=20, num_samples=6, samples_per_batch=3,
                           use_kv_cache=use_kv_cache)
    torch.manual_seed(3)
    want = TotoForecaster(model.model).forecast(_batch(), prediction_length=20, num_samples=6,
                                               samples_per_batch=3, use_kv_cache=use_kv_cache)
    assert got.samples.shape == (2, 3, 20, 6)
    _close(got.samples, want.samples)
    _close(got.mean, want.mean)
    assert float((got.samples[..., 0] - got.samples[..., 1]).abs().max()) > 1e-3


def test_single_variate_series_each_alone_in_the_space_wise_layers(model):
    # One variate per series: the space-wise layers take the fused output-after-value path,
    # with Toto's biases.
    inputs = masked_timeseries(seasonal_series(3, 45, seed=6).reshape(3, 1, 45))
    got = TotoWrapper(model).forecast(inputs, prediction_length=20)
    _close(got.mean, TotoForecaster(model.model).forecast(inputs, prediction_length=20).mean)


def test_the_wrapper_follows_parameters_changed_in_place(model):
    inputs = masked_timeseries(seasonal_series(2, 45, seed=7).reshape(2, 1, 45))
    wrapper = TotoWrapper(model)
    before = wrapper.forecast(inputs, prediction_length=16).mean
    layers = model.model.transformer.layers
    changed = [layers[0].attention.wQKV.weight, layers[-1].attention.wO.bias]
    kept = [p.detach().clone() for p in changed]
    try:
        with torch.no_grad():  # as an optimizer step would: in place, versions bumped
            changed[0].mul_(1.5)
            changed[1].add_(0.1)
        after = wrapper.forecast(inputs, prediction_length=16).mean
        _close(after, TotoForecaster(model.model).forecast(inputs, prediction_length=16).mean)
        assert float((after - before).abs().max()) > 1e-3
    finally:
        with torch.no_grad():
            for p, k in zip(changed, kept):
                p.copy_(k)


def test_an_unbatched_series_and_exogenous_variables(model):
    series = seasonal_series(3, 40, seed=2)
    inputs = masked_timeseries(series)._replace(num_exogenous_variables=1)
    future = torch.from_numpy(seasonal_series(1, 16, seed=3))  # the last variate's future
    wrapper = TotoWrapper(model)
    torch.manual_seed(5)
    got = wrapper.forecast(inputs, prediction_length=16, num_samples=4, samples_per_batch=2,
                           future_exogenous_variables=future)
    torch.manual_seed(5)
    want = TotoForecaster(model.model).forecast(inputs, prediction_length=16, num_samples=4,
                                               samples_per_batch=2,
                                               future_exogenous_variables=future)
    _close(got.samples, want.samples)
    torch.testing.assert_close(got.samples[0, 2, :, 0], future[0], rtol=0, atol=0)


def test_predict_returns_a_forecast_with_the_paths_and_history(model):
    wrapper = TotoWrapper(model)
    torch.manual_seed(0)
    forecast = wrapper.predict(_batch(), prediction_length=12, num_samples=8, samples_per_batch=4)
    assert isinstance(forecast, Forecast)
    assert forecast.samples.shape == (2, 3, 12, 8)
    assert forecast.history.shape == (2, 3, 45)
    np.testing.assert_allclose(forecast.mean, forecast.samples.mean(-1), rtol=1e-6)
    mean_only = wrapper.predict(_batch(), prediction_length=12)
    assert mean_only.samples is None and mean_only.mean.shape == (2, 3, 12)


def test_the_users_model_is_left_as_it_was(model):
    backbone = model.model
    transformer = backbone.transformer
    model.train()
    try:
        wrapper = TotoWrapper(model)
        wrapper.forecast(_batch(), prediction_length=8)
        assert backbone.transformer is transformer and model.training
        assert "allocate_kv_cache" not in vars(backbone)
    finally:
        model.eval()


def test_an_unsupported_device_runs_upstream_under_no_grad_and_says_why(model, monkeypatch,
                                                                      caplog):
    import infermode.forecast._wrapper as wrapper_module

    monkeypatch.setattr(wrapper_module, "select_mode", lambda device, native=True: ModeChoice(
        "no_grad", "mps: the native core does not run on this device"))
    with caplog.at_level(logging.WARNING, logger="infermode.forecast"):
        wrapper = TotoWrapper(model)
    assert not wrapper.native and "mps" in caplog.text and "falling back" in caplog.text
    torch.manual_seed(1)
    got = wrapper.forecast(_batch(), prediction_length=16, num_samples=4, samples_per_batch=2)
    torch.manual_seed(1)
    want = TotoForecaster(model.model).forecast(_batch(), prediction_length=16, num_samples=4,
                                               samples_per_batch=2)
    assert torch.equal(got.samples, want.samples)


def test_ids_that_change_along_time_run_upstream(model, caplog):
    inputs = _batch()
    inputs.id_mask[0, 2, 21:] = 7  # from a patch boundary (3 steps of left padding, patch 8)
    wrapper = TotoWrapper(model)
    with caplog.at_level(logging.WARNING, logger="infermode.forecast"):
        got = wrapper.forecast(inputs, prediction_length=8)
    assert "id_mask changes along time" in caplog.text
    want = TotoForecaster(model.model).forecast(inputs, prediction_length=8)
    assert torch.equal(got.mean, want.mean)


def test_out_of_memory_shrinks_samples_per_batch(model, monkeypatch):
    wrapper = TotoWrapper(model)
    forecaster = wrapper._forecaster
    real = forecaster.forecast
    sizes = []

    def tight(inputs, prediction_length, num_samples=None, samples_per_batch=10, **kwargs):
        sizes.append(samples_per_batch)
        if samples_per_batch > 3:
            raise MemoryError("simulated")
        return real(inputs, prediction_length, num_samples=num_samples,
                    samples_per_batch=samples_per_batch, **kwargs)

    monkeypatch.setattr(forecaster, "forecast", tight)
    torch.manual_seed(2)
    got = wrapper.forecast(_batch(), prediction_length=8, num_samples=12, samples_per_batch=12)
    assert sizes == [12, 6, 3]  # each a divisor of 12, as upstream needs
    torch.manual_seed(2)
    want = TotoForecaster(model.model).forecast(_batch(), prediction_length=8, num_samples=12,
                                               samples_per_batch=3)
    _close(got.samples, want.samples)


def _with(inputs, **fields):
    return inputs._replace(**fields)  # MaskedTimeseries is a NamedTuple


@pytest.mark.parametrize("change,error,match", [
    (lambda x: _with(x, series=x.series.clone().index_fill_(-1, torch.tensor([4]), float("nan"))),
     ValueError, r"inputs.series holds nan at index \(0, 0, 4\)"),
    (lambda x: _with(x, padding_mask=torch.zeros_like(x.padding_mask)), ValueError,
     "series row 0 has no valid step"),
    (lambda x: _with(x, id_mask=x.id_mask[..., :10]), ValueError,
     r"inputs.id_mask has shape \(2, 3, 10\)"),
    (lambda x: x.series, TypeError, "MaskedTimeseries"),
])
def test_bad_inputs_are_refused_naming_them(model, change, error, match):
    wrapper = TotoWrapper(model)
    with pytest.raises(error, match=match):
        wrapper.forecast(change(_batch()), prediction_length=8)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(prediction_length=0), ValueError, "prediction_length must be positive"),
    (dict(prediction_length=2.5), TypeError, "prediction_length"),
    (dict(prediction_length=8, num_samples=0), ValueError, "num_samples"),
    (dict(prediction_length=8, num_samples=10, samples_per_batch=4), ValueError,
     "samples_per_batch must divide num_samples"),
])
def test_bad_arguments_are_refused_naming_them(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        TotoWrapper(model).forecast(_batch(), **kwargs)


def test_a_model_that_is_not_totos_is_a_type_error():
    with pytest.raises(TypeError, match="Toto or TotoBackbone"):
        TotoWrapper(torch.nn.Linear(2, 2))


def test_variate_labels_run_upstream_and_say_why():
    model = toto_model(seed=1)
    model.model.enable_variate_labels()
    wrapper = TotoWrapper(model)
    assert not wrapper.native and "variate labels" in wrapper.reason
