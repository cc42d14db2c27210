"""Time-configuration samplers: which TimeConfigs one training iteration uses.

A sampler turns a random generator into the list of TimeConfigs (one positive int per
stage) that a training iteration forwards the same batch with:

- SDT (standard direct training): every stage at the fixed T; ``sample_num`` identical
  passes per iteration (default 1; the paper's authors' script makes 3 when run with
  min_T = max_T, and the summed gradient of s identical passes is s times one pass's).
- NMT (naive mixture training): one config, one random T in [t_min, t_max] for the whole net.
- MTT (mixed time-step training): ``sample_num`` configs, each stage's T drawn uniformly
  from [t_min, t_max]; ``group_block_num`` consecutive stages share a draw; optionally the
  first stage is pinned (``first_stage_t``).

A TimeConfig holds the stages' T only. The input's T is the data's (frames binned at T), and
the net's input TTM maps it to the drawn T_1, so "the input pinned at T, every stage drawn
from [T - L, T + R]" (the paper's authors' event-driven fine-tune) is an MTTSampler over
[T - L, T + R] with no pin, fed frames binned at T (see
:func:`flexsnn.deploy.deployment_sampler`). ``first_stage_t = T`` keeps stage 1 at T too,
so only the later stages are drawn (one stage fewer is mixed).

Samplers take a ``random.Random`` so that every rank of a distributed run, seeded alike,
draws the same configs.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from flexsnn.errors import ConfigError, check_choice, check_positive_int

TimeConfig = tuple[int, ...]


@dataclass(frozen=True)
class SDTSampler:
    """Standard direct training: every stage at ``t``, ``sample_num`` identical passes per iteration."""

    t: int
    sample_num: int = 1

    def __post_init__(self) -> None:
        check_positive_int(self.t, "t")
        check_positive_int(self.sample_num, "sample_num")

    @property
    def t_max(self) -> int:
        return self.t

    def sample(self, rng: random.Random, num_stages: int) -> list[TimeConfig]:
        return [(self.t,) * num_stages] * self.sample_num

    def describe(self) -> dict[str, Any]:
        return {"method": "sdt", **asdict(self)}


@dataclass(frozen=True)
class NMTSampler:
    """Naive mixture training: one T in [t_min, t_max] for the whole net per iteration."""

    t_min: int
    t_max: int

    def __post_init__(self) -> None:
        _check_range(self.t_min, self.t_max)

    def sample(self, rng: random.Random, num_stages: int) -> list[TimeConfig]:
        return [(rng.randint(self.t_min, self.t_max),) * num_stages]

    def describe(self) -> dict[str, Any]:
        return {"method": "nmt", **asdict(self)}


@dataclass(frozen=True)
class MTTSampler:
    """Mixed time-step training: ``sample_num`` per-stage configs per iteration.

    ``first_stage_t``: ``None`` (default) draws every stage; an int pins stage 1 to it.
    """

    t_min: int
    t_max: int
    sample_num: int = 3
    group_block_num: int = 1
    first_stage_t: int | None = None

    def __post_init__(self) -> None:
        _check_range(self.t_min, self.t_max)
        check_positive_int(self.sample_num, "sample_num")
        check_positive_int(self.group_block_num, "group_block_num")
        if self.first_stage_t is not None:
            check_positive_int(self.first_stage_t, "first_stage_t")

    def sample(self, rng: random.Random, num_stages: int) -> list[TimeConfig]:
        num_groups = math.ceil(num_stages / self.group_block_num)
        configs = []
        for _ in range(self.sample_num):
            draws = [rng.randint(self.t_min, self.t_max) for _ in range(num_groups)]
            cfg = [draws[i // self.group_block_num] for i in range(num_stages)]
            if self.first_stage_t is not None:
                cfg[0] = self.first_stage_t
            configs.append(tuple(cfg))
        return configs

    def describe(self) -> dict[str, Any]:
        return {"method": "mtt", **asdict(self)}


Sampler = SDTSampler | NMTSampler | MTTSampler
METHODS = ("sdt", "nmt", "mtt")


def default_sample_num(method: str) -> int:
    """Passes per iteration when none is given: 3 for MTT (the paper's s), 1 otherwise (NMT
    makes one pass whatever it is given)."""
    return 3 if method == "mtt" else 1


def make_sampler(
    method: str,
    t_max: int,
    t_min: int = 1,
    sample_num: int | None = None,
    group_block_num: int = 1,
    first_stage_t: int | None = None,
) -> Sampler:
    """Build the sampler for ``method`` ("sdt" trains at ``t_max``); ``sample_num`` (SDT, MTT)
    defaults to :func:`default_sample_num`."""
    check_choice(method, "method", METHODS)
    sample_num = default_sample_num(method) if sample_num is None else sample_num
    if method == "sdt":
        return SDTSampler(t_max, sample_num)
    if method == "nmt":
        return NMTSampler(t_min, t_max)
    return MTTSampler(t_min, t_max, sample_num, group_block_num, first_stage_t)


def sampler_from_dict(spec: dict[str, Any]) -> Sampler:
    """Inverse of ``sampler.describe()``; a missing field takes its default (an SDT record
    written before SDT had ``sample_num`` is one pass per iteration)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"sampler spec must be a mapping with a 'method' key, got {spec!r:.60}")
    spec = dict(spec)
    method = spec.pop("method", None)
    classes = {"sdt": SDTSampler, "nmt": NMTSampler, "mtt": MTTSampler}
    if method not in classes:
        raise ConfigError(f"sampler spec needs method in {sorted(classes)}, got {method!r}")
    fields = set(classes[method].__dataclass_fields__)
    unknown = sorted(map(str, set(spec) - fields))
    if unknown:
        raise ConfigError(f"sampler spec of method {method!r}: unknown key(s) {unknown}; known: {sorted(fields)}")
    return classes[method](**spec)


def _check_range(t_min: int, t_max: int) -> None:
    check_positive_int(t_min, "t_min")
    check_positive_int(t_max, "t_max")
    if t_min > t_max:
        raise ConfigError(f"t_min must be <= t_max, got t_min={t_min}, t_max={t_max}")
