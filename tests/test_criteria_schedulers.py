"""Criteria against hand computations; schedules against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from runner.criteria import CrossEntropyCriterion, LabelSmoothedCrossEntropyCriterion
from runner.lr_scheduler import FixedLR, InverseSquareRootLR, steps_on_validation

from .conftest import compose_train


def _lprobs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    lprobs = F.log_softmax(torch.randn(2, 4, 6), -1)
    target = torch.tensor([[3, 4, 2, 1], [5, 2, 1, 1]])  # pad = 1
    return lprobs, target


def test_cross_entropy_matches_torch() -> None:
    lprobs, target = _lprobs()
    loss, nll = CrossEntropyCriterion(padding_idx=1).token_losses(lprobs, target)
    expect = F.nll_loss(lprobs.view(-1, 6), target.view(-1), ignore_index=1, reduction="sum")
    torch.testing.assert_close(loss, expect)
    torch.testing.assert_close(nll, expect)


def test_label_smoothing_matches_fairseqs_formula_by_hand() -> None:
    lprobs, target = _lprobs()
    eps = 0.1
    loss, nll = LabelSmoothedCrossEntropyCriterion(padding_idx=1, label_smoothing=eps).token_losses(lprobs, target)
    total = 0.0
    nll_total = 0.0
    for b in range(2):
        for t in range(4):
            y = int(target[b, t])
            if y == 1:
                continue
            lp = lprobs[b, t]
            nll_total += -float(lp[y])
            total += (1 - eps - eps / 5) * -float(lp[y]) + eps / 5 * -float(lp.sum())
    assert float(loss) == pytest.approx(total, rel=1e-5)
    assert float(nll) == pytest.approx(nll_total, rel=1e-5)


def _opt(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_inverse_sqrt_warms_up_then_decays() -> None:
    opt = _opt(1e-3)
    s = InverseSquareRootLR(opt, warmup_updates=4, warmup_init_lr=1e-7)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(16):
        opt.step()
        s.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-7)
    assert lrs[2] == pytest.approx(1e-7 + (1e-3 - 1e-7) * 2 / 4)
    assert lrs[4] == pytest.approx(1e-3)
    assert lrs[16] == pytest.approx(1e-3 * math.sqrt(4 / 16))


def test_fixed_shrinks_only_when_validation_stalls() -> None:
    opt = _opt(1.0)
    s = FixedLR(opt, lr_shrink=0.5)
    for loss, lr in ((3.0, 1.0), (2.0, 1.0), (2.5, 0.5), (1.0, 0.5), (1.0, 0.25)):
        s.step(loss)
        assert opt.param_groups[0]["lr"] == lr
    assert steps_on_validation(s)
    with pytest.raises(ValueError, match="lr_shrink"):
        FixedLR(opt, lr_shrink=0.0)


@pytest.mark.parametrize("name,at_half", [("cosine", 0.5), ("polynomial_decay", 0.5)])
def test_torch_schedules_run_per_update_to_max_update(name: str, at_half: float) -> None:
    cfg = compose_train([f"lr_scheduler={name}", "optimization.max_update=10", "optimizer=sgd", "optimizer.lr=1.0"])
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    s = instantiate(cfg.lr_scheduler)(opt)
    assert type(s).__module__ == "torch.optim.lr_scheduler" and not steps_on_validation(s)
    for _ in range(5):
        opt.step()
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(at_half)


def test_reduce_on_plateau_is_torchs_and_steps_on_validation() -> None:
    cfg = compose_train(["lr_scheduler=reduce_lr_on_plateau", "optimizer=sgd", "optimizer.lr=1.0"])
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    s = instantiate(cfg.lr_scheduler)(opt)
    assert isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau) and steps_on_validation(s)
    s.step(1.0)
    s.step(1.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
