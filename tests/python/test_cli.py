"""The command line and the documented one-liners."""
import subprocess
import sys

import infermode as im


def run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_info_prints_the_table():
    result = run(sys.executable, "-m", "infermode", "info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    info = im.cpu_info()
    for key in ("version", "build", "cpu", "features", "isa paths", "isa in use", "kernels", "threads"):
        assert key in out
    assert info["isa"] in out and info["brand"] in out
    for line in ("native (cpu)  native", "xla", "mps", "cuda", "xpu"):
        assert line in out
    xla_line = next(line for line in out.splitlines() if line.strip().startswith("xla"))
    assert "no_grad" in xla_line and "version_counter" in xla_line


def test_info_lists_every_kernel_and_survives_a_closed_pipe():
    info = im.cpu_info()
    assert set(info["kernels"]) >= {"matmul_f32", "matmul_bf16", "rms_norm", "attention",
                                    "swiglu", "rope", "add", "sum_f32"}
    result = subprocess.run(f"'{sys.executable}' -m infermode info | head -n 1", shell=True,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("version")
    assert "Traceback" not in result.stderr


def test_console_script_is_installed():
    result = run("infermode", "info")
    assert result.returncode == 0, result.stderr
    assert "isa in use" in result.stdout


def test_select_mode_xla_one_liner():
    result = run(sys.executable, "-c", "import infermode as im; print(im.select_mode('xla'))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no_grad (") and "version_counter" in result.stdout


def test_cpu_info_describes_the_machine():
    info = im.cpu_info()
    assert info["isa"] in info["isa_supported"]
    assert info["isa_supported"][0] == "ref"
    assert set(info["kernels"]) >= {"rms_norm", "matmul_f32"}
    assert info["threads"] >= 1 and info["physical_cores"] >= 1
