import pytest
import torch

from rexbert_common.devices import check_device
from rexbert_common.errors import UserError


def test_cpu_is_usable_everywhere():
    assert check_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line_naming_the_build(device):
    with pytest.raises(UserError) as error:
        check_device(device)
    assert str(error.value).startswith(
        f"--device {device}: no usable CUDA GPU here (torch {torch.__version__}"
    )


@pytest.mark.parametrize("device", ["gpu", "cuda:x", ""])
def test_a_name_that_is_no_device_is_refused(device):
    with pytest.raises(UserError, match="is not a device"):
        check_device(device)


def test_other_device_types_are_refused():
    with pytest.raises(UserError, match="only cpu, cuda and mps"):
        check_device("meta")
