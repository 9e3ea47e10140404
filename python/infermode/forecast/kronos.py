"""Kronos (candlestick forecasting) on infermode's native transformer stack, with a KV cache.

Upstream re-runs its whole window for every new token; here the context is encoded once and
each step feeds one token through the cached stack. While the window fills (prompt + generated
tokens <= ``max_context``) that is exact; once it slides, every position's hidden state changes
(the oldest token leaves the causal prefix), so each of those steps re-runs the window natively,
as upstream does. Sampling stays in torch with upstream's own function, so ``torch.manual_seed``
gives the same paths on both sides.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from infermode.forecast._stack import NativeStack, block_config
from infermode.forecast._wrapper import (_no_grad, check_count, choose_path, log_path,
                                         module_device, with_retries)
from infermode.forecast.result import Forecast

PRICE_COLUMNS = ["open", "high", "low", "close"]
COLUMNS = PRICE_COLUMNS + ["volume", "amount"]


def _block_tensors(blocks: Sequence[Any]) -> Dict[str, Any]:
    """Upstream TransformerBlocks' parameters under the stack's names."""
    tensors = {}
    for i, b in enumerate(blocks):
        p = f"blocks.{i}."
        tensors[p + "norm1.weight"] = b.norm1.weight
        tensors[p + "norm2.weight"] = b.norm2.weight
        for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            linear = getattr(b.self_attn, theirs)
            tensors[p + f"attention.{ours}.weight"] = linear.weight
            tensors[p + f"attention.{ours}.bias"] = linear.bias
        tensors[p + "mlp.gate.weight"] = b.ffn.w1.weight
        tensors[p + "mlp.up.weight"] = b.ffn.w3.weight
        tensors[p + "mlp.down.weight"] = b.ffn.w2.weight
    return tensors


def _native_stack(blocks: Sequence[Any], final_norm: Any = None,
                  threads: Optional[int] = None) -> Optional[NativeStack]:
    """The causal RoPE blocks (upstream ``TransformerBlock``) as one native stack; None if empty."""
    if len(blocks) == 0:
        return None
    first = blocks[0]

    def tensors() -> dict:
        named = _block_tensors(blocks)
        if final_norm is not None:
            named["final_norm.weight"] = final_norm.weight
        return named

    parameters = [p for block in blocks for p in block.parameters()]
    if final_norm is not None:
        parameters += list(final_norm.parameters())
    return NativeStack(
        hidden=first.self_attn.d_model, heads=first.self_attn.n_heads,
        intermediate=first.ffn.w1.out_features, norm_eps=first.norm1.eps,
        blocks=[block_config(causal=True, attention_bias=True)] * len(blocks),
        tensors=tensors, parameters=parameters, final_norm=final_norm is not None,
        threads=threads)


class KronosWrapper:
    """Upstream's ``KronosPredictor``, with its transformer running natively on the CPU.

        k = KronosWrapper(model, tokenizer, max_context=512)       # upstream Kronos objects
        pred_df = k.predict(df, x_timestamp, y_timestamp, pred_len=120)
        forecast = k.forecast(df, x_timestamp, y_timestamp, pred_len=120, sample_count=20)

    ``predict``, ``predict_batch``, ``generate`` and ``auto_regressive_inference`` take upstream's
    arguments and return what upstream returns; ``forecast`` returns an
    :class:`~infermode.forecast.Forecast` that keeps every sample path. On a device the core does
    not run (or with parameters that are not float32), upstream's code runs under ``no_grad``.
    """

    def __init__(self, model: Any, tokenizer: Any, max_context: int = 512, clip: float = 5,
                 device: Any = None, threads: Optional[int] = None,
                 batch_size: Optional[int] = None):
        if int(max_context) <= 0:
            raise ValueError(f"max_context must be positive, got {max_context}")
        self.model = model.eval()
        self.tokenizer = tokenizer.eval()
        self.max_context = int(max_context)
        self.clip = clip
        self.batch_size = batch_size
        self._upstream = sys.modules[type(model).__module__]
        self.device = device if device is not None else module_device(model)
        self.native, self.reason = choose_path([model, tokenizer], self.device)
        log_path("KronosWrapper", self.native, self.reason)
        self._predictor = self._make_predictor()
        if self.native:
            self._stack = _native_stack(model.transformer, model.norm, threads)
            self._encoder = _native_stack(tokenizer.encoder, None, threads)
            self._decoder = _native_stack(tokenizer.decoder, None, threads)
        self.last_samples: Optional[np.ndarray] = None

    def _make_predictor(self) -> Any:
        """Upstream's predictor (its pre- and post-processing), generating through this wrapper."""
        wrapper = self

        class Predictor(self._upstream.KronosPredictor):
            def generate(self, x, x_stamp, y_stamp, pred_len, T, top_k, top_p, sample_count,
                         verbose):
                return wrapper.generate(x, x_stamp, y_stamp, pred_len, T, top_k, top_p,
                                        sample_count, verbose)

        return Predictor(self.model, self.tokenizer, device=str(self.device),
                         max_context=self.max_context, clip=self.clip)

    def _check_horizon(self, pred_len: Any) -> None:
        check_count(pred_len, "pred_len")
        if pred_len > self.max_context:
            # Upstream decodes only the window's last max_context tokens, so its predictor
            # fails building the DataFrame; say why before any work is done.
            raise ValueError(f"pred_len {pred_len} exceeds max_context {self.max_context}: "
                             "Kronos decodes only the last max_context steps; raise max_context "
                             "or forecast in parts")

    # upstream's API ---------------------------------------------------------------------------

    def predict(self, df: Any, x_timestamp: Any, y_timestamp: Any, pred_len: int, T: float = 1.0,
                top_k: int = 0, top_p: float = 0.9, sample_count: int = 1,
                verbose: bool = False) -> Any:
        """As ``KronosPredictor.predict``: a DataFrame of the mean path, indexed by y_timestamp."""
        self._check_horizon(pred_len)
        return self._predictor.predict(df, x_timestamp, y_timestamp, pred_len, T=T, top_k=top_k,
                                       top_p=top_p, sample_count=sample_count, verbose=verbose)

    def predict_batch(self, df_list: Sequence[Any], x_timestamp_list: Sequence[Any],
                      y_timestamp_list: Sequence[Any], pred_len: int, T: float = 1.0,
                      top_k: int = 0, top_p: float = 0.9, sample_count: int = 1,
                      verbose: bool = False) -> List[Any]:
        """As ``KronosPredictor.predict_batch``: one DataFrame per series."""
        self._check_horizon(pred_len)
        return self._predictor.predict_batch(df_list, x_timestamp_list, y_timestamp_list,
                                             pred_len, T=T, top_k=top_k, top_p=top_p,
                                             sample_count=sample_count, verbose=verbose)

    def generate(self, x: Any, x_stamp: Any, y_stamp: Any, pred_len: int, T: float, top_k: int,
                 top_p: float, sample_count: int, verbose: bool = False) -> np.ndarray:
        """As ``KronosPredictor.generate``: normalised x [batch, lookback, 6] and time stamps in,
        the mean path [batch, pred_len, 6] out. Batches that run out of memory are split."""
        import torch

        x = torch.from_numpy(np.asarray(x, dtype=np.float32))
        x_stamp = torch.from_numpy(np.asarray(x_stamp, dtype=np.float32))
        y_stamp = torch.from_numpy(np.asarray(y_stamp, dtype=np.float32))
        rows = list(range(x.shape[0]))

        def run(batch: Sequence[int]) -> np.ndarray:
            out = self.auto_regressive_inference(
                x[batch], x_stamp[batch], y_stamp[batch], pred_len, clip=self.clip, T=T,
                top_k=top_k, top_p=top_p, sample_count=sample_count, verbose=verbose,
                return_samples=self.native)
            return out if self.native else out[:, None]  # the fallback: the mean as one path

        paths = np.concatenate(with_retries(run, rows, self.batch_size, "KronosWrapper"))
        self.last_samples = paths[:, :, -pred_len:] if self.native else None
        return paths.mean(axis=1)[:, -pred_len:, :]

    def auto_regressive_inference(self, x: Any, x_stamp: Any, y_stamp: Any, pred_len: int,
                                  clip: float = 5, T: float = 1.0, top_k: int = 0,
                                  top_p: float = 0.99, sample_count: int = 5,
                                  verbose: bool = False, max_context: Optional[int] = None,
                                  return_samples: bool = False) -> np.ndarray:
        """As upstream's ``auto_regressive_inference`` with this wrapper's model and tokenizer:
        the decoded window [batch, window, 6], averaged over the sample paths (or each path,
        [batch, sample_count, window, 6], with ``return_samples``)."""
        check_count(pred_len, "pred_len")
        if int(sample_count) <= 0:
            raise ValueError(f"sample_count must be positive, got {sample_count}")
        context = self.max_context if max_context is None else int(max_context)
        if self.native:
            with _no_grad():
                z = self._native_inference(x, x_stamp, y_stamp, context, pred_len, clip, T, top_k,
                                           top_p, int(sample_count), verbose)
            return z if return_samples else z.mean(axis=1)
        if return_samples:
            raise ValueError("the fallback path runs upstream's code, which returns the mean of "
                             "the sample paths only")
        with _no_grad():
            return self._upstream.auto_regressive_inference(
                self.tokenizer, self.model, x.to(self.device), x_stamp.to(self.device),
                y_stamp.to(self.device), context, pred_len, clip, T, top_k, top_p, sample_count,
                verbose)

    # the common result -------------------------------------------------------------------------

    def forecast(self, df: Any, x_timestamp: Any, y_timestamp: Any, pred_len: int,
                 T: float = 1.0, top_k: int = 0, top_p: float = 0.9, sample_count: int = 1,
                 verbose: bool = False) -> Forecast:
        """A :class:`Forecast` of one DataFrame or a list of them (as ``predict_batch``): the
        sample paths [series, 6, pred_len, sample_count] in the data's units."""
        single = not isinstance(df, (list, tuple))
        dfs = [df] if single else list(df)
        xs = [x_timestamp] if single else list(x_timestamp)
        ys = [y_timestamp] if single else list(y_timestamp)
        frames = self.predict_batch(dfs, xs, ys, pred_len, T=T, top_k=top_k, top_p=top_p,
                                    sample_count=sample_count, verbose=verbose)
        history = np.stack([_filled(d)[COLUMNS].to_numpy(np.float32).T for d in dfs])
        if self.last_samples is None:  # the fallback: upstream's mean only
            return Forecast(mean_values=np.stack([f.to_numpy().T for f in frames]),
                            history=history, variate_names=COLUMNS, index=np.asarray(ys[0]),
                            model="Kronos")
        scale, shift = _normalisation(history)
        paths = self.last_samples * scale[:, None, None, :] + shift[:, None, None, :]
        return Forecast(samples=np.transpose(paths, (0, 3, 2, 1)), history=history,
                        variate_names=COLUMNS, index=np.asarray(ys[0]), model="Kronos")

    # the native path ---------------------------------------------------------------------------

    def _encode(self, x: Any) -> tuple:
        """The tokenizer's encoder: (s1, s2) token ids of each step of x [batch, steps, 6]."""
        import torch

        tok = self.tokenizer
        z = tok.embed(x)
        if self._encoder is not None:
            z = torch.from_numpy(self._encoder(z.numpy()))
        z = tok.quant_embed(z)
        _, _, indices = tok.tokenizer(z, half=True, collect_metrics=False)
        return indices[0], indices[1]

    def _decode(self, s1: Any, s2: Any) -> np.ndarray:
        import torch

        tok = self.tokenizer
        z = tok.post_quant_embed(tok.indices_to_bits([s1, s2], half=True))
        if self._decoder is not None:
            z = torch.from_numpy(self._decoder(z.numpy()))
        return tok.head(z).numpy()

    def _hidden(self, s1: Any, s2: Any, stamp: Any, cache: Any = None) -> Any:
        """decode_s1's context (the final-normed hidden states) of new tokens, natively."""
        import torch

        x = self.model.embedding([s1, s2]) + self.model.time_emb(stamp)
        return torch.from_numpy(self._stack(x.numpy(), cache))

    def _native_inference(self, x, x_stamp, y_stamp, max_context, pred_len, clip, T, top_k, top_p,
                          sample_count, verbose) -> np.ndarray:
        import torch

        model, sample = self.model, self._upstream.sample_from_logits
        x = torch.clip(torch.as_tensor(x, dtype=torch.float32), -clip, clip)
        x_stamp = torch.as_tensor(x_stamp, dtype=torch.float32)
        y_stamp = torch.as_tensor(y_stamp, dtype=torch.float32)
        if x.ndim != 3 or x_stamp.shape[:2] != x.shape[:2] or y_stamp.shape[:2] != (x.shape[0], pred_len):
            raise ValueError(f"x {tuple(x.shape)}, x_stamp {tuple(x_stamp.shape)} and y_stamp "
                             f"{tuple(y_stamp.shape)} must be [batch, lookback, features], "
                             f"[batch, lookback, 5] and [batch, pred_len={pred_len}, 5]")
        # The context is encoded once per series; its sample paths share the tokens.
        s1, s2 = self._encode(x)
        s1 = s1.repeat_interleave(sample_count, 0)
        s2 = s2.repeat_interleave(sample_count, 0)
        stamp = torch.cat([x_stamp, y_stamp], 1).repeat_interleave(sample_count, 0)
        rows, lookback = s1.shape
        total = lookback + pred_len
        tokens1 = s1.new_empty(rows, total)
        tokens2 = s2.new_empty(rows, total)
        tokens1[:, :lookback], tokens2[:, :lookback] = s1, s2

        dep = model.dep_layer.cross_attn
        heads, head_dim = dep.n_heads, dep.head_dim
        keys = torch.empty(rows, max_context, model.d_model)  # the dependency layer's, per position
        values = torch.empty_like(keys)
        cache = None
        steps = range(pred_len)
        if verbose:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="Kronos", unit="step")
        for i in steps:
            length = lookback + i
            if length <= max_context:  # the window still grows: one cached step
                if cache is None:
                    cache = self._stack.new_cache(rows, max_context)
                first = cache.length
                hidden = self._hidden(tokens1[:, first:length], tokens2[:, first:length],
                                      stamp[:, first:length], cache)
                keys[:, first:length] = dep.k_proj(hidden)
                values[:, first:length] = dep.v_proj(hidden)
                window = length
            else:  # the window slides: every position changes, re-run it whole
                start = length - max_context
                hidden = self._hidden(tokens1[:, start:length], tokens2[:, start:length],
                                      stamp[:, start:length])
                keys[:] = dep.k_proj(hidden)
                values[:] = dep.v_proj(hidden)
                window = max_context
            last = hidden[:, -1]
            next1 = sample(model.head(last), temperature=T, top_k=top_k, top_p=top_p,
                           sample_logits=True)
            # The dependency-aware layer for the last position: the sampled s1 token's embedding
            # attends over the window (upstream's RoPE there rotates by position 0: identity).
            q = dep.q_proj(model.embedding.emb_s1(next1)).view(rows, 1, heads, head_dim)
            k = keys[:, :window].view(rows, window, heads, head_dim)
            v = values[:, :window].view(rows, window, heads, head_dim)
            attended = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            attended = dep.out_proj(attended.transpose(1, 2).reshape(rows, 1, model.d_model))
            x2 = model.dep_layer.norm(last.unsqueeze(1) + attended)
            next2 = sample(model.head.cond_forward(x2)[:, -1, :], temperature=T, top_k=top_k,
                           top_p=top_p, sample_logits=True)
            tokens1[:, length] = next1.squeeze(-1)
            tokens2[:, length] = next2.squeeze(-1)
        start = max(0, total - max_context)
        z = self._decode(tokens1[:, start:].contiguous(), tokens2[:, start:].contiguous())
        return z.reshape(-1, sample_count, z.shape[1], z.shape[2])


def _filled(df: Any) -> Any:
    """Upstream's column rules: volume and amount default to 0; amount = volume * mean price."""
    df = df.copy()
    if "volume" not in df.columns:
        df["volume"] = 0.0
        df["amount"] = 0.0
    if "amount" not in df.columns:
        df["amount"] = df["volume"] * df[PRICE_COLUMNS].mean(axis=1)
    return df


def _normalisation(history: np.ndarray) -> tuple:
    """Upstream's per-series scale and shift (std + 1e-5, mean) of history [series, 6, steps]."""
    mean = history.mean(axis=2)
    return history.std(axis=2) + 1e-5, mean

