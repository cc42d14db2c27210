import pytest
import torch
from conftest import make_frame_loaders, tiny_staged_net
from torch import nn
from torch.utils.data import DataLoader

from flexsnn.errors import CalibrationError, InputError
from flexsnn.train import calibrate_bn, model_input


def test_calibration_equals_cumulative_average_over_batches():
    torch.manual_seed(0)
    model = tiny_staged_net()
    train, _ = make_frame_loaders()
    loader = DataLoader(train.dataset, batch_size=16, shuffle=False)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)][0]
    calibrate_bn(model, loader, (2, 3), num_batches=2)
    calibrated = bn.running_mean.clone()
    assert bn.momentum == 0.1  # restored
    # Expected: the plain mean of the per-batch means of BN's input over the first two batches.
    captured = []
    hook = bn.register_forward_hook(lambda m, inp, out: captured.append(inp[0].detach()))
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i == 2:
                break
            model(model_input(x, model), time_config=(2, 3))
    hook.remove()
    expected = torch.stack([c.mean(0) for c in captured]).mean(0)
    assert torch.allclose(calibrated, expected, atol=1e-6)


def test_calibration_marks_model_and_restores_mode():
    model = tiny_staged_net()
    train, test = make_frame_loaders()
    model.eval()
    calibrate_bn(model, train, 3, num_batches=1)
    assert not model.training
    assert tuple(model.bn_calibrated_for) == (3, 3)


def test_stale_bn_in_eval_is_refused_until_calibrated():
    model = tiny_staged_net()
    train, _ = make_frame_loaders()
    x, _ = next(iter(train))
    model.train()
    model(model_input(x, model), time_config=2)
    model.eval()
    with pytest.raises(CalibrationError, match="calibrate_bn"):
        model(model_input(x, model), time_config=2)
    calibrate_bn(model, train, 2, num_batches=1)
    model.eval()
    assert model(model_input(x, model), time_config=2).shape == (2, x.shape[0], 3)


def test_empty_loader_is_an_error():
    model = tiny_staged_net()
    with pytest.raises(InputError, match="no batches"):
        calibrate_bn(model, [], 2)


def test_fixed_calibration_loader_repeats_the_same_batches():
    from flexsnn.train.bn_calibration import fixed_calibration_loader

    train, _ = make_frame_loaders(n_train=64)
    fixed = fixed_calibration_loader(train, num_batches=2, seed=3)
    first = [y.tolist() for _, y in fixed]
    second = [y.tolist() for _, y in fixed]
    assert first == second and len(first) == 2 and len(first[0]) == 16
    # calibrating twice at the same config then gives identical statistics
    model = tiny_staged_net()
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)][0]
    calibrate_bn(model, fixed, 2, num_batches=2)
    a = bn.running_var.clone()
    calibrate_bn(model, fixed, 3, num_batches=2)
    calibrate_bn(model, fixed, 2, num_batches=2)
    assert torch.equal(a, bn.running_var)


def _plain_training(model, loader, steps=3):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _, (x, y) in zip(range(steps), loader):
        loss = nn.functional.cross_entropy(model.readout(model(model_input(x, model), time_config=(2, 3))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_calibrate_hook_in_a_plain_loop():
    from flexsnn.train import CalibrateBN, fixed_calibration_loader

    torch.manual_seed(0)
    model = tiny_staged_net()
    model.set_time_config(3)
    train, test = make_frame_loaders()
    calibrate = CalibrateBN(train, num_batches=2)
    x, _ = next(iter(test))
    for _epoch in range(2):
        _plain_training(model, train)
        model.eval()
        with pytest.raises(CalibrationError, match="calibrate_bn"):
            model(model_input(x, model))
        calibrate(model)
        with torch.no_grad():
            out = model(model_input(x, model))
    assert calibrate.calls == 2
    # same statistics as calibrate_bn on the hook's fixed batches at the net's config
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    hooked = [b.running_mean.clone() for b in bn]
    calibrate_bn(model, fixed_calibration_loader(train, 2), 3, num_batches=2)
    assert all(torch.equal(a, b.running_mean) for a, b in zip(hooked, bn))
    with torch.no_grad():
        assert torch.equal(model(model_input(x, model)), out)
    calibrate(model)  # fresh for (3, 3): skipped
    assert calibrate.calls == 2


def test_calibrate_hook_lightning_style_finds_the_net():
    from flexsnn.train import CalibrateBN

    class Wrapper(nn.Module):  # what a LightningModule holding the net looks like to the hook
        def __init__(self):
            super().__init__()
            self.net = tiny_staged_net()

    module = Wrapper()
    train, _ = make_frame_loaders()
    hook = CalibrateBN(train, time_config=(2, 4), num_batches=1)
    hook.on_validation_start(None, module)
    assert tuple(module.net.bn_calibrated_for) == (2, 4)
    _plain_training(module.net, train, steps=1)
    hook.on_test_start(None, module)
    assert hook.calls == 2 and tuple(module.net.bn_calibrated_for) == (2, 4)
    with pytest.raises(InputError, match="StagedNet"):
        hook(nn.Linear(2, 2))
    with pytest.raises(InputError, match="time_config"):
        CalibrateBN(train)(tiny_staged_net())
