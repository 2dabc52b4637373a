import math

import pytest
import torch
import torch.nn.functional as F

from qkv.nn import native
from qkv.nn.linear import set_kernel
from qkv.train.losses import label_smoothed_cross_entropy
from qkv.train.optim import OptimConfig
from qkv.train.schedules import cosine, inverse_sqrt, noam


@pytest.mark.parametrize("step", [1, 100, 3999, 4000, 4001, 20000, 100000])
def test_noam_is_the_papers_formula(step):
    expected = 512**-0.5 * min(step**-0.5, step * 4000**-1.5)
    assert noam(step, 512, 4000) == pytest.approx(expected, rel=1e-12)
    assert OptimConfig().lr_at(step, 512) == pytest.approx(expected, rel=1e-12)


def test_noam_peaks_at_warmup():
    lrs = [noam(s, 512, 4000) for s in range(1, 10000)]
    assert max(range(len(lrs)), key=lrs.__getitem__) + 1 == 4000
    assert lrs[3999] == pytest.approx(512**-0.5 * 4000**-0.5)


def test_other_schedules():
    assert inverse_sqrt(10, 1e-3, 10) == pytest.approx(1e-3) and inverse_sqrt(40, 1e-3, 10) == pytest.approx(5e-4)
    assert cosine(10, 1.0, 10, 110) == pytest.approx(1.0) and cosine(110, 1.0, 10, 110) == pytest.approx(0.0)
    assert cosine(60, 1.0, 10, 110) == pytest.approx(0.5)


@pytest.fixture(params=["compiled", "pytorch"])
def loss_path(request):
    """The criterion's two implementations: qkv's compiled kernel (float32 on the CPU) and PyTorch
    operations (every other case, and `set_kernel("pytorch")`)."""
    if request.param == "compiled" and native.kernel("smoothed_loss_forward") is None:
        pytest.skip("qkv's kernels are not built here")
    previous = set_kernel("auto" if request.param == "compiled" else "pytorch")
    yield request.param
    set_kernel(previous)


def test_label_smoothing_by_hand(loss_path):
    logits = torch.tensor([[[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4]]])
    target = torch.tensor([[0, 3]])
    eps, v = 0.1, 4
    total = 0.0
    for t in range(2):
        logp = torch.log_softmax(logits[0, t], -1)
        q = torch.full((v,), eps / v)
        q[target[0, t]] += 1 - eps  # (1 - eps) on the truth plus eps/V everywhere
        total += -(q * logp).sum().item()
    loss, n = label_smoothed_cross_entropy(logits, target, eps, ignore_index=-100)
    assert n == 2 and loss.item() == pytest.approx(total, rel=1e-6)


def test_padding_is_ignored(loss_path):
    logits = torch.randn(1, 3, 5)
    loss_all, n = label_smoothed_cross_entropy(logits, torch.tensor([[1, 2, 0]]), 0.1, ignore_index=0)
    loss_two, _ = label_smoothed_cross_entropy(logits[:, :2], torch.tensor([[1, 2]]), 0.1, ignore_index=0)
    assert n == 2 and loss_all.item() == pytest.approx(loss_two.item())
    assert math.isfinite(loss_all.item())


def _reference(logits, target, eps, ignore_index):
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=ignore_index,
        label_smoothing=eps,
        reduction="sum",
    )


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_value_and_gradient_are_pytorchs(eps, loss_path):
    """The written-out gradient (softmax minus the smoothed target) equals autograd's through
    F.cross_entropy, padding rows included; gradcheck confirms it in double precision."""
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(4, 30, 500, generator=g) * 4).requires_grad_()
    target = torch.randint(1, 500, (4, 30), generator=g)
    target[:, 20:] = 0  # padding
    mine, n = label_smoothed_cross_entropy(logits, target, eps, ignore_index=0)
    (grad,) = torch.autograd.grad(mine * 0.37, logits)  # a scale other than 1 reaches the gradient
    ref = _reference(logits, target, eps, 0)
    (ref_grad,) = torch.autograd.grad(ref * 0.37, logits)
    assert n == 80 and mine.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-6)
    assert grad[:, 20:].abs().max() == 0  # nothing flows into padding
    # and against central differences in double precision (gradcheck would run backward twice: refused below)
    small = torch.randn(2, 3, 7, dtype=torch.float64, generator=g, requires_grad=True)
    small_target = torch.tensor([[1, 0, 6], [0, 2, 3]])
    loss_of = lambda x: label_smoothed_cross_entropy(x, small_target, eps, 0)[0]  # noqa: E731
    (analytic,) = torch.autograd.grad(loss_of(small), small)
    numeric = torch.zeros_like(small)
    with torch.no_grad():
        for i in range(small.numel()):
            step = torch.zeros_like(small).view(-1).index_fill_(0, torch.tensor(i), 1e-6).view_as(small)
            numeric.view(-1)[i] = (loss_of(small + step) - loss_of(small - step)) / 2e-6
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_label_smoothing_stays_finite_for_a_hopeless_prediction_and_in_bf16(loss_path):
    """A true token scored far below the rest (its probability underflows in fp32) still gives the
    finite loss and gradient PyTorch's criterion gives; bf16 scores (autocast) are summed in fp32."""
    logits = torch.zeros(1, 2, 50)
    logits[0, 0, 7] = -300.0
    target = torch.tensor([[7, 3]])
    mine, _ = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=0)
    assert mine.item() == pytest.approx(_reference(logits, target, 0.1, 0).item(), rel=1e-6)
    half = torch.randn(3, 5, 40).bfloat16().requires_grad_()
    target = torch.randint(1, 40, (3, 5))
    mine, _ = label_smoothed_cross_entropy(half, target, 0.1, ignore_index=0)
    mine.backward()
    assert mine.dtype == torch.float32 and half.grad.dtype == torch.bfloat16
    assert mine.item() == pytest.approx(_reference(half.float(), target, 0.1, 0).item(), rel=1e-5)


def test_label_smoothing_refuses_a_second_backward_through_the_same_loss(loss_path):
    """PyTorch operations build the gradient in the memory of the saved softmax, so a second pass
    (retain_graph) is an error rather than a wrong gradient; the compiled kernel keeps the scores and
    gives the same gradient again."""
    logits = torch.randn(2, 3, 11, requires_grad=True)
    loss, _ = label_smoothed_cross_entropy(logits, torch.randint(1, 11, (2, 3)), 0.1, ignore_index=0)
    loss.backward(retain_graph=True)
    if loss_path == "pytorch":
        with pytest.raises(RuntimeError, match="backward through the same loss twice"):
            loss.backward()
        return
    first = logits.grad.clone()
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * first)


def test_int32_targets_give_the_same_loss(loss_path):
    logits = torch.randn(2, 3, 11)
    target = torch.tensor([[1, 4, 0], [10, 2, 3]])
    want, _ = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=0)
    got, _ = label_smoothed_cross_entropy(logits, target.int(), 0.1, ignore_index=0)
    torch.testing.assert_close(got, want)


def test_compiled_loss_names_a_target_outside_the_vocabulary():
    if native.kernel("smoothed_loss_forward") is None:
        pytest.skip("qkv's kernels are not built here")
    with pytest.raises(RuntimeError, match="target id 11 is outside the vocabulary of 11"):
        label_smoothed_cross_entropy(torch.randn(1, 2, 11), torch.tensor([[3, 11]]), 0.1, ignore_index=0)


def test_adam_is_fused_for_plain_tensors_and_a_resumed_run_keeps_its_own_choice(tmp_path):
    """qkv's trainer takes PyTorch's fused AdamW; a checkpoint it wrote resumes in a process that
    keeps PyTorch's default (FSDP's sharded tensors) with the same state and that process's choice."""
    from qkv.train.state import load_state, rank_state, save_state

    class Task:
        def state_dict(self):
            return {}, {}

        def load_state_dict(self, tensors, extra):
            pass

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    fused = OptimConfig().build(model)
    assert [g["fused"] for g in fused.param_groups] == [True, True]
    for g in fused.param_groups:
        g["lr"] = 1e-2
    model(torch.randn(2, 3)).sum().backward()
    fused.step()
    save_state(tmp_path, fused, [rank_state(Task())], {"step": 1})
    default = OptimConfig().build(model)
    for g in default.param_groups:
        g["fused"] = None  # as under FSDP
    load_state(tmp_path, default, Task())
    assert [g["fused"] for g in default.param_groups] == [None, None]
    torch.testing.assert_close(default.state[model.weight]["exp_avg"], fused.state[model.weight]["exp_avg"])
    default.step()  # the loop implementation takes the fused one's state
