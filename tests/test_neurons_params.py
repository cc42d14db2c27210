"""NeuronParams (flexsnn.neurons.params): validated once, frozen, hashable, normalised."""

from __future__ import annotations

import dataclasses

import pytest

from flexsnn.errors import InputError
from flexsnn.neurons import NeuronParams
from flexsnn.neurons.surrogate import SURROGATES


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(surrogate="relu"), "surrogate must be one of 'triangle', 'exponential', 'sigmoid', 'atan'"),
        (dict(reset="zero"), "reset must be one of 'hard', 'subtract'"),
        (dict(v_th=0.0), "v_th must be > 0"),
        (dict(v_th=-1.0), "v_th must be > 0"),
        (dict(v_th=float("nan")), "v_th must be a finite number"),
        (dict(decay=0.0), r"decay must be in \(0, 1\]"),
        (dict(decay=1.5), r"decay must be in \(0, 1\]"),
        (dict(decay=-0.1), r"decay must be in \(0, 1\]"),
        (dict(v_min=1.0), "v_min must be below v_th"),
        (dict(v_min="low"), "v_min must be a finite number"),
        (dict(alpha=0.0), "alpha must be"),
        (dict(multi_spike=1), "multi_spike must be True or False"),
        (dict(detach_reset="yes"), "detach_reset must be True or False"),
    ],
)
def test_bad_parameters_name_the_argument(kw, match):
    with pytest.raises(InputError, match=match):
        NeuronParams(**kw)


def test_defaults_are_the_papers_time_stepped_lif():
    p = NeuronParams()
    assert (p.v_th, p.decay, p.reset, p.multi_spike, p.v_min) == (1.0, 0.5, "hard", False, None)
    assert (p.surrogate, p.alpha, p.detach_reset) == ("triangle", 1.0, False)
    assert p.surrogate_fn is SURROGATES["triangle"]


def test_alpha_none_resolves_to_the_surrogates_default_and_ints_become_floats():
    assert NeuronParams(surrogate="sigmoid").alpha == 4.0
    assert NeuronParams(surrogate="atan").alpha == 2.0
    p = NeuronParams(v_th=2, decay=1, v_min=-1, alpha=3)
    assert (p.v_th, p.decay, p.v_min, p.alpha) == (2.0, 1.0, -1.0, 3.0)
    assert all(type(v) is float for v in (p.v_th, p.decay, p.v_min, p.alpha))


def test_frozen_hashable_and_equal_by_value():
    p = NeuronParams(v_th=2, decay=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.v_th = 0.5
    q = NeuronParams(v_th=2.0, decay=1.0, alpha=1.0)  # same values once normalised
    assert p == q and hash(p) == hash(q) and len({p, q}) == 1
    assert NeuronParams(v_th=0.5) != p


def test_replace_validates_again():
    p = NeuronParams(decay=1.0, reset="subtract")
    assert dataclasses.replace(p, v_th=0.5).v_th == 0.5
    with pytest.raises(InputError, match="v_min must be below v_th"):
        dataclasses.replace(p, v_min=1.0)
    with pytest.raises(InputError, match="decay"):
        dataclasses.replace(p, decay=3.0)


def test_derived_surrogate_is_not_a_constructor_argument():
    with pytest.raises(TypeError):
        NeuronParams(surrogate_fn=SURROGATES["atan"])
    assert "surrogate_fn" not in repr(NeuronParams())
