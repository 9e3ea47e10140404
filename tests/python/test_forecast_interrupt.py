"""Ctrl-C during a forecast stops it within a step (a block of the native stack, or one decoding
step) and leaves the wrapper usable: the next forecast is upstream's again."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from toto.inference.forecaster import TotoForecaster

from _forecast_models import (candles, chronos2_pipeline, future_stamps, kronos_pair,
                              masked_timeseries, seasonal_series, toto_model)
from infermode.forecast import Chronos2Wrapper, KronosWrapper, TotoWrapper

# Generous for a loaded CI machine; a block or a step of these models takes milliseconds.
LATENCY_S = 2.0


def _interrupted(run) -> float:
    """Calls run() until SIGINT (sent from another thread after 0.3 s) stops it; returns the
    seconds from the signal to the KeyboardInterrupt."""
    sent = []

    def send() -> None:
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(0.3, send)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                run()
    finally:
        timer.cancel()
    assert sent, "the forecast loop ended before the signal was sent"
    return time.monotonic() - sent[0]


def test_ctrl_c_stops_chronos2_inside_its_encoder_and_the_wrapper_still_forecasts():
    # One encoder pass of seconds (48 blocks over 1024 series), which the stack stops between
    # two blocks (~0.1 s each): without that check the signal waits for the whole pass.
    pipeline = chronos2_pipeline(layers=48, d_model=128, heads=4, d_kv=32)
    wrapper = Chronos2Wrapper(pipeline)
    x = torch.from_numpy(seasonal_series(1024, 250, seed=1)[:, None])
    assert _interrupted(lambda: wrapper.predict(x, prediction_length=64,
                                                batch_size=1024)) < 1.0
    small = x[:3, :, :80]
    for got, want in zip(wrapper.predict(small, prediction_length=16),
                         pipeline.predict(small, prediction_length=16)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_ctrl_c_stops_toto_within_a_step_and_the_wrapper_still_forecasts():
    model = toto_model()
    wrapper = TotoWrapper(model)
    inputs = masked_timeseries(seasonal_series(3, 64, seed=2))
    assert _interrupted(lambda: wrapper.forecast(inputs, prediction_length=256, num_samples=8,
                                                 samples_per_batch=8)) < LATENCY_S
    torch.manual_seed(4)
    got = wrapper.forecast(inputs, prediction_length=16, num_samples=4, samples_per_batch=2)
    torch.manual_seed(4)
    want = TotoForecaster(model.model).forecast(inputs, prediction_length=16, num_samples=4,
                                               samples_per_batch=2)
    assert float((got.samples - want.samples).abs().max()) <= 1e-4 * max(
        1.0, float(want.samples.abs().max()))


def test_ctrl_c_stops_kronos_within_a_step_and_the_wrapper_still_forecasts():
    from model import kronos as upstream

    model, tokenizer = kronos_pair()
    wrapper = KronosWrapper(model, tokenizer, max_context=256)
    df, stamps = candles(40)
    ys = future_stamps(stamps, 200)
    assert _interrupted(lambda: wrapper.predict(df, stamps, ys, pred_len=200,
                                                top_k=1)) < LATENCY_S
    g = torch.Generator().manual_seed(0)
    x, x_stamp = torch.randn(2, 20, 6, generator=g), torch.zeros(2, 20, 5)
    y_stamp = torch.zeros(2, 8, 5)
    got = wrapper.auto_regressive_inference(x, x_stamp, y_stamp, 8, clip=5, T=1.0, top_k=1,
                                            top_p=0.99, sample_count=1)
    want = upstream.auto_regressive_inference(tokenizer, model, x, x_stamp, y_stamp, 256, 8, 5,
                                              1.0, 1, 0.99, 1)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
