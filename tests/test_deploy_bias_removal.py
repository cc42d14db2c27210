"""Bias removal: zeroing, exact BN folding, freezing, and the checks around them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flexsnn.deploy import check_bias_free, fold_batchnorm, freeze_biases, remove_biases, strip_batchnorm, zero_biases
from flexsnn.deploy.bias_removal import bias_free_violations
from flexsnn.errors import InputError


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=g))  # negative scales too
            m.bias.data.copy_(torch.randn(n, generator=g))
    return model


def _plain_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3, bias=False), nn.Identity(), nn.BatchNorm2d(4)),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def test_fold_batchnorm_hand_computed_1x1():
    conv = nn.Conv2d(1, 1, 1)
    bn = nn.BatchNorm2d(1, eps=1.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(0.25)
        bn.weight.fill_(3.0)
        bn.bias.fill_(0.5)
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(3.0)  # sqrt(3 + 1) = 2, scale = 3 / 2 = 1.5
    net = fold_batchnorm(nn.Sequential(conv, bn))
    assert isinstance(net[1], nn.Identity)
    assert net[0].weight.item() == 3.0  # 2 * 1.5
    assert net[0].bias.item() == -0.625  # (0.25 - 1) * 1.5 + 0.5


def test_fold_batchnorm_keeps_eval_outputs():
    net = _randomize_bn(_plain_net()).eval()
    x = torch.randn(5, 2, 6, 6)
    before = net(x)
    folded = fold_batchnorm(copy.deepcopy(net))
    assert not [m for m in folded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    torch.testing.assert_close(folded(x), before, rtol=1e-5, atol=1e-5)
    # the conv without bias gained one (BN shift), the second conv's weight was scaled
    assert folded[3][0].bias is not None
    assert not torch.equal(folded[3][0].weight, net[3][0].weight)


def test_remove_biases_equals_zeroed_model_and_is_bias_free():
    # zero biases / BN means first, then folding must not change the eval outputs any more
    net = _randomize_bn(_plain_net()).eval()
    zeroed = zero_biases(copy.deepcopy(net))
    for m in zeroed.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert torch.count_nonzero(m.running_mean) == 0 and torch.count_nonzero(m.bias) == 0
    removed = remove_biases(copy.deepcopy(net))
    x = torch.randn(4, 2, 6, 6)
    torch.testing.assert_close(removed(x), zeroed(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(removed(x), net(x), atol=1e-3)  # bias removal does change the function
    for m in removed.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
            assert not m.bias.requires_grad
        assert not isinstance(m, nn.modules.batchnorm._BatchNorm)
    assert check_bias_free(removed) is removed
    assert bias_free_violations(removed) == []


def test_violations_listed_and_check_raises():
    net = _plain_net()
    problems = bias_free_violations(net)
    assert any("BatchNorm" in p for p in problems)
    assert any("non-zero bias" in p for p in problems)
    with pytest.raises(InputError, match="remove_biases"):
        check_bias_free(net)


def test_frozen_biases_are_not_trained():
    net = remove_biases(_randomize_bn(_plain_net()))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 2, 6, 6)).sum().backward()
        opt.step()
    check_bias_free(net)


def test_freeze_refuses_nonzero_bias():
    with pytest.raises(InputError, match="non-zero bias"):
        freeze_biases(nn.Sequential(nn.Linear(2, 2)))


def test_batchnorm_without_weighted_layer_before_it_raises():
    with pytest.raises(InputError, match="must directly follow a Conv or Linear"):
        fold_batchnorm(nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1)))
    with pytest.raises(InputError, match="must directly follow"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.BatchNorm2d(2)))


def test_batchnorm_without_running_stats_raises():
    with pytest.raises(InputError, match="running"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2, track_running_stats=False)))


def test_strip_batchnorm_only_changes_structure():
    net = _plain_net()
    keys = set(strip_batchnorm(copy.deepcopy(net)).state_dict())
    folded_keys = set(remove_biases(copy.deepcopy(net)).state_dict())
    assert keys <= set(net.state_dict()) and not any("running" in k for k in keys)
    assert folded_keys <= keys | {"3.0.bias"}


def test_staged_net_is_folded_and_no_longer_asks_for_calibration():
    pytest.importorskip("flexsnn.staged")
    from conftest import tiny_staged_net

    net = tiny_staged_net(bn=True)
    _randomize_bn(net)
    net.eval()
    net.require_calibration = False
    x = (torch.rand(3, 4, 2, 6, 6) < 0.3).float()
    zeroed = zero_biases(copy.deepcopy(net))
    remove_biases(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    torch.testing.assert_close(net(x, time_config=3), zeroed(x, time_config=3), rtol=1e-4, atol=1e-4)
    net.require_calibration = True  # must not matter: there is no BN left
    net.eval()
    net(x, time_config=2)
