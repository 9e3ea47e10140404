"""Chronos-2 on infermode's native transformer stack.

Upstream's ``Chronos2Pipeline`` does everything around the encoder (scaling, patching, the patch
embeddings, batching tasks with their covariates, long horizons, quantile interpolation,
DataFrames), and all of that stays upstream's. The encoder (per block: time attention along each
series, group attention across the series of one task at every time step, a ReLU MLP) is nearly
all of the work; it runs natively. The wrapper's pipeline holds a shallow copy of the user's
model, sharing its parameters, whose encoder is the native stack: the user's model is never
changed (the native stack packs its own copy of the encoder's matrices; see forecast._stack).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from infermode.forecast._stack import NativeStack, block_config
from infermode.forecast._wrapper import (check_count, choose_path, eval_view, log_path,
                                         module_device, retry_shrinking)
from infermode.forecast.result import Forecast

T = TypeVar("T")


def _encoder_tensors(encoder: Any) -> dict:
    """Upstream ``Chronos2Encoder`` parameters under the native stack's names."""
    tensors = {"final_norm.weight": encoder.final_layer_norm.weight}
    for i, block in enumerate(encoder.block):
        time, group, feed_forward = block.layer
        p = f"blocks.{i}."
        for ours, theirs in (("norm1", time), ("group_norm", group)):
            tensors[p + ours + ".weight"] = theirs.layer_norm.weight
        for prefix, attention in (("attention", time), ("group_attention", group)):
            for name in ("q", "k", "v", "o"):
                tensors[f"{p}{prefix}.{name}.weight"] = getattr(attention.self_attention,
                                                                name).weight
        tensors[p + "norm2.weight"] = feed_forward.layer_norm.weight
        tensors[p + "mlp.up.weight"] = feed_forward.mlp.wi.weight
        tensors[p + "mlp.down.weight"] = feed_forward.mlp.wo.weight
    return tensors


def _unsupported(config: Any) -> Optional[str]:
    """Why the native encoder cannot run this model's config, or None."""
    if getattr(config, "dense_act_fn", "relu") != "relu":
        return f"its MLP activation is {config.dense_act_fn!r}; the native encoder runs 'relu'"
    return None


def _native_encoder(model: Any, threads: Optional[int]) -> Any:
    """An ``nn.Module`` computing what ``model.encoder`` computes (in eval mode), natively."""
    import torch
    from chronos.chronos2.model import Chronos2EncoderOutput

    config = model.config
    blocks = len(model.encoder.block)
    stack = NativeStack(
        hidden=config.d_model, heads=config.num_heads, head_dim=config.d_kv,
        intermediate=config.d_ff, norm_eps=config.layer_norm_epsilon,
        blocks=[block_config(causal=False, scaled=False, rope_theta=config.rope_theta,
                             group_attention=True, mlp="relu")] * blocks,
        tensors=lambda: _encoder_tensors(model.encoder), parameters=model.encoder.parameters(),
        final_norm=True, threads=threads)
    upstream = eval_view(model.encoder)

    class NativeEncoder(torch.nn.Module):
        """Chronos-2's encoder on the native stack. Masks: a padded patch (attention_mask 0) is
        hidden from time and group attention, as upstream's finfo.min masks hide it."""

        def __init__(self) -> None:
            super().__init__()
            self.stack = stack

        def forward(self, inputs_embeds: Any, *, group_ids: Any, attention_mask: Any = None,
                    position_ids: Any = None, output_attentions: bool = False) -> Any:
            if output_attentions or position_ids is not None:  # not what prediction asks for
                return upstream(inputs_embeds, group_ids=group_ids, attention_mask=attention_mask,
                                position_ids=position_ids, output_attentions=output_attentions)
            x = inputs_embeds.detach().numpy()
            key_bias = None
            if attention_mask is not None:
                valid = attention_mask.detach().numpy() > 0
                key_bias = np.where(valid, np.float32(0), np.float32(-np.inf))
            out = self.stack(x, key_bias=key_bias, group=group_ids.detach().numpy())
            return Chronos2EncoderOutput(last_hidden_state=torch.from_numpy(out),
                                         all_time_self_attn_weights=(),
                                         all_group_self_attn_weights=())

    return NativeEncoder()


def _with_encoder(model: Any, encoder: Any) -> Any:
    """An eval-mode view of ``model`` (see :func:`eval_view`) whose encoder is ``encoder``."""
    clone = eval_view(model)
    clone._modules["encoder"] = encoder
    return clone


class Chronos2Wrapper:
    """Upstream's ``Chronos2Pipeline``, with its encoder running natively on the CPU.

        from chronos import Chronos2Pipeline
        c = Chronos2Wrapper(Chronos2Pipeline.from_pretrained("path/to/chronos-2"))
        quantiles = c.predict(inputs, prediction_length=64)       # as upstream's
        forecast = c.forecast(inputs, prediction_length=64)       # a Forecast

    ``predict``, ``predict_quantiles`` and ``predict_df`` take upstream's arguments (covariates,
    groups, ``cross_learning``, ``context_length``, ...) and return what upstream returns. On a
    device the core does not run, or with parameters that are not float32, upstream's pipeline
    runs under ``no_grad``. A call that runs out of memory is retried with half the batch.
    Dropout never applies, whatever mode the model is in: both paths run an eval-mode view of it
    that shares its parameters.
    """

    def __init__(self, pipeline: Any, device: Any = None, threads: Optional[int] = None):
        from chronos.chronos2 import Chronos2Pipeline

        if not isinstance(pipeline, Chronos2Pipeline):
            raise TypeError("Chronos2Wrapper wraps a chronos.Chronos2Pipeline, got "
                            f"{type(pipeline).__name__}")
        self.pipeline = pipeline
        model = pipeline.model
        self.device = device if device is not None else module_device(model)
        self.native, self.reason = choose_path([model], self.device)
        why_not = _unsupported(model.config)
        if self.native and why_not:
            self.native, self.reason = False, why_not
        log_path("Chronos2Wrapper", self.native, self.reason)
        # Both paths forecast with an eval-mode view of the model (no dropout), which leaves the
        # user's model and its mode as they were.
        if self.native:
            self._active = Chronos2Pipeline(_with_encoder(model, _native_encoder(model, threads)))
        else:
            self._active = Chronos2Pipeline(eval_view(model))

    def _run(self, call: Callable[[Any, int], T], batch_size: int, what: str) -> T:
        """``call(pipeline, batch_size)``, halving the batch while it runs out of memory."""
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return retry_shrinking(lambda size: call(self._active, size), int(batch_size),
                               lambda size: size // 2 if size > 1 else None,
                               f"Chronos2Wrapper.{what}", "batch_size")

    # upstream's API ---------------------------------------------------------------------------

    def predict(self, inputs: Any, prediction_length: Optional[int] = None,
                batch_size: int = 256, **kwargs: Any) -> List[Any]:
        """As ``Chronos2Pipeline.predict``: per task, a tensor [targets, quantiles, horizon]."""
        _check_horizon(prediction_length)
        _check_targets(inputs)
        return self._run(lambda p, size: p.predict(inputs, prediction_length=prediction_length,
                                                   batch_size=size, **kwargs),
                         batch_size, "predict")

    def predict_quantiles(self, inputs: Any, prediction_length: Optional[int] = None,
                          quantile_levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
                                                              0.8, 0.9),
                          batch_size: int = 256, **kwargs: Any) -> Tuple[List[Any], List[Any]]:
        """As ``Chronos2Pipeline.predict_quantiles``: (quantiles [targets, horizon, levels],
        mean [targets, horizon]) per task."""
        _check_horizon(prediction_length)
        _check_targets(inputs)
        return self._run(
            lambda p, size: p.predict_quantiles(inputs, prediction_length=prediction_length,
                                                quantile_levels=list(quantile_levels),
                                                batch_size=size, **kwargs),
            batch_size, "predict_quantiles")

    def predict_df(self, df: Any, future_df: Any = None, batch_size: int = 256,
                   **kwargs: Any) -> Any:
        """As ``Chronos2Pipeline.predict_df``: a long DataFrame with ``predictions`` (the median)
        and one column per quantile level."""
        _check_horizon(kwargs.get("prediction_length"))
        _check_frame_targets(df, kwargs.get("id_column", "item_id"),
                             kwargs.get("target", "target"))
        return self._run(lambda p, size: p.predict_df(df, future_df=future_df, batch_size=size,
                                                      **kwargs),
                         batch_size, "predict_df")

    # the common result -------------------------------------------------------------------------

    def forecast(self, inputs: Any, prediction_length: Optional[int] = None,
                 batch_size: int = 256, **kwargs: Any) -> Forecast:
        """A :class:`Forecast` of every task in ``inputs`` (as ``predict`` takes them) with the
        model's own quantile levels. Tasks must share their number of targets to be stacked."""
        predictions = self.predict(inputs, prediction_length=prediction_length,
                                   batch_size=batch_size, **kwargs)
        shapes = {tuple(p.shape[::2]) for p in predictions}
        if len(shapes) > 1:
            raise ValueError(f"the tasks' forecasts have different shapes (targets, horizon): "
                             f"{sorted(shapes)}; call forecast() on each task, or predict()")
        values = np.stack([p.numpy().transpose(0, 2, 1) for p in predictions])
        levels = [float(q) for q in self.pipeline.quantiles]
        return Forecast(quantile_levels=levels, quantile_values=values,
                        history=_history(inputs, values.shape[1]), model="Chronos-2")


def _history(inputs: Any, targets: int) -> Optional[np.ndarray]:
    """The targets' past [tasks, targets, time] when the inputs are one array of equal-length
    series (what ``plot`` draws); None for other input forms."""
    try:
        array = np.asarray(inputs.numpy() if hasattr(inputs, "numpy") else inputs,
                           dtype=np.float32)
    except (TypeError, ValueError):
        return None
    if array.ndim == 1:
        array = array[None, None]
    elif array.ndim == 2:
        array = array[:, None]
    if array.ndim != 3 or array.shape[1] < targets:
        return None
    return array[:, :targets]


def _check_horizon(prediction_length: Any) -> None:
    if prediction_length is not None:  # None: upstream's default, the model's own horizon
        check_count(prediction_length, "prediction_length")


def _each_target(inputs: Any) -> Iterator[Tuple[str, Any]]:
    """(name, target) of every task in the input forms ``predict`` takes."""
    if hasattr(inputs, "ndim") and getattr(inputs, "ndim") == 3:  # [tasks, variates, time]
        for i in range(len(inputs)):
            yield f"inputs[{i}]", inputs[i]
    elif isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        for i, item in enumerate(inputs):
            if isinstance(item, Mapping):
                if "target" not in item:
                    raise ValueError(f"inputs[{i}] has no 'target' (its keys: "
                                     f"{sorted(map(str, item))})")
                yield f"inputs[{i}]['target']", item["target"]
            elif hasattr(item, "ndim") or isinstance(item, (list, tuple)):
                yield f"inputs[{i}]", item


def _check_targets(inputs: Any) -> None:
    """Refuses, naming the task and row, what upstream would forecast silently wrong: a target
    without one observed value (upstream forecasts from zeros) or holding +-inf (NaN out)."""
    for name, target in _each_target(inputs):
        values = target.detach().cpu().numpy() if hasattr(target, "detach") else target
        try:
            values = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            continue  # not numbers: upstream names what it expected
        if values.ndim not in (1, 2):
            continue  # upstream names the shape it expected
        if values.shape[-1] == 0:
            raise ValueError(f"{name} has no time steps")
        rows = values.reshape(-1, values.shape[-1])
        for r, row in enumerate(rows):
            where = name if values.ndim == 1 else f"{name}[{r}]"
            if np.isnan(row).all():
                raise ValueError(f"{where} is all NaN: there is nothing to forecast from")
            infinite = np.flatnonzero(np.isinf(row))
            if infinite.size:
                raise ValueError(f"{where} holds {row[infinite[0]]} at step {infinite[0]}; "
                                 "mark missing values with NaN")


def _check_frame_targets(df: Any, id_column: str, target: Any) -> None:
    """The DataFrame form of :func:`_check_targets`: per item, each target column."""
    columns = [target] if isinstance(target, str) else list(target)
    if id_column not in getattr(df, "columns", ()) or any(c not in df.columns for c in columns):
        return  # upstream names the missing columns
    for column in columns:
        observed = df[column].notna().groupby(df[id_column]).any()
        if not observed.all():
            item = observed.index[~observed.to_numpy()][0]
            raise ValueError(f"df: item {item!r} has no observed {column!r} value (all NaN): "
                             "there is nothing to forecast from")
