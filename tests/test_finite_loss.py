"""A non-finite loss stops training in one line naming the iteration and the loss terms, before
the broken model is saved (FiniteLossHook, issue 6); patience tolerates isolated ones."""
import math
import re

import pytest
from helpers import ToyRegression, one_line, toy_regression_runner

from convnext_backbone.engine import FiniteLossHook, NonFiniteLossError

pytestmark = pytest.mark.core


@pytest.mark.parametrize('value, shown', [(math.nan, 'nan'), (math.inf, 'inf')])
@pytest.mark.parametrize('loop, where', [
    (dict(by_epoch=False, max_iters=6), 'iteration 6'),
    (dict(by_epoch=True, max_epochs=2), 'iteration 6 (epoch 2, batch 2)')])  # 4 batches an epoch
def test_non_finite_loss_stops_training_naming_iteration_and_terms(tmp_path, value, shown, loop,
                                                                   where):
    runner = toy_regression_runner(tmp_path, model=ToyRegression(bad={6}, value=value),
                                   train_cfg=loop)
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    message = one_line(str(err.value))
    assert message.startswith(f'Non-finite loss at {where}: loss={shown}, loss_a=')
    assert f'loss_b={shown}. Training stopped before saving this model.' in message
    assert re.search(r'loss_a=\d', message)
    assert message.endswith(f'Last checkpoint: {tmp_path / "iter_5.pth"}')
    # stopped before the checkpoint hook: no checkpoint of the broken model
    assert (tmp_path / 'iter_5.pth').exists() and not (tmp_path / 'iter_6.pth').exists()


@pytest.mark.parametrize('bad, stops_at', [({3}, None), ({3, 5}, None), ({3, 4}, 4)])
def test_patience_tolerates_isolated_non_finite_losses(tmp_path, bad, stops_at):
    hook = dict(type='convnext_backbone.FiniteLossHook', patience=1)
    runner = toy_regression_runner(tmp_path, model=ToyRegression(bad=bad), custom_hooks=[hook])
    hooks = [h for h in runner.hooks if isinstance(h, FiniteLossHook)]
    assert len(hooks) == 1 and hooks[0].patience == 1  # the config's hook, not a second one
    if stops_at is None:
        runner.train()
        assert runner.iter == 6
    else:
        with pytest.raises(NonFiniteLossError, match=f'at iteration {stops_at}: .*'
                                                     r'\(2 iterations in a row\)'):
            runner.train()


@pytest.mark.parametrize('kwargs', [dict(patience=-1), dict(amp_patience=1.5)])
def test_finite_loss_hook_rejects_bad_patience(kwargs):
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=re.escape(f'{name}={value!r} must be an int >= 0')):
        FiniteLossHook(**kwargs)

