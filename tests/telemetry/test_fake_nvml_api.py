"""The fake pynvml stays faithful to the real nvidia-ml-py: same names, signatures, errors."""

from __future__ import annotations

import inspect

import pytest


def test_functions_and_constants_exist_in_real_module(fake_nvml):
    real = pytest.importorskip("pynvml")
    for name, obj in vars(fake_nvml).items():
        if name.startswith("nvml") and callable(obj) and not inspect.isclass(obj):
            assert hasattr(real, name), f"fake pynvml has {name} but nvidia-ml-py does not"
            real_params = list(inspect.signature(getattr(real, name)).parameters)
            fake_params = list(inspect.signature(obj).parameters)
            assert fake_params == real_params, f"{name}: fake {fake_params} != real {real_params}"
        elif name.startswith(("NVML_", "nvmlEventType", "nvmlClocks")):
            assert getattr(real, name) == obj, f"constant {name} differs from nvidia-ml-py"


def test_error_classes_made_like_the_real_ones(fake_nvml):
    real = pytest.importorskip("pynvml")
    for mod in (real, fake_nvml):
        err = mod.NVMLError(mod.NVML_ERROR_NOT_SUPPORTED)
        assert type(err).__name__ == "NVMLError_NotSupported" and err.value == 3
        assert isinstance(err, mod.NVMLError_NotSupported) and isinstance(err, mod.NVMLError)
        assert isinstance(mod.NVMLError_LibraryNotFound(), mod.NVMLError)
        assert mod.NVMLError_DriverNotLoaded().value == mod.NVML_ERROR_DRIVER_NOT_LOADED
        assert str(mod.NVMLError_LibraryNotFound()) == "NVML Shared Library Not Found"
