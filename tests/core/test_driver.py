"""An NVIDIA driver too old for the CUDA software installed is reported as an old driver, with the minimum."""

from __future__ import annotations

import pytest

from edgeseg.core.host import CUDA_DRIVER_MINIMUM, TENSORRT_DRIVER_MINIMUM, driver_problem, tensorrt_driver_problem


@pytest.mark.parametrize(
    "driver, major",
    [
        ("525.60.13", 12),
        ("535.104.05", 12),
        ("550.54.15", 12),
        ("580.65.06", 12),  # a newer driver runs older CUDA
        ("580.65.06", 13),
        ("580", 13),
        ("590.44.01", 13),
        ("540.4.0", 12),  # 540.4.0: JetPack 6's nvidia-smi
        ("1000.1", 12),
    ],
)
def test_new_enough_drivers_pass(driver: str, major: int) -> None:
    assert driver_problem(driver, major) is None


@pytest.mark.parametrize(
    "driver, major, minimum",
    [
        ("525.60.11", 12, "525.60.13"),
        ("525.53", 12, "525.60.13"),
        ("470.82.01", 12, "525.60.13"),
        ("520", 12, "525.60.13"),
        ("575.57.08", 13, "580"),
        ("535.104.05", 13, "580"),
    ],
)
def test_old_drivers_are_named_with_the_minimum(driver: str, major: int, minimum: str) -> None:
    problem = driver_problem(driver, major)
    assert problem is not None
    assert problem.startswith(f"NVIDIA driver {driver} is older than CUDA {major} needs (>= {minimum})")
    assert "install a newer driver" in problem
    assert ("edgeseg[gpu]" in problem) == (major == 13)  # CUDA 12's extra runs on an R525-R575 driver


def test_what_cannot_be_judged_is_not_guessed() -> None:
    assert driver_problem("not a version", 12) is None
    assert driver_problem("", 12) is None
    assert driver_problem("400.0", 99) is None  # a CUDA major without a known minimum
    assert driver_problem(" 535.104.05\n", 12) is None  # nvidia-smi's spacing


def test_the_minima_are_nvidias() -> None:
    assert CUDA_DRIVER_MINIMUM[12] == "525.60.13" and CUDA_DRIVER_MINIMUM[13] == "580"
    assert TENSORRT_DRIVER_MINIMUM == "535"  # TensorRT 10's installation guide: r535 or later on Linux


@pytest.mark.parametrize("driver", ["535", "535.54.03", "535.104.05", "540.4.0", "550.54.15", " 580.65.06\n"])
def test_drivers_from_r535_on_run_tensorrt(driver: str) -> None:
    assert tensorrt_driver_problem(driver) is None


@pytest.mark.parametrize("driver", ["525.60.13", "530.30.02", "534.99", "470.82.01"])
def test_older_drivers_are_too_old_for_tensorrt_even_where_cuda_12_runs(driver: str) -> None:
    problem = tensorrt_driver_problem(driver)
    assert problem is not None and problem.startswith(f"NVIDIA driver {driver} is older than TensorRT needs (r535")
    assert "install a newer driver" in problem and "edgeseg[cuda12]" in problem  # or go without TensorRT
    assert (driver_problem(driver, 12) is None) == (driver != "470.82.01")


def test_a_driver_that_is_not_a_version_is_not_judged_for_tensorrt() -> None:
    assert tensorrt_driver_problem("not a version") is None and tensorrt_driver_problem("") is None
