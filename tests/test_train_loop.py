"""The training loop: MTT steps, options, per-epoch rows, determinism.

``TinyStaged`` and ``noisy_dataset`` are also used by the resume and distributed tests (and
by the scripts they run in subprocesses): a two-stage net with the StagedNet interface
(``num_stages``, ``forward(x, time_config=...)``, ``input_kind="frames"``) that consumes the
torch RNG (dropout) while training, and a dataset whose items draw noise from the global
torch RNG, so any RNG mishandling on resume shows up in the weights.
"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from flexsnn.errors import InputError
from flexsnn.train.loop import TrainOptions, fit, resolve_amp, time_averaged_loss, train_step
from flexsnn.train.samplers import MTTSampler, SDTSampler


def resample(x: torch.Tensor, t_out: int) -> torch.Tensor:
    """Nearest-step resampling of [T, B, ...] to t_out steps (differentiable)."""
    t_in = x.shape[0]
    idx = torch.arange(t_out) * t_in // t_out
    return x[idx]


class TinyStaged(nn.Module):
    """Two stages: Linear(+BN)+tanh at T_1, then a linear head at T_2. x is [T, B, F]."""

    input_kind = "frames"
    num_stages = 2

    def __init__(self, features: int = 8, hidden: int = 12, classes: int = 3, bn: bool = False, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.bn2 = nn.BatchNorm1d(hidden) if bn else nn.Identity()
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor, time_config) -> torch.Tensor:
        t1, t2 = time_config
        x = resample(x, t1)
        b = x.shape[1]
        h = torch.tanh(self.bn(self.fc1(x.flatten(0, 1))))
        h = self.drop(h).view(t1, b, -1)
        h = resample(h, t2)
        h = torch.tanh(self.bn2(self.fc2(h.flatten(0, 1))))
        return self.head(h).view(t2, b, -1)


class NoisyFrames(Dataset):
    """Learnable frames [T, F] (class sets the sign pattern) plus noise from the GLOBAL torch RNG."""

    def __init__(self, n: int = 40, t: int = 3, features: int = 8, classes: int = 3, noise: float = 0.1, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % classes
        centers = torch.randn(classes, features, generator=g)
        self.x = centers[self.y][:, None, :].expand(n, t, features) + 0.5 * torch.randn(n, t, features, generator=g)
        self.noise = noise

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + self.noise * torch.randn(self.x.shape[1:]), self.y[i]


def noisy_loader(n=40, batch=8, seed=0, **kw) -> DataLoader:
    return DataLoader(
        NoisyFrames(n=n, **kw), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )


def model_input_tf(x):
    return x.transpose(0, 1)


def test_train_step_sums_the_gradients_of_every_config_and_steps_once():
    torch.manual_seed(0)
    model = TinyStaged()
    x = torch.randn(3, 5, 8)  # [T, B, F]
    y = torch.tensor([0, 1, 2, 0, 1])
    configs = [(1, 3), (3, 2), (2, 2)]
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for cfg in configs:
        model.zero_grad()
        time_averaged_loss(model(x, time_config=cfg), y).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    stats = {}
    loss = train_step(model, x, y, configs, opt, stats=stats)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[n])
        torch.testing.assert_close(p.detach(), before[n] - 0.5 * expected[n])  # exactly one SGD step
    assert stats["seen"] == 15 and 0 <= stats["correct"] <= 15
    assert loss > 0


def test_train_step_all_reduces_only_on_the_last_backward():
    class FakeDDP(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module
            self.synced_backwards = 0
            self.unsynced = 0
            self._in_no_sync = False

        def forward(self, *a, **kw):
            if self._in_no_sync:
                self.unsynced += 1
            else:
                self.synced_backwards += 1
            return self.module(*a, **kw)

        def no_sync(self):
            import contextlib

            @contextlib.contextmanager
            def ctx():
                self._in_no_sync = True
                yield
                self._in_no_sync = False

            return ctx()

    wrapped = FakeDDP(TinyStaged())
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    x, y = torch.randn(2, 4, 8), torch.tensor([0, 1, 2, 0])
    train_step(wrapped, x, y, [(1, 1), (2, 1), (2, 2)], opt)
    assert (wrapped.unsynced, wrapped.synced_backwards) == (2, 1)


def test_train_step_rejects_empty_configs():
    model = TinyStaged()
    with pytest.raises(InputError, match="configs is empty"):
        train_step(model, torch.randn(2, 2, 8), torch.tensor([0, 1]), [], torch.optim.SGD(model.parameters(), lr=0.1))


def test_options_are_validated():
    with pytest.raises(InputError, match="max_steps_per_epoch"):
        TrainOptions(max_steps_per_epoch=-1)
    with pytest.raises(InputError, match="checkpoint_every_steps"):
        TrainOptions(checkpoint_every_steps=1.5)
    with pytest.raises(InputError, match="amp"):
        TrainOptions(amp="fp8")
    assert resolve_amp("auto", "cpu") == "none"
    assert resolve_amp("auto", "cuda") == "fp16"
    assert resolve_amp("bf16", "cpu") == "bf16"


def test_fit_learns_and_reports_one_row_per_epoch():
    torch.manual_seed(1)
    model = TinyStaged()
    rows = fit(
        model,
        noisy_loader(n=36, batch=12),
        MTTSampler(1, 3, sample_num=3),
        TrainOptions(epochs=3, lr=0.2, seed=3),
        progress=False,
    )
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(r["steps"] == 3 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["train_acc"] > 0.8  # 3 separable classes
    assert rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine schedule ends at 0


def test_max_steps_per_epoch_cuts_epochs_short():
    torch.manual_seed(1)
    calls = []
    model = TinyStaged()
    rows = fit(
        model,
        noisy_loader(n=48),
        SDTSampler(2),
        TrainOptions(epochs=2, max_steps_per_epoch=1),
        progress=False,
        on_epoch_end=lambda e, r: calls.append(e),
    )
    assert [r["steps"] for r in rows] == [1, 1] and calls == [1, 2]


def test_same_seed_same_weights_and_configs_come_from_the_seed():
    def run(seed):
        torch.manual_seed(0)
        model = TinyStaged(dropout=0.2)
        fit(model, noisy_loader(n=24), MTTSampler(1, 3), TrainOptions(epochs=2, seed=seed, lr=0.1), progress=False)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampler_configs_depend_only_on_the_seed():
    # Every DDP rank builds random.Random(seed): the same stream of TimeConfigs on each.
    s = MTTSampler(1, 6, sample_num=3)
    r1, r2 = random.Random(1000), random.Random(1000)
    assert [s.sample(r1, 4) for _ in range(5)] == [s.sample(r2, 4) for _ in range(5)]


@pytest.mark.parametrize("channels_last", [True, False])
def test_fit_lays_conv_weights_out_channels_last_unless_told_not_to(channels_last):
    from flexsnn.models import build_model

    torch.manual_seed(0)
    model = build_model("digits_conv", channels=(4, 4), hidden=8)
    conv = model.stages[0][0]
    x = (torch.rand(8, 2, 2, 34, 34) < 0.2).float()  # frames batch-first, as the loaders yield them
    loader = DataLoader(list(zip(x, torch.randint(0, 10, (8,)))), batch_size=4)
    before = conv.weight.detach().clone()
    fit(
        model,
        loader,
        SDTSampler(2),
        TrainOptions(epochs=1, max_steps_per_epoch=1, channels_last=channels_last),
        progress=False,
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert conv.weight.is_contiguous() != channels_last
    assert not torch.equal(conv.weight.detach(), before)  # it trained (the optimizer saw the same Parameter)


# ---- the stem of a static-input StagedNet runs once per iteration (train_step(share_stem=True))
def static_net(momentum=0.1, stem_pool=True):
    from flexsnn.neurons import LIF
    from flexsnn.runtime import use_channels_last
    from flexsnn.staged import StagedNet

    torch.manual_seed(0)
    stem = [nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6, momentum=momentum)]
    stem += [nn.AvgPool2d(2)] if stem_pool else []
    stages = [
        [*stem, LIF(v_th=0.3), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=momentum), LIF(v_th=0.3)],
        [nn.Flatten(), nn.Linear(8 * (4 if stem_pool else 8) ** 2, 10), nn.BatchNorm1d(10), LIF(v_th=0.2)],
    ]
    return use_channels_last(StagedNet(stages, head=nn.Linear(10, 4), input_kind="static"))


def _one_iteration(net, x, y, configs, share):
    import copy

    net = copy.deepcopy(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    loss = train_step(net, x, y, configs, opt, share_stem=share)
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    return net, loss, grads


@pytest.mark.parametrize("momentum", [0.1, None])  # None: BN's cumulative average
def test_shared_stem_gives_the_unshared_outputs_bn_statistics_and_gradients(momentum):
    net = static_net(momentum)
    assert net.stem_length() == 3  # conv, BN, pool: up to the first neuron
    x, y = torch.rand(5, 3, 8, 8) * 2, torch.tensor([0, 1, 2, 3, 1])
    configs = [(3, 2), (1, 4), (3, 3)]  # T_1 repeats and differs across the configs
    shared, loss_s, grads_s = _one_iteration(net, x, y, configs, share=True)
    plain, loss_p, grads_p = _one_iteration(net, x, y, configs, share=False)
    assert loss_s == pytest.approx(loss_p, rel=1e-5)
    for name, g in grads_p.items():
        torch.testing.assert_close(grads_s[name], g, rtol=1e-4, atol=1e-6, msg=name)
    buffers_p = dict(plain.named_buffers())
    for name, b in shared.named_buffers():  # running mean / var (n/(n-1) with n = T_1*B*H*W), counts
        torch.testing.assert_close(b, buffers_p[name], rtol=1e-5, atol=1e-7, msg=name)
    assert int(shared.stages[0][1].num_batches_tracked) == 3  # one update per config
    for p_s, p_p in zip(shared.parameters(), plain.parameters()):  # the optimizer step alike
        torch.testing.assert_close(p_s, p_p, rtol=1e-4, atol=1e-6)
    # and the forward from a precomputed stem equals the plain forward (eval mode: running stats)
    shared.eval()
    shared.require_calibration = False
    stem = shared.run_stem(x, [2])
    torch.testing.assert_close(shared(x, (2, 3), stem_output=stem), shared(x, (2, 3)), rtol=1e-5, atol=1e-6)


def test_shared_stem_with_one_value_per_channel_and_without_hooks_only():
    from flexsnn.neurons import LIF
    from flexsnn.staged import StagedNet
    from flexsnn.train.loop import _can_share_stem

    torch.manual_seed(1)
    # batch 1, Linear + BN1d: one value per channel per copy; T_1 copies have zero variance
    net = StagedNet([[nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), LIF(v_th=0.1)]], head=nn.Linear(6, 2))
    x, y = torch.rand(1, 3, 4), torch.tensor([1])
    shared, _, grads_s = _one_iteration(net, x, y, [(2,), (3,)], share=True)
    plain, _, grads_p = _one_iteration(net, x, y, [(2,), (3,)], share=False)
    for name, g in grads_p.items():  # the stem's true gradient is 0 here; unshared gives ~5e-6 noise
        torch.testing.assert_close(grads_s[name], g, rtol=1e-4, atol=2e-5, msg=name)
    torch.testing.assert_close(shared.stages[0][2].running_var, plain.stages[0][2].running_var)
    assert _can_share_stem(net)
    handle = net.stages[0][1].register_forward_hook(lambda m, i, o: None)  # e.g. an op counter
    assert not _can_share_stem(net)
    handle.remove()
    frames = StagedNet([[nn.Conv2d(2, 2, 1), LIF()]], input_kind="frames")
    assert frames.stem_length() == 0 and not _can_share_stem(frames)
    with_dropout = StagedNet([[nn.Dropout(0.5), nn.Linear(3, 3), LIF()]])  # random per step: no stem
    assert with_dropout.stem_length() == 0


def test_stem_output_of_the_wrong_batch_or_a_frames_net_is_refused():
    from flexsnn.staged import StagedNet

    net = static_net()
    x = torch.rand(5, 3, 8, 8)
    with pytest.raises(InputError, match="stem_output must be run_stem"):
        net(x, (2, 2), stem_output=net.run_stem(x[:4], [2]))
    frames = StagedNet([[nn.Linear(3, 3)]], input_kind="frames")
    with pytest.raises(InputError, match="run_stem needs a static-input StagedNet"):
        frames.run_stem(torch.rand(2, 3), [1])
    with pytest.raises(InputError, match="first_steps is empty"):
        net.run_stem(x, [])


# ---- configs drawing the same T for the first stages share them (train_step(share_stages=True))
def frames_net(momentum=0.1, dropout=False):
    from flexsnn.neurons import LIF
    from flexsnn.runtime import use_channels_last
    from flexsnn.staged import StagedNet

    torch.manual_seed(0)
    first = [nn.Conv2d(2, 4, 3, stride=2, bias=False), nn.BatchNorm2d(4, momentum=momentum), LIF(v_th=0.3)]
    second = [nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6, momentum=momentum), LIF(v_th=0.3)]
    third = [
        nn.Flatten(),
        *([nn.Dropout(0.3)] if dropout else []),
        nn.Linear(6 * 16, 8),
        nn.BatchNorm1d(8),
        LIF(v_th=0.2),
    ]
    return use_channels_last(StagedNet([first, second, third], head=nn.Linear(8, 3), input_kind="frames"))


def _stage_calls(net):
    """Count each stage's forwards by its last layer's (an instance attribute, so no hook
    disables the sharing)."""
    calls = [0] * net.num_stages
    for i, stage in enumerate(net.stages):
        last = list(stage)[-1]

        def counted(x, _forward=last.forward, _i=i):
            calls[_i] += 1
            return _forward(x)

        last.forward = counted
    return calls


def _step(net, x, y, configs, share, seed=0):
    import copy

    net = copy.deepcopy(net)
    calls = _stage_calls(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    stats: dict = {}
    torch.manual_seed(seed)
    loss = train_step(net, x, y, configs, opt, share_stages=share, stats=stats)
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    return net, loss, grads, stats, calls


def _assert_same_training(a, b, rtol=1e-4, atol=1e-6):
    net_a, loss_a, grads_a, stats_a, _ = a
    net_b, loss_b, grads_b, stats_b, _ = b
    assert loss_a == pytest.approx(loss_b, rel=1e-6) and stats_a == stats_b
    for name, g in grads_b.items():
        torch.testing.assert_close(grads_a[name], g, rtol=rtol, atol=atol, msg=name)
    buffers_b = dict(net_b.named_buffers())
    for name, buf in net_a.named_buffers():  # running mean / var and num_batches_tracked
        torch.testing.assert_close(buf, buffers_b[name], rtol=1e-5, atol=1e-7, msg=name)
    for p_a, p_b in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(p_a, p_b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("momentum", [0.1, None])  # None: BN's cumulative average
@pytest.mark.parametrize(
    "configs,expected_calls",
    [
        ([(3, 2, 4), (3, 5, 1), (2, 5, 1)], [2, 3, 3]),  # stage 1 shared by two configs
        ([(3, 2, 4), (3, 2, 1), (3, 5, 1)], [1, 2, 3]),  # stage 1 by three, stage 2 by two
        ([(4, 4, 4), (4, 4, 4), (1, 2, 3)], [2, 2, 2]),  # one config twice: only the head per config
        ([(1, 2, 3), (2, 2, 3), (3, 2, 3)], [3, 3, 3]),  # T_1 differs: nothing shared
        ([(3, 2, 4), (2, 5, 1), (3, 2, 1), (2, 4, 4)], [2, 3, 4]),  # interleaved: stage 1 x2, stage 2 once
    ],
)
def test_shared_stages_give_the_unshared_losses_statistics_and_gradients(momentum, configs, expected_calls):
    net = frames_net(momentum)
    x, y = torch.rand(5, 4, 2, 9, 9).round(), torch.tensor([0, 1, 2, 1])  # T_in = 5 frames
    shared = _step(net, x, y, configs, share=True)
    plain = _step(net, x, y, configs, share=False)
    assert plain[4] == [len(configs)] * 3 and shared[4] == expected_calls
    _assert_same_training(shared, plain)
    first_bn = shared[0].stages[0][1]
    assert int(first_bn.num_batches_tracked) == len(configs)  # one update per config, shared or not
    assert first_bn.momentum == momentum  # restored after the shared forward


def test_shared_stages_on_a_static_net_combine_with_the_shared_stem():
    net = static_net()
    x, y = torch.rand(5, 3, 8, 8) * 2, torch.tensor([0, 1, 2, 3, 1])
    configs = [(3, 2), (3, 4), (1, 4)]
    shared = _step(net, x, y, configs, share=True)
    plain = _step(net, x, y, configs, share=False)
    assert shared[4] == [2, 3] and plain[4] == [3, 3]
    _assert_same_training(shared, plain)
    assert int(shared[0].stages[0][1].num_batches_tracked) == 3  # the stem's BN: run_stem's updates only


def test_a_stage_with_randomness_hooks_or_recording_is_not_shared():
    from flexsnn.train.loop import shareable_stage

    x, y = torch.rand(5, 4, 2, 9, 9).round(), torch.tensor([0, 1, 2, 1])
    configs = [(3, 2, 4), (3, 2, 1)]
    net = frames_net(dropout=True)  # dropout in stage 3: stages 1 and 2 still shared
    assert [shareable_stage(s) for s in net.stages] == [True, True, False]
    assert _step(net, x, y, configs, share=True, seed=3)[4] == [1, 1, 2]
    net = frames_net()
    net.stages[0][2].record = True  # a spike counter sees every forward
    assert not shareable_stage(net.stages[0])
    assert _step(net, x, y, configs, share=True)[4] == [2, 2, 2]  # nor any stage after it
    net = frames_net()
    handle = net.stages[1][0].register_forward_hook(lambda m, i, o: None)
    assert _step(net, x, y, configs, share=True)[4] == [1, 2, 2]
    handle.remove()
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        assert _step(frames_net(), x, y, configs, share=True)[4] == [2, 2, 2]
    finally:
        handle.remove()

    class Noisy(nn.Module):  # an unknown module type may draw random numbers
        def forward(self, x):
            return x + 0.01 * torch.randn_like(x)

    net = frames_net()
    net.stages[0].append(Noisy())
    assert not shareable_stage(net.stages[0])


def test_shared_stages_match_with_dropout_after_them_and_seeded_rng():
    # the dropout stage runs once per config either way, in the configs' order
    net = frames_net(dropout=True)
    x, y = torch.rand(5, 4, 2, 9, 9).round(), torch.tensor([0, 1, 2, 1])
    configs = [(3, 2, 4), (2, 2, 4), (3, 2, 1)]  # interleaved: the masks come in the same order
    _assert_same_training(_step(net, x, y, configs, share=True, seed=5), _step(net, x, y, configs, share=False, seed=5))


def test_shared_batch_statistics_update_as_the_forwards_they_stand_for():
    from flexsnn.staged import SharedBatchStatistics

    for momentum in (0.1, None):
        torch.manual_seed(0)
        shared, plain = nn.BatchNorm2d(3, momentum=momentum), nn.BatchNorm2d(3, momentum=momentum)
        x, other = torch.randn(6, 3, 4, 4) * 3 + 1, torch.randn(6, 3, 4, 4) - 2
        history = torch.randn(6, 3, 4, 4)
        for bn in (shared, plain):  # a history, so the cumulative average has n > 0
            bn(history)
        statistics = SharedBatchStatistics(shared)
        with statistics.capture():
            y = shared(x)
        assert torch.equal(shared.running_mean, plain.running_mean) and int(shared.num_batches_tracked) == 1
        # x, other, x, x in this order: the shared forward's updates come at its forwards' turns
        for step in ("x", "other", "x", "x"):
            if step == "x":
                statistics.update()
                y_plain = plain(x)
            else:
                shared(other), plain(other)
        torch.testing.assert_close(y, y_plain)
        torch.testing.assert_close(shared.running_mean, plain.running_mean, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(shared.running_var, plain.running_var, rtol=1e-6, atol=1e-7)
        assert int(shared.num_batches_tracked) == int(plain.num_batches_tracked) == 5
        assert shared.momentum == momentum
    frozen = nn.BatchNorm2d(3).eval()
    before = frozen.running_mean.clone()
    statistics = SharedBatchStatistics([frozen])
    with statistics.capture():
        frozen(torch.randn(2, 3, 4, 4))
    statistics.update()
    assert torch.equal(frozen.running_mean, before) and int(frozen.num_batches_tracked) == 0
    failing = nn.BatchNorm2d(3, momentum=0.2)
    statistics = SharedBatchStatistics(failing)
    with pytest.raises(RuntimeError), statistics.capture():
        failing(torch.randn(2, 4, 4, 4))  # wrong channel count
    assert failing.momentum == 0.2 and int(failing.num_batches_tracked) == 0  # all put back
    with pytest.raises(RuntimeError, match="capture"):
        statistics.update()


def test_forward_in_pieces_equals_forward():
    net = frames_net().eval()
    net.require_calibration = False
    x = torch.rand(5, 2, 2, 9, 9).round()
    cfg = (3, 2, 4)
    full = net(x, cfg)
    for k in range(1, net.num_stages + 1):
        h, resolved = net.stage_input(x, cfg)
        h = net.run_stages(h, resolved, 0, k)
        torch.testing.assert_close(net.run_head(net.run_stages(h, resolved, k, net.num_stages)), full, rtol=0, atol=0)
    with pytest.raises(InputError, match="not a range"):
        net.run_stages(h, cfg, 2, 1)


def test_a_hook_on_the_net_itself_sees_every_config():
    net = frames_net()
    seen = []
    net.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["time_config"]), with_kwargs=True)
    configs = [(3, 2, 4), (3, 2, 1)]
    train_step(net, torch.rand(5, 2, 2, 9, 9), torch.tensor([0, 1]), configs, torch.optim.SGD(net.parameters(), lr=0.1))
    assert seen == configs
