"""Progress bars: drawn only on a terminal, with totals that honour max_steps_per_epoch."""

import io

import pytest

from flexsnn import progress
from flexsnn.train.loop import epoch_total


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


@pytest.mark.parametrize("tty, enabled, shown", [(True, True, True), (False, True, False), (True, False, False)])
def test_bar_only_on_a_terminal(monkeypatch, tty, enabled, shown):
    stream = _Stream(tty)
    monkeypatch.setattr(progress.sys, "stderr", stream)
    bar = progress.progress_bar(range(50), enabled=enabled, desc="work", file=stream, mininterval=0)
    assert bar.disable is (not shown)
    assert list(bar) == list(range(50))  # the iterable passes through either way
    bar.close()
    assert ("work" in stream.getvalue()) is shown


def test_stderr_without_isatty_counts_as_no_terminal(monkeypatch):
    monkeypatch.setattr(progress.sys, "stderr", object())
    assert progress.on_terminal() is False


def test_epoch_total_honours_the_step_limit():
    assert epoch_total(range(10), 0) == 10
    assert epoch_total(range(10), 3) == 3
    assert epoch_total(range(2), 5) == 2
    assert epoch_total(iter(range(10)), 4) == 4  # no len(): the limit is the best total
    assert epoch_total(iter(range(10)), 0) is None
