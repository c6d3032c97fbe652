"""The recorder and the check on a device without float64 (Apple's MPS raises "Cannot convert a MPS Tensor to float64
dtype"). No such device is here: a CPU tensor that raises as MPS does stands in for it, and ``FLOAT64_DEVICES`` is
emptied so that the CPU counts as such a device. The figures must be those of a plain run, bit for bit."""

import pytest
import torch

import core.devices
from core.activations import ActivationRecorder
from core.check import run_check
from tests.core.test_check import Toy, fitted, world


class WithoutFloat64(torch.Tensor):
    """A tensor on a device without float64: any operation that would make a float64 tensor of it raises TypeError, as
    on MPS; ``cpu()`` gives the plain tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **(kwargs or {}))
        if func is torch.Tensor.cpu:
            return result.as_subclass(torch.Tensor)
        if isinstance(result, torch.Tensor) and result.dtype == torch.float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64")
        return result.as_subclass(cls) if isinstance(result, torch.Tensor) and type(result) is torch.Tensor else result


@pytest.fixture
def no_float64_device(monkeypatch):
    monkeypatch.setattr(core.devices, "FLOAT64_DEVICES", ())
    with pytest.raises(TypeError, match="float64"):
        torch.ones(2).as_subclass(WithoutFloat64).to(torch.float64)


class OnDevice(torch.nn.Module):
    """Runs ``model`` with its input moved to the stand-in device, as ComfyUI runs a model on its GPU."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.as_subclass(WithoutFloat64))


def test_the_recorder_pools_and_samples_tokens_on_a_device_without_float64(no_float64_device):
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 4))
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[:, 5:] = False
    rows = {}
    for run, device_model in (("plain", model), ("no float64", OnDevice(model))):
        recorder = ActivationRecorder(model, ["0", "1"], token_budget=10, seed=3)
        with recorder, torch.no_grad():
            recorder.set_token_mask(mask, ["1"])
            device_model(x)
        rows[run] = (recorder.take(), recorder.take_tokens())
    for pooled_or_tokens in (0, 1):
        for layer in ("0", "1"):
            assert type(rows["no float64"][pooled_or_tokens][layer]) is torch.Tensor
            assert torch.equal(rows["no float64"][pooled_or_tokens][layer], rows["plain"][pooled_or_tokens][layer])


def test_the_check_runs_on_a_device_without_float64(no_float64_device):
    model = Toy()
    _, basis = fitted(model)
    _, unsafe, safe, benign = world(1)

    def figures(device):
        def forward(rows, recorder):
            x = torch.stack(list(rows))
            return model(x if device == "plain" else x.as_subclass(WithoutFloat64))

        with torch.no_grad():
            return run_check(model, forward, basis, list(zip(unsafe, safe)), list(benign), (0, 0.5, 1, 2),
                             target="safe_mean").as_dict()

    assert figures("no float64") == figures("plain")
