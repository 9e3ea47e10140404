"""Forecasting wrappers: upstream time-series foundation models on infermode's native core.

    from infermode.forecast import Chronos2Wrapper, KronosWrapper
    c = Chronos2Wrapper(pipeline)                           # an upstream Chronos2Pipeline
    c.predict(inputs, prediction_length=64)
    k = KronosWrapper(model, tokenizer, max_context=512)   # upstream Kronos objects
    k.predict(df, x_timestamp, y_timestamp, pred_len=120)

Each wrapper keeps upstream's pre- and post-processing and arguments, runs the transformer
natively on the CPU, and falls back to the upstream PyTorch model under ``no_grad`` on a device
the core does not run. Every wrapper also returns the common :class:`Forecast`.
"""
from infermode.forecast.chronos2 import Chronos2Wrapper
from infermode.forecast.kronos import KronosWrapper
from infermode.forecast.result import Forecast
from infermode.forecast.toto import TotoWrapper

__all__ = ["Chronos2Wrapper", "Forecast", "KronosWrapper", "TotoWrapper"]
