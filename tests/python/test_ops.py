"""Native ops against NumPy/torch references, on every ISA path this CPU has."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from infermode import _core, ops

ISAS = list(_core.supported_isas())
# float32 kernels against a float64 reference: relative to the size of what was summed.
TOL_F32_DOT = 2e-6
TOL_F32_NORM = 1e-5


def reference_rms_norm(x, w, eps):
    x64 = x.astype(np.float64)
    return x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + eps) * w


def assert_dot_close(got, a, b):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = a64 @ b64
    scale = np.abs(a64) @ np.abs(b64)
    k = a.shape[-1]
    assert np.all(np.abs(got - want) <= TOL_F32_DOT * np.sqrt(k) * scale + 1e-30)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m, k, n", [(1, 896, 131), (3, 67, 45), (8, 130, 77), (37, 300, 129)])
def test_matmul_matches_float64_reference(restore_isa, rng, isa, m, k, n):
    restore_isa.set_isa(isa)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)  # a Linear weight
    assert_dot_close(ops.matmul(a, b), a, b)
    assert_dot_close(ops.matmul(a, w.T), a, w.T)


@pytest.mark.parametrize("isa", ISAS)
def test_rms_norm_matches_float64_reference(restore_isa, rng, isa):
    restore_isa.set_isa(isa)
    x = rng.standard_normal((5, 3, 257), dtype=np.float32) * 4
    g = rng.standard_normal(257, dtype=np.float32)
    y = ops.rms_norm(x, g, eps=1e-5)
    np.testing.assert_allclose(y, reference_rms_norm(x, g, 1e-5), rtol=TOL_F32_NORM, atol=TOL_F32_NORM)


def test_rms_norm_matches_transformers_llama_rmsnorm(rng):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(96, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(96))
    x = torch.randn(4, 7, 96)
    with torch.no_grad():
        want = norm(x)
    torch.testing.assert_close(ops.rms_norm(x, norm.weight, eps=1e-6), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_path_agrees_with_ref(restore_isa, rng, isa):
    a = rng.standard_normal((19, 333), dtype=np.float32)
    w = rng.standard_normal((71, 333), dtype=np.float32)
    restore_isa.set_isa("ref")
    want = ops.matmul(a, w.T)
    restore_isa.set_isa(isa)
    np.testing.assert_allclose(ops.matmul(a, w.T), want, rtol=1e-4, atol=1e-4)


def test_infermode_isa_env_caps_the_path_and_gives_the_same_results(tmp_path, rng):
    a = rng.standard_normal((9, 101), dtype=np.float32)
    b = rng.standard_normal((101, 67), dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    script = (
        "import sys, numpy as np, infermode as im\n"
        "a = np.load(sys.argv[1]); b = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], im.ops.matmul(a, b))\n"
        "print(im.cpu_info()['isa'], im.cpu_info()['kernels']['matmul_f32'])\n"
    )
    outputs = {}
    for isa in ("ref", _core.best_isa()):
        out = tmp_path / f"{isa}.npy"
        env = dict(os.environ, INFERMODE_ISA=isa)
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), str(out)],
            capture_output=True, text=True, env=env,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == isa
        outputs[isa] = np.load(out)
    np.testing.assert_allclose(outputs["ref"], outputs[_core.best_isa()], rtol=1e-4, atol=1e-4)


def test_bad_infermode_isa_env_fails_the_import_naming_it():
    env = dict(os.environ, INFERMODE_ISA="sse9")
    result = subprocess.run([sys.executable, "-c", "import infermode"], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "INFERMODE_ISA" in result.stderr and "sse9" in result.stderr


def test_torch_inputs_are_borrowed_not_copied():
    w = torch.randn(16, 8)
    view, is_torch = ops._as_array(w.T, "b")
    assert is_torch and np.shares_memory(view, w.numpy())
    out = torch.empty(3, 16)
    returned = ops.matmul(torch.randn(3, 8), w.T, out=out)
    assert returned is out
    torch.testing.assert_close(out, returned)


def test_threads_do_not_change_results(rng):
    a = rng.standard_normal((64, 200), dtype=np.float32)
    b = rng.standard_normal((200, 96), dtype=np.float32)
    np.testing.assert_array_equal(ops.matmul(a, b, threads=1), ops.matmul(a, b, threads=1))
    np.testing.assert_allclose(ops.matmul(a, b, threads=2), ops.matmul(a, b, threads=1), rtol=1e-6, atol=1e-5)


def test_sum_reads_everything(rng):
    x = rng.standard_normal(100_003, dtype=np.float32)
    assert ops.sum(x) == pytest.approx(float(x.astype(np.float64).sum()), abs=1e-6 * float(np.abs(x).sum()))


class TestBadInputs:
    def test_wrong_dtype_names_the_argument(self):
        with pytest.raises(TypeError, match=r"^x has dtype float64|x has dtype float64"):
            ops.rms_norm(np.ones((2, 4)), np.ones(4, np.float32))
        with pytest.raises(TypeError, match="b has dtype int32"):
            ops.matmul(np.ones((2, 4), np.float32), np.ones((4, 3), np.int32))
        with pytest.raises(TypeError, match="weight has dtype torch.bfloat16"):
            ops.rms_norm(torch.ones(2, 4), torch.ones(4, dtype=torch.bfloat16))
        with pytest.raises(TypeError, match="a must be a NumPy array or a torch tensor, got list"):
            ops.matmul([[1.0]], np.ones((1, 1), np.float32))

    def test_shape_mismatch_names_the_argument(self):
        with pytest.raises(ValueError, match=r"weight has shape \[5\], expected \[4\]"):
            ops.rms_norm(np.ones((2, 4), np.float32), np.ones(5, np.float32))
        with pytest.raises(ValueError, match=r"last dim of a \(4\) must equal the first dim of b \(5\)"):
            ops.matmul(np.ones((2, 4), np.float32), np.ones((5, 3), np.float32))
        with pytest.raises(ValueError, match=r"out has shape \[3, 2\], expected \[2, 3\]"):
            ops.matmul(np.ones((2, 4), np.float32), np.ones((4, 3), np.float32), out=np.empty((3, 2), np.float32))

    def test_non_contiguous_where_unsupported(self):
        x = np.ones((8, 6), np.float32)[:, ::2]
        with pytest.raises(ValueError, match="x with shape .* is not contiguous"):
            ops.rms_norm(x, np.ones(3, np.float32))
        b = np.ones((4, 12), np.float32)[:, ::3]
        with pytest.raises(ValueError, match="b with shape .* is neither row- nor column-contiguous"):
            ops.matmul(np.ones((2, 4), np.float32), b)

    def test_output_problems(self):
        a = np.ones((2, 4), np.float32)
        b = np.ones((4, 3), np.float32)
        ro = np.empty((2, 3), np.float32)
        ro.setflags(write=False)
        with pytest.raises(ValueError, match="out is read-only"):
            ops.matmul(a, b, out=ro)
        with pytest.raises(ValueError, match="out shares memory with a"):
            buf = np.ones((2, 4), np.float32)
            ops.matmul(buf, np.ones((4, 4), np.float32), out=buf)

    def test_device_and_threads(self):
        with pytest.raises(ValueError, match="x is on meta; infermode's core runs on the CPU"):
            ops.rms_norm(torch.ones(2, 4, device="meta"), torch.ones(4))
        with pytest.raises(ValueError, match="threads must be a positive int"):
            ops.sum(np.ones(4, np.float32), threads=0)
        with pytest.raises(ValueError, match="CPU cannot run|cannot run the"):
            unsupported = [i for i in ("ref", "avx2", "avx512", "amx") if i not in ISAS]
            if not unsupported:
                pytest.skip("this CPU runs every ISA path")
            _core.set_isa(unsupported[0])
        with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
            _core.set_isa("sse9")


# Large products may round the activations to bfloat16 as well (the AVX512-BF16 GEMM): 2^-9
# relative per product, against 2^-24 when only the weights are bfloat16.
TOL_BF16_ACTIVATIONS = 4e-3


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m", [1, 9, 64])
def test_matmul_with_torch_bfloat16_weights(restore_isa, isa, m):
    restore_isa.set_isa(isa)
    torch.manual_seed(m)
    x = torch.randn(m, 301)
    w = torch.randn(77, 301).to(torch.bfloat16)
    got = ops.matmul(x, w.T)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    a, b = x.numpy(), w.float().numpy().T
    want = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    tol = (TOL_F32_DOT if m <= 8 else TOL_BF16_ACTIVATIONS) * np.sqrt(301) * scale
    assert np.all(np.abs(got.numpy() - want) <= tol)
    with pytest.raises(TypeError, match="a has dtype torch.bfloat16"):
        ops.matmul(x.to(torch.bfloat16), w.T)
