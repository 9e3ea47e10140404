"""Quantized ops against the gguf package's reference quantizer and float64 products."""
import gguf
import numpy as np
import pytest
import torch

from infermode import _core, ops

ISAS = list(_core.supported_isas())
GGML_TYPES = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0,
              "q4_1": gguf.GGMLQuantizationType.Q4_1}


@pytest.mark.parametrize("fmt", ops.QUANTIZED_FORMATS)
def test_quantize_writes_the_bytes_gguf_writes(rng, fmt):
    w = rng.standard_normal((37, 256), dtype=np.float32)
    w[3, :32] = 0.0  # an all-zero block: scale 0
    w[5, 40] = 7.5   # a block dominated by one value
    ours = ops.quantize(w, fmt)
    theirs = gguf.quants.quantize(w, GGML_TYPES[fmt])
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ops.dequantize(ours, fmt),
                                  gguf.quants.dequantize(theirs, GGML_TYPES[fmt]))


def activation_error_bound(x, w_deq):
    """What 8-bit activations can cost: half a step (amax / 127) of each 32-value block, plus the
    float16 rounding of its scale, times the weights it meets; float32 rounding besides."""
    blocks = x.reshape(x.shape[0], -1, 32).astype(np.float64)
    step = np.abs(blocks).max(-1) / 127                           # (m, blocks)
    wabs = np.abs(w_deq.astype(np.float64)).reshape(w_deq.shape[0], -1, 32).sum(-1)  # (n, blocks)
    return (step * (0.5 + 127 * 2.0**-11)) @ wabs.T + 1e-4


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("fmt", ops.QUANTIZED_FORMATS)
@pytest.mark.parametrize("m", [1, 3, 8])
def test_quantized_matmul_is_the_dequantized_product(restore_isa, rng, isa, fmt, m):
    restore_isa.set_isa(isa)
    w = rng.standard_normal((72, 320), dtype=np.float32)
    x = rng.standard_normal((m, 320), dtype=np.float32)
    blocks = ops.quantize(w, fmt)
    matrix = ops.QuantizedMatrix(blocks, fmt)
    assert (matrix.rows, matrix.cols, matrix.format) == (72, 320, fmt)
    deq = ops.dequantize(blocks, fmt)
    got = matrix.matmul(x, threads=2)
    want = x.astype(np.float64) @ deq.astype(np.float64).T
    bound = activation_error_bound(x, deq)
    if fmt == "q4_1":  # the offset term uses d * sum(q) rounded to float16
        bound += np.abs(deq).max() * 32 * np.abs(x).max() * 2.0**-10 * (320 // 32)
    assert np.all(np.abs(got - want) <= bound)
    # and the result is far closer than float32 weights would make it by chance
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_quantized_matrix_takes_torch_tensors_and_out(rng):
    w = rng.standard_normal((16, 64), dtype=np.float32)
    matrix = ops.QuantizedMatrix(ops.quantize(torch.from_numpy(w), "q8_0"), "q8_0")
    x = torch.from_numpy(rng.standard_normal((2, 64), dtype=np.float32))
    y = matrix.matmul(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 16)
    out = np.empty((2, 16), np.float32)
    assert matrix.matmul(x.numpy(), out=out) is out
    np.testing.assert_array_equal(out, y.numpy())


def test_bad_quantized_input_raises_clear_errors(rng):
    w = rng.standard_normal((4, 40), dtype=np.float32)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.quantize(w, "q8_0")
    with pytest.raises(ValueError, match="format must be one of"):
        ops.quantize(w[:, :32], "q5_k")
    with pytest.raises(TypeError, match="uint8"):
        ops.QuantizedMatrix(w, "q8_0")
    with pytest.raises(ValueError, match="34 bytes"):
        ops.QuantizedMatrix(np.zeros((4, 33), np.uint8), "q8_0")
    matrix = ops.QuantizedMatrix(ops.quantize(w[:, :32], "q4_0"), "q4_0")
    with pytest.raises(ValueError, match="columns"):
        matrix.matmul(np.zeros((1, 64), np.float32))
