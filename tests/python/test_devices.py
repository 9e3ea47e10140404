"""select_mode: the mode chosen for every device type, and why."""
import logging

import pytest
import torch

import infermode as im
from infermode import devices
from _tiny_models import save_sparse_adapter

GIB = 1024**3


@pytest.mark.parametrize(
    "device, name",
    [
        ("cpu", "inference_mode"),
        ("cuda", "inference_mode"),
        ("cuda:1", "inference_mode"),
        ("xpu", "inference_mode"),
        ("xla", "no_grad"),
        ("xla:0", "no_grad"),
        ("mps", "no_grad"),
    ],
)
def test_mode_for_each_torch_device(device, name):
    choice = im.select_mode(torch.device(device))
    assert choice.name == name
    assert choice.device == torch.device(device).type
    assert choice.reason


@pytest.mark.parametrize("device", ["xla", "tpu", torch.device("xla")])
def test_xla_gets_no_grad_and_says_why(device):
    choice = im.select_mode(device)
    assert choice.name == "no_grad"
    assert "version_counter" in choice.reason
    assert choice.device == "xla"


def test_unknown_device_type_gets_no_grad():
    choice = im.select_mode(torch.device("meta"))
    assert choice.name == "no_grad"
    assert "'meta'" in choice.reason


def test_tensor_and_module_use_their_device():
    assert im.select_mode(torch.zeros(2)).name == "inference_mode"
    meta_module = torch.nn.Linear(4, 4, device="meta")
    assert im.select_mode(meta_module).device == "meta"
    assert im.select_mode(torch.nn.Linear(4, 4)).name == "inference_mode"
    assert im.select_mode(torch.nn.ReLU()).device == "cpu"  # no parameters: the CPU


def test_none_means_best_available():
    # This machine has no accelerator, so the best available device is the CPU.
    assert im.select_mode(None).device == devices._best_available(torch)


def test_native_on_cpu_and_fallback_elsewhere():
    native = im.select_mode("cpu", native=True)
    assert native.name == "native"
    assert im.cpu_info()["isa"] in native.reason
    fallback = im.select_mode("xla", native=True)
    assert fallback.name == "no_grad"
    assert "CPU only" in fallback.reason


def test_old_torch_without_inference_mode_gets_no_grad(monkeypatch):
    monkeypatch.delattr(torch, "inference_mode")
    choice = im.select_mode("cpu")
    assert choice.name == "no_grad"
    assert "has no torch.inference_mode" in choice.reason
    with im.inference_context("cpu"):
        assert not torch.is_grad_enabled()
        y = torch.ones(2) * 2
    assert not y.is_inference()


def test_every_choice_is_logged_at_info(caplog):
    with caplog.at_level(logging.INFO, logger="infermode.devices"):
        im.select_mode("xla")
    assert any("no_grad" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_bad_devices_raise_naming_the_problem():
    with pytest.raises(TypeError, match="device must be"):
        im.select_mode(3.5)
    with pytest.raises(ValueError, match="not a device PyTorch knows"):
        im.select_mode("gpu7")


class _HugeOnMeta(torch.nn.Module):
    """A model whose largest tensor is 5 GiB, with no memory behind it (meta device)."""

    def __init__(self, gib: float):
        super().__init__()
        n = int(gib * 1024**3 / 4)
        self.weight = torch.nn.Parameter(torch.empty(n, device="meta"))


def test_mps_policy_moves_a_model_over_4gib_to_the_cpu():
    big = _HugeOnMeta(5)
    choice = im.select_mode("mps", model=big)
    assert choice.device == "cpu"
    assert choice.name == "inference_mode"
    assert "4 GiB" in choice.reason and "5.00 GiB" in choice.reason
    small = _HugeOnMeta(0.5)
    assert im.select_mode("mps", model=small).device == "mps"


def test_place_model_warns_and_keeps_a_huge_model_off_mps(caplog, monkeypatch):
    moved = []

    class Recorder(_HugeOnMeta):
        def to(self, device):  # record the target instead of allocating anything
            moved.append(torch.device(device).type)
            return self

    with caplog.at_level(logging.WARNING, logger="infermode.devices"):
        devices.place_model(Recorder(5), "mps")
    assert moved == ["cpu"]
    assert "over MPS's 4 GiB limit" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="infermode.devices"):
        devices.place_model(Recorder(5), "mps", explicit=True)
    assert moved == ["cpu", "mps"]
    assert "as asked" in caplog.text
    devices.place_model(Recorder(1), "mps")
    assert moved[-1] == "mps"


# ------------------------------------------------------- choose_device: where a whole model runs


def test_auto_on_mps_runs_a_model_over_4gib_on_the_cpu(simulated_mps, caplog):
    with caplog.at_level(logging.INFO, logger="infermode.devices"):
        choice = im.choose_device("auto", 5 * GIB)
    assert (choice.name, choice.device) == ("native", "cpu")
    assert "5.00 GiB" in choice.reason and "over MPS's 4 GiB limit" in choice.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running on the CPU instead" in warnings[0]


def test_auto_on_mps_keeps_a_model_under_4gib_on_mps(simulated_mps, caplog):
    with caplog.at_level(logging.WARNING, logger="infermode.devices"):
        choice = im.choose_device("auto", 4 * GIB)  # the limit itself fits
    assert (choice.name, choice.device) == ("no_grad", "mps")
    assert not caplog.records


def test_explicit_mps_is_obeyed_with_a_warning_of_the_risk(simulated_mps, caplog):
    with caplog.at_level(logging.WARNING, logger="infermode.devices"):
        choice = im.choose_device("mps", 5 * GIB)
    assert (choice.name, choice.device) == ("no_grad", "mps")
    assert "as asked" in caplog.text and "aborts the process" in caplog.text
    assert "as asked" in choice.reason


def test_the_largest_tensor_is_read_only_for_mps(simulated_mps, monkeypatch):
    def unread():
        raise AssertionError("read the checkpoint for a device other than MPS")

    assert im.choose_device("cpu", unread).device == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert im.choose_device("auto", unread).device == "cpu"


def test_device_errors_name_the_device(simulated_mps):
    with pytest.raises(devices.DeviceError, match="'cuda' is not available"):
        im.choose_device("cuda")
    with pytest.raises(devices.DeviceError, match="'gpu' is not one of auto, cpu"):
        im.choose_device("gpu")
    gguf = "model.gguf is a GGUF file"
    assert im.choose_device("auto", cpu_only=gguf).device == "cpu"
    with pytest.raises(devices.DeviceError, match="'mps' cannot run this model: model.gguf"):
        im.choose_device("mps", cpu_only=gguf)


def test_largest_tensor_bytes_counts_the_adapter(lora_base, lora_adapter, tmp_path):
    base = devices.largest_tensor_bytes(str(lora_base))
    assert base == 128 * 64 * 4  # an MLP matrix (intermediate x hidden), float32
    assert devices.largest_tensor_bytes(str(lora_base), dtype="bfloat16") == base // 2
    assert devices.largest_tensor_bytes(str(lora_base), adapter=lora_adapter) == base
    # A retrained embedding for a vocabulary resized to 655,360 words of 2048: 5 GiB.
    big = save_sparse_adapter(tmp_path / "resized", "base_model.model.model.embed_tokens."
                              "modules_to_save.default.weight", (655360, 2048))
    assert devices.largest_tensor_bytes(str(lora_base), adapter=big) == 5 * GIB
    assert devices.largest_tensor_bytes(str(lora_base), adapter=big, dtype="bfloat16") \
        == 5 * GIB // 2
