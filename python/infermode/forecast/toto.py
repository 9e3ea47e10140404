"""Toto (Datadog's time-series foundation model) on infermode's native transformer stack.

Upstream's ``TotoForecaster`` keeps its decoding loop, its causal scaler, patch embedding,
unembedding, Student-t mixture and sampling (so ``torch.manual_seed`` draws the same paths); the
transformer (time-wise layers with RoPE + xPos over a KV cache, space-wise layers across the
variates of a series) runs natively. The forecaster holds an eval-mode view of the user's
backbone (the same parameters; the user's model and its mode untouched) whose transformer is the
native stack and whose KV cache is the stack's.

Toto fuses q, k and v into one matrix whose rows run (q|k|v, head_dim, head) with the head
fastest; the stack takes head-major q, k, v, so those matrices (and biases) are re-laid once, the
only weights the wrapper copies (3 x embed^2 floats per layer).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from infermode.forecast._stack import NativeStack, block_config
from infermode.forecast._wrapper import (check_count, choose_path, eval_view, log_path,
                                         logger, module_device, retry_shrinking)
from infermode.forecast.result import Forecast


# Toto builds its rotary embedding with rotary-embedding-torch's default theta (_unsupported
# checks the frequencies against it).
ROPE_THETA = 10000.0


def _stack_tensors(layers: Any, heads: int) -> Dict[str, Any]:
    """Upstream TransformerLayers' parameters under the native stack's names."""
    from toto.model.attention import AttentionAxis

    tensors: Dict[str, Any] = {}
    for i, layer in enumerate(layers):
        p = f"blocks.{i}."
        time = layer.attention_axis == AttentionAxis.TIME
        attention, norm = ("attention", "norm1") if time else ("group_attention", "group_norm")
        tensors[p + norm + ".weight"] = layer.norm1.scale
        embed = layer.embed_dim
        head_dim = embed // heads
        # rows (qkv, head_dim, heads) -> (qkv, heads, head_dim)
        weight = layer.attention.wQKV.weight.detach()
        weight = weight.reshape(3, head_dim, heads, embed).transpose(1, 2).reshape(3, embed, embed)
        bias = layer.attention.wQKV.bias.detach().reshape(3, head_dim, heads).transpose(1, 2)
        for j, name in enumerate("qkv"):
            tensors[f"{p}{attention}.{name}.weight"] = weight[j].contiguous()
            tensors[f"{p}{attention}.{name}.bias"] = bias[j].reshape(embed).contiguous()
        tensors[f"{p}{attention}.o.weight"] = layer.attention.wO.weight
        tensors[f"{p}{attention}.o.bias"] = layer.attention.wO.bias
        tensors[p + "norm2.weight"] = layer.norm2.scale
        up, down = layer.mlp[0], layer.mlp[2]
        hidden = down.in_features
        # SwiGLU's input splits as (gate, value): the gate is the first half of the rows.
        tensors[p + "mlp.gate.weight"] = up.weight.detach()[:hidden]
        tensors[p + "mlp.up.weight"] = up.weight.detach()[hidden:]
        tensors[p + "mlp.gate.bias"] = up.bias.detach()[:hidden]
        tensors[p + "mlp.up.bias"] = up.bias.detach()[hidden:]
        tensors[p + "mlp.down.weight"] = down.weight
        tensors[p + "mlp.down.bias"] = down.bias
    return tensors


def _unsupported(backbone: Any) -> Optional[str]:
    """Why the native stack cannot run this backbone's transformer, or None."""
    from toto.model.feed_forward import SwiGLU
    from toto.model.util import RMSNorm

    transformer = backbone.transformer
    if getattr(transformer, "fusion", None) is not None:
        return ("its variate labels are enabled (enable_variate_labels): the native stack does "
                "not run the label fusion")
    for i, layer in enumerate(transformer.layers):
        if not (isinstance(layer.norm1, RMSNorm) and isinstance(layer.norm2, RMSNorm)):
            return f"layer {i} uses LayerNorm; the native stack runs Toto's RMSNorm"
        if len(layer.mlp) != 4 or not isinstance(layer.mlp[1], SwiGLU):
            return f"layer {i}'s MLP is xformers' fused SwiGLU; the native stack reads the plain one"
    rotary = transformer.rotary_emb
    if not getattr(rotary, "use_xpos", False) or getattr(rotary, "interpolate_factor", 1) != 1:
        return "its rotary embedding is not plain xPos RoPE"
    dim = 2 * rotary.freqs.numel()
    standard = 1.0 / ROPE_THETA ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
    if not np.allclose(rotary.freqs.detach().cpu().numpy(), standard, rtol=1e-6, atol=0):
        return "its rotary frequencies are not RoPE's with theta 10000 (Toto's)"
    return None


def _native_stack(backbone: Any, threads: Optional[int]) -> NativeStack:
    from toto.model.attention import AttentionAxis

    transformer = backbone.transformer
    first = transformer.layers[0]
    heads = first.num_heads
    rotary = transformer.rotary_emb
    blocks = []
    for layer in transformer.layers:
        if layer.attention_axis == AttentionAxis.TIME:
            blocks.append(block_config(causal=True, attention_bias=True, mlp_bias=True,
                                       rope="interleaved_xpos", rope_theta=ROPE_THETA,
                                       xpos_scale_base=float(rotary.scale_base)))
        else:
            blocks.append(block_config(causal=True, attention_bias=True, mlp_bias=True,
                                       rope="none", time_attention=False,
                                       group_attention=True))
    return NativeStack(hidden=first.embed_dim, heads=heads, intermediate=first.mlp_hidden_dim,
                       norm_eps=first.norm1.eps, blocks=blocks,
                       tensors=lambda: _stack_tensors(transformer.layers, heads),
                       parameters=transformer.layers.parameters(), threads=threads)


class _NativeCache:
    """What Toto's backbone asks of its KV cache (``current_len``, ``seq_len``, ``reset``), over
    the native stack's cache for batch x variates sequences."""

    def __init__(self, stack: NativeStack, rows: int, capacity: int) -> None:
        self.stack, self.rows, self.capacity = stack, rows, capacity
        self.cache = stack.new_cache(rows, capacity)

    def current_len(self, cache_idx: int = 0) -> int:
        return self.cache.length

    def seq_len(self, layer_idx: int = 0) -> int:
        return self.cache.length

    def reset(self) -> None:
        self.cache = self.stack.new_cache(self.rows, self.capacity)

    def with_rows_repeated(self, times: int) -> "_NativeCache":
        """A cache of rows * times rows, ``[a, b, a, b, ...]``, each holding this one's
        positions so far."""
        clone = _NativeCache.__new__(_NativeCache)
        clone.stack, clone.rows, clone.capacity = self.stack, self.rows * times, self.capacity
        clone.cache = self.cache.repeat(times)
        return clone


def _groups(id_mask: Any) -> np.ndarray:
    """One group per (series, id): int64 [batch * variates], from id_mask [batch, variates, seq]
    (the ids of the first patch; the wrapper checked they never change along time)."""
    ids = id_mask[..., 0].detach().cpu().numpy().astype(np.int64)
    ids = ids - ids.min()
    span = int(ids.max()) + 1
    return (np.arange(ids.shape[0])[:, None] * span + ids).reshape(-1)


def _native_backbone(backbone: Any, threads: Optional[int]) -> Any:
    """An eval-mode view of ``backbone`` whose transformer and KV cache are native."""
    import torch

    stack = _native_stack(backbone, threads)
    upstream = eval_view(backbone.transformer)

    class NativeTransformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = upstream.layers  # read by upstream code (num_heads, layer types)

        def forward(self, inputs: Any, id_mask: Any, kv_cache: Any = None,
                    variate_label_embeds: Any = None) -> Any:
            if variate_label_embeds is not None and upstream.fusion is not None:
                raise ValueError("variate labels (Toto.enable_variate_labels) are not supported "
                                 "by the native stack; wrap a model without them")
            batch, variates, seq, embed = inputs.shape
            x = inputs.detach().reshape(batch * variates, seq, embed).numpy()
            cache = kv_cache.cache if kv_cache is not None else None
            out = stack(x, cache, group=_groups(id_mask))
            return torch.from_numpy(out).reshape(batch, variates, seq, embed)

    view = eval_view(backbone)
    view._modules["transformer"] = NativeTransformer()
    stride = backbone.patch_embed.stride

    def allocate_kv_cache(batch_size: int, num_variates: int, max_time_steps: int,
                          device: Any = None, dtype: Any = None) -> _NativeCache:
        # Upstream's max_seq_len, in patches (the device and dtype are the CPU's float32).
        return _NativeCache(stack, batch_size * num_variates, math.ceil(max_time_steps / stride))

    view.allocate_kv_cache = allocate_kv_cache
    return view


def _shared_context_forecaster(view: Any) -> Any:
    """Upstream's TotoForecaster whose sampling encodes each series' context once.

    Upstream repeats every series ``samples_per_batch`` times and re-encodes the whole context
    for every sampling batch, though every path's context (and so its keys, values and first
    distribution) is the same. Here the context is encoded once for the series themselves, and
    each sampling batch starts from a copy of that cache, rows repeated as upstream orders them
    ("(samples batch)"). The first step's distribution is the shared one, repeated, so its draws
    consume the random stream exactly as upstream's do; later steps are upstream's loop.
    """
    import torch
    from einops import repeat
    from toto.data.util.dataset import replace_extreme_values
    from toto.inference.forecaster import TotoForecaster

    class SharedContextForecaster(TotoForecaster):
        @torch.no_grad()
        def generate_samples(self, inputs, prediction_length, num_samples, timestamp_seconds,
                             time_interval_seconds, input_padding_mask=None, id_mask=None,
                             sampling_batch_size=10, use_kv_cache=False,
                             future_exogenous_variables=None, num_exogenous_variables=0):
            if not use_kv_cache:  # every step re-runs the whole series: nothing to share
                return super().generate_samples(
                    inputs, prediction_length, num_samples, timestamp_seconds,
                    time_interval_seconds, input_padding_mask, id_mask, sampling_batch_size,
                    use_kv_cache, future_exogenous_variables, num_exogenous_variables)
            if input_padding_mask is None:
                input_padding_mask = torch.ones_like(inputs, dtype=torch.bool)
            if id_mask is None:
                id_mask = torch.zeros_like(inputs, dtype=torch.int)
            if future_exogenous_variables is not None:
                self.assert_ev_compatibility(inputs, future_exogenous_variables,
                                             prediction_length, num_exogenous_variables)
            assert num_samples % sampling_batch_size == 0, \
                "num_samples must be divisible by sampling_batch_size"
            model = self.model
            patch = model.patch_embed.patch_size
            rounded_steps = int(np.ceil(prediction_length / patch) * patch)
            if rounded_steps > prediction_length and future_exogenous_variables is not None:
                future_exogenous_variables = self.round_ft_ev(future_exogenous_variables,
                                                              rounded_steps)
            start, end = inputs.shape[-1], inputs.shape[-1] + prediction_length
            prefix = inputs.shape[-1]
            batch, variates = inputs.shape[:2]

            # The context, once per series.
            context_cache = model.allocate_kv_cache(batch, variates, prefix + rounded_steps)
            first, loc, scale = model(inputs=inputs, input_padding_mask=input_padding_mask,
                                      id_mask=id_mask, kv_cache=context_cache,
                                      scaling_prefix_length=prefix,
                                      num_exogenous_variables=num_exogenous_variables)
            paths = sampling_batch_size

            def per_path(t: Any) -> Any:
                return repeat(t, "b ... -> (s b) ...", s=paths)

            # The same for every sampling batch: its paths start from these (each step's cat
            # makes new tensors, so they are only read).
            first_step = self.create_affine_transformed(_repeated_mixture(first, per_path),
                                                        per_path(loc), per_path(scale))
            context_inputs, context_padding = per_path(inputs), per_path(input_padding_mask)
            context_ids = per_path(id_mask)
            dummy_padding = torch.ones((batch * paths, variates, patch), dtype=torch.bool)
            dummy_id_mask = repeat(id_mask[:, :, -1:], "b v 1 -> (s b) v p", s=paths, p=patch)
            exogenous = (per_path(future_exogenous_variables)
                         if future_exogenous_variables is not None else None)
            all_samples = []
            for _ in range(num_samples // paths):
                cache = context_cache.with_rows_repeated(paths)
                batch_inputs, batch_padding, batch_ids = context_inputs, context_padding, \
                    context_ids
                distr = first_step
                for idx in range(rounded_steps // patch):
                    if idx > 0:
                        base, step_loc, step_scale = model(
                            inputs=batch_inputs, input_padding_mask=batch_padding,
                            id_mask=batch_ids, kv_cache=cache, scaling_prefix_length=prefix,
                            num_exogenous_variables=num_exogenous_variables)
                        distr = self.create_affine_transformed(base, step_loc, step_scale)
                    samples = replace_extreme_values(distr.sample()[:, :, -patch:])
                    if exogenous is not None:
                        samples[:, -num_exogenous_variables:] = \
                            exogenous[:, :, idx * patch:(idx + 1) * patch]
                    batch_inputs = torch.cat([batch_inputs, samples], dim=-1)
                    batch_ids = torch.cat([batch_ids, dummy_id_mask], dim=-1)
                    batch_padding = torch.cat([batch_padding, dummy_padding], dim=-1)
                all_samples.append(batch_inputs)
            outputs = torch.cat(all_samples, dim=0)
            return repeat(outputs, "(s b) v t -> b v t s", s=num_samples)[:, :, start:end, :]

    return SharedContextForecaster(view)


def _repeated_mixture(distribution: Any, per_path: Any) -> Any:
    """Toto's Student-t mixture with every parameter repeated per path: the same values, so the
    same draws, as the distribution upstream computes on the repeated series."""
    import torch

    mixture = distribution.mixture_distribution
    components = distribution.component_distribution
    repeated = torch.distributions.Categorical(probs=per_path(mixture.probs))
    # Categorical normalises its probs again; keep upstream's (already normalised) ones exactly.
    repeated.probs = per_path(mixture.probs)
    student = type(components)(per_path(components.df), per_path(components.loc),
                                per_path(components.scale))
    return torch.distributions.MixtureSameFamily(repeated, student)


class TotoWrapper:
    """Upstream's ``TotoForecaster``, with Toto's transformer running natively on the CPU.

        from toto.model.toto import Toto
        t = TotoWrapper(Toto.from_pretrained("path/to/Toto-Open-Base-1.0"))
        out = t.forecast(inputs, prediction_length=96, num_samples=256)  # as upstream's
        f = t.predict(inputs, prediction_length=96, num_samples=256)     # a Forecast

    ``forecast`` takes upstream's arguments (a ``MaskedTimeseries``, ``num_samples``,
    ``samples_per_batch``, ``use_kv_cache``, ``future_exogenous_variables``) and returns
    upstream's ``Forecast`` (``mean``, ``samples``, ``quantile()``, ``median``, ``std``);
    ``predict`` returns infermode's :class:`~infermode.forecast.Forecast` (Toto's own method is
    already called ``forecast``). KV cache semantics are upstream's: with ``use_kv_cache=True``
    each cached key keeps the xPos scale of the pass that made it, as upstream's do. On a device
    the core does not run, with parameters that are not float32, or for layers the stack lacks,
    upstream's forecaster runs under ``no_grad``. Out of memory halves ``samples_per_batch``.
    """

    def __init__(self, model: Any, device: Any = None, threads: Optional[int] = None):
        from toto.inference.forecaster import TotoForecaster
        from toto.model.backbone import TotoBackbone

        backbone = getattr(model, "model", model)
        if not isinstance(backbone, TotoBackbone):
            raise TypeError(f"TotoWrapper wraps a toto Toto or TotoBackbone, got "
                            f"{type(model).__name__}")
        self.model = backbone
        self.device = device if device is not None else module_device(backbone)
        self.native, self.reason = choose_path([backbone], self.device)
        why_not = _unsupported(backbone) if self.native else None
        if why_not:
            self.native, self.reason = False, why_not
        log_path("TotoWrapper", self.native, self.reason)
        self._upstream = TotoForecaster(eval_view(backbone))
        self._forecaster = (_shared_context_forecaster(_native_backbone(backbone, threads))
                            if self.native else self._upstream)

    def forecast(self, inputs: Any, prediction_length: int, num_samples: Optional[int] = None,
                 samples_per_batch: int = 10, use_kv_cache: bool = True,
                 future_exogenous_variables: Any = None) -> Any:
        """As ``TotoForecaster.forecast``: upstream's ``Forecast`` with ``mean`` [batch,
        variates, prediction_length] and, with ``num_samples``, ``samples`` [..., num_samples]."""
        _check_inputs(inputs, prediction_length, num_samples, samples_per_batch)
        forecaster = self._forecaster
        if self.native and not _ids_constant(inputs):
            logger.warning("TotoWrapper: id_mask changes along time; this forecast runs "
                           "upstream's code (the native stack takes one id per variate)")
            forecaster = self._upstream
        return retry_shrinking(
            lambda size: forecaster.forecast(
                inputs, prediction_length, num_samples=num_samples, samples_per_batch=size,
                use_kv_cache=use_kv_cache, future_exogenous_variables=future_exogenous_variables),
            samples_per_batch if num_samples is not None else 1,
            lambda size: _smaller_divisor(num_samples, size), "TotoWrapper.forecast",
            "samples_per_batch")

    def predict(self, inputs: Any, prediction_length: int, num_samples: Optional[int] = None,
                samples_per_batch: int = 10, use_kv_cache: bool = True,
                future_exogenous_variables: Any = None) -> Forecast:
        """:meth:`forecast` as infermode's :class:`Forecast`: the sample paths [series,
        variates, horizon, num_samples] (or the mean alone without ``num_samples``) with the
        series' history."""
        out = self.forecast(inputs, prediction_length, num_samples, samples_per_batch,
                            use_kv_cache, future_exogenous_variables)
        history = inputs.series.detach().cpu().numpy()
        if history.ndim == 2:
            history = history[None]
        if out.samples is None:
            return Forecast(mean_values=out.mean.cpu().numpy(), history=history, model="Toto")
        return Forecast(samples=out.samples.cpu().numpy(), history=history, model="Toto")


def _smaller_divisor(num_samples: Optional[int], size: int) -> Optional[int]:
    """The largest divisor of num_samples at most size // 2 (upstream needs samples_per_batch to
    divide num_samples), or None when no smaller batch exists."""
    if num_samples is None:
        return None
    for candidate in range(size // 2, 0, -1):
        if num_samples % candidate == 0:
            return candidate
    return None


def _ids_constant(inputs: Any) -> bool:
    ids = getattr(inputs, "id_mask", None)
    return ids is None or bool((ids == ids[..., :1]).all())


def _check_inputs(inputs: Any, prediction_length: Any, num_samples: Any,
                  samples_per_batch: Any) -> None:
    """Refuses, naming the argument, what upstream would assert on or forecast silently wrong."""
    import torch

    check_count(prediction_length, "prediction_length")
    if num_samples is not None:
        check_count(num_samples, "num_samples")
        check_count(samples_per_batch, "samples_per_batch")
        if num_samples % samples_per_batch:
            raise ValueError(f"samples_per_batch must divide num_samples ({num_samples}), got "
                             f"{samples_per_batch}")
    series = getattr(inputs, "series", None)
    if not isinstance(series, torch.Tensor):
        raise TypeError(f"inputs must be a toto MaskedTimeseries, got {type(inputs).__name__}")
    if series.ndim not in (2, 3) or series.shape[-1] == 0:
        raise ValueError(f"inputs.series must be [variates, time] or [batch, variates, time] "
                         f"with at least one step, got shape {tuple(series.shape)}")
    for name in ("padding_mask", "id_mask", "timestamp_seconds"):
        other = getattr(inputs, name, None)
        if other is not None and tuple(other.shape) != tuple(series.shape):
            raise ValueError(f"inputs.{name} has shape {tuple(other.shape)}; inputs.series has "
                             f"{tuple(series.shape)}")
    values = series.detach().cpu().double()
    valid = inputs.padding_mask.detach().cpu().bool() if inputs.padding_mask is not None \
        else torch.ones_like(values, dtype=torch.bool)
    bad = ~torch.isfinite(values) & valid
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"inputs.series holds {float(values[where])} at index {where} (NaN and "
                         "infinities poison Toto's scaler): mark missing steps False in "
                         "padding_mask and put a number there")
    observed = valid.reshape(-1, valid.shape[-1]).any(-1)
    if not bool(observed.all()):
        row = int((~observed).nonzero()[0])
        raise ValueError(f"inputs: series row {row} has no valid step (padding_mask all False): "
                         "there is nothing to forecast from")
