import random
from collections import Counter

import pytest

from flexsnn.errors import ConfigError, InputError
from flexsnn.train.samplers import (
    MTTSampler,
    NMTSampler,
    SDTSampler,
    make_sampler,
    sampler_from_dict,
)


def test_sdt_is_fixed_and_uniform():
    assert SDTSampler(4).sample(random.Random(0), 3) == [(4, 4, 4)]


def test_nmt_draws_one_t_for_the_whole_net():
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        (cfg,) = NMTSampler(1, 5).sample(rng, 4)
        assert len(set(cfg)) == 1
        seen.add(cfg[0])
    assert seen == {1, 2, 3, 4, 5}


def test_mtt_draws_per_stage_uniformly_with_sample_num_configs():
    rng = random.Random(1)
    sampler = MTTSampler(1, 6, sample_num=3)
    counts = Counter()
    mixed = 0
    for _ in range(2000):
        configs = sampler.sample(rng, 4)
        assert len(configs) == 3
        for cfg in configs:
            assert len(cfg) == 4 and all(1 <= t <= 6 for t in cfg)
            counts.update(cfg)
            mixed += len(set(cfg)) > 1
    # uniform over 1..6: each value near 1/6 of 24000 draws
    for t in range(1, 7):
        assert abs(counts[t] / 24000 - 1 / 6) < 0.02
    assert mixed > 5000  # stages really differ within a config


def test_mtt_grouping_and_first_stage_pin():
    rng = random.Random(2)
    for cfg in MTTSampler(1, 9, sample_num=20, group_block_num=2).sample(rng, 5):
        assert cfg[0] == cfg[1] and cfg[2] == cfg[3]
    for cfg in MTTSampler(1, 10, sample_num=20, first_stage_t=10).sample(rng, 4):
        assert cfg[0] == 10


def test_same_seed_same_configs():
    a = MTTSampler(1, 6).sample(random.Random(7), 5)
    b = MTTSampler(1, 6).sample(random.Random(7), 5)
    assert a == b


def test_factory_roundtrip_and_errors():
    s = make_sampler("mtt", t_max=6, t_min=2, sample_num=2)
    assert sampler_from_dict(s.describe()) == s
    assert make_sampler("sdt", t_max=6) == SDTSampler(6)
    with pytest.raises(InputError, match="method must be one of"):
        make_sampler("bogus", t_max=3)
    with pytest.raises(ConfigError, match="t_min must be <= t_max"):
        NMTSampler(5, 2)
    with pytest.raises(InputError, match="t_min must be a positive integer"):
        MTTSampler(0, 3)


def test_mtt_without_a_pin_draws_every_stage_including_the_first():
    rng = random.Random(3)
    per_stage = [Counter() for _ in range(3)]
    for _ in range(300):
        for cfg in MTTSampler(1, 10).sample(rng, 3):
            for stage, t in enumerate(cfg):
                per_stage[stage][t] += 1
    assert all(set(c) == set(range(1, 11)) for c in per_stage)  # stage 1 too: the input is not a stage
    pinned = MTTSampler(1, 10, first_stage_t=10).sample(random.Random(3), 3)
    assert [cfg[0] for cfg in pinned] == [10, 10, 10] and len({cfg[1:] for cfg in pinned}) > 1
