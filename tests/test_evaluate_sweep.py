import pytest
import torch
from conftest import make_frame_loaders, tiny_staged_net

from flexsnn.errors import InputError
from flexsnn.evaluate import accuracy_at, evaluate_config, spike_stats, sweep_configs, sweep_uniform


class ConstantNet(torch.nn.Module):
    """Predicts class 0 always: accuracy is the share of label 0."""

    input_kind = "frames"

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, time_config=None):
        t = time_config if isinstance(time_config, int) else time_config[-1]
        out = torch.zeros(t, x.shape[1], 3)
        out[..., 0] = 1
        return out


def test_accuracy_counts_correct_predictions():
    _, test = make_frame_loaders(n_test=30)  # labels cycle 0,1,2
    assert accuracy_at(ConstantNet(), test, 2) == pytest.approx(1 / 3)


def test_bn_model_requires_calibration_data():
    model = tiny_staged_net()
    _, test = make_frame_loaders()
    with pytest.raises(InputError, match="calib_loader is required"):
        evaluate_config(model, test, 2)


def test_sweep_calibrates_at_each_t():
    torch.manual_seed(0)
    model = tiny_staged_net()
    train, test = make_frame_loaders()
    res = sweep_uniform(model, test, [1, 3], train, calib_batches=1, progress=False)
    assert set(res) == {1, 3} and all(0 <= a <= 1 for a in res.values())
    assert tuple(model.bn_calibrated_for) == (3, 3)
    rows = sweep_configs(model, test, [(1, 3), (3, 1)], train, calib_batches=1, progress=False)
    assert [r["config"] for r in rows] == [[1, 3], [3, 1]]
    with pytest.raises(InputError, match="t_values"):
        sweep_uniform(model, test, [], train)


def test_spike_stats_match_a_manual_count():
    torch.manual_seed(0)
    model = tiny_staged_net(bn=False)
    _, test = make_frame_loaders(n_test=16)
    rows = spike_stats(model, test, (2, 3))
    assert [r.time_steps for r in rows] == [2, 3]
    assert [r.neurons for r in rows] == [16, 16]
    # manual: count the spikes of the first LIF with a hook
    from flexsnn.neurons import LIF

    lif = [m for m in model.modules() if isinstance(m, LIF)][0]
    total = []
    h = lif.register_forward_hook(lambda m, i, o: total.append(float(o.sum())))
    model.eval()
    with torch.no_grad():
        for x, _ in test:
            model(x.transpose(0, 1), time_config=(2, 3))
    h.remove()
    assert rows[0].spikes_per_sample == pytest.approx(sum(total) / 16)
    assert rows[0].firing_rate == pytest.approx(sum(total) / 16 / (16 * 2))
