import numpy as np
import pytest
import torch

from flexsnn.errors import (
    FlexSNNError,
    InputError,
    check_choice,
    check_finite,
    check_positive_int,
    check_time_first,
)


def test_positive_int_accepts_numpy_and_rejects_bad_values():
    assert check_positive_int(np.int64(3), "T") == 3
    for bad in (0, -2, 1.5, "3", True, None):
        with pytest.raises(InputError, match="T must be a positive integer"):
            check_positive_int(bad, "T")


def test_time_first_names_argument_and_shape():
    with pytest.raises(InputError, match=r"frames must be time-first \[T, B, ...\].*\(5,\)"):
        check_time_first(torch.zeros(5), "frames")
    with pytest.raises(InputError, match="T = 0"):
        check_time_first(torch.zeros(0, 2), "x")
    with pytest.raises(InputError, match="torch.Tensor"):
        check_time_first(np.zeros((2, 2)), "x")


def test_finite_and_choice():
    with pytest.raises(InputError, match="x contains NaN"):
        check_finite(torch.tensor([1.0, float("nan")]))
    assert check_choice("soft", "mode", ("hard", "soft")) == "soft"
    with pytest.raises(InputError, match="mode must be one of 'hard', 'soft'"):
        check_choice("x", "mode", ("hard", "soft"))


def test_all_errors_share_the_base_class():
    assert issubclass(InputError, FlexSNNError) and issubclass(InputError, ValueError)


def test_finite_check_is_exact_when_the_fast_sum_overflows():
    huge = torch.full((4,), 3e38)  # finite, but the sum overflows to inf
    assert check_finite(huge) is huge
    for bad in (float("inf"), float("-inf"), float("nan")):
        x = torch.ones(1000)
        x[517] = bad
        with pytest.raises(InputError, match="NaN or infinite"):
            check_finite(x, "x")
    mixed = torch.tensor([float("inf"), float("-inf")])  # sums to NaN
    with pytest.raises(InputError):
        check_finite(mixed)
    assert check_finite(torch.arange(3)) is not None  # integer tensors need no check
