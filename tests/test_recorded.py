"""CPU replays of a recorded decoding step (qkv.decoding.recorded): the same logits as the eager step,
and refusal of steps a replay would not repeat."""

import pytest
import torch
from conftest import native_kernel, needs_build

from qkv.decoding.generate import generate
from qkv.decoding.graphed import GraphedSteps
from qkv.decoding.recorded import Unreplayable, record
from qkv.models.gpt import GPT, GPTConfig


def small_gpt(**changes) -> GPT:
    # d_head 16: qkv's attention kernel serves it, and its GELU and single-row product where they apply
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, block_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, dropout=0.0)
    return GPT(GPTConfig(**{**cfg, **changes})).eval()


def test_replayed_steps_give_the_full_forward_logits_in_every_window():
    model = small_gpt()
    tokens = torch.randint(0, 50, (1, 60), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = model(tokens).logits
        steps = GraphedSteps(model, capture=True)
        logits = [steps(tokens[0, :5].tolist(), 0)]
        logits += [steps([int(tokens[0, t])], t) for t in range(5, 60)]
    assert sorted(steps.replays) == [32, 64] and all(r is not None for r in steps.replays.values())
    assert (torch.stack(logits, 1) - full[:, 4:]).abs().max() <= 1e-5


def test_recorded_generation_equals_the_plain_cache_and_no_cache():
    model = small_gpt(block_size=32)  # 60 new tokens: the window restarts twice
    prompt = [3, 1, 4, 1, 5]
    runs = [dict(), dict(record_steps=False), dict(use_cache=False)]
    first, *others = [list(generate(model, prompt, 60, temperature=0.0, **r)) for r in runs]
    assert all(other == first for other in others) and len(first) == 60
    sampled = [list(generate(model, prompt, 30, generator=torch.Generator().manual_seed(5), **r)) for r in runs[:2]]
    assert sampled[0] == sampled[1]
    # a one-token prompt: the first step is recorded before any write has allocated the cache's buffers
    first, *others = [list(generate(model, [7], 20, temperature=0.0, **r)) for r in runs]
    assert all(other == first for other in others)


@needs_build
def test_the_recording_holds_qkv_kernels_and_few_views():
    native_kernel("matvec")
    model = small_gpt()
    steps = GraphedSteps(model, capture=False)
    with torch.inference_mode():
        steps(list(range(5)), 0)
        steps.token.fill_(7)
        steps.position.fill_(5)
        steps.cache.at(steps.position, 32)
        replay, _ = record(steps.step)
    names = [getattr(op[1], "__name__", "") for op in replay.program if op[0] != "view"]
    assert "attention_forward" in names and "add_layer_norm" in names
    # each view is taken from the tensor that owns its memory: at most one per tensor a call made
    views = [op for op in replay.program if op[0] == "view"]
    assert len({op[5] for op in views}) == len(views) and not {op[1] for op in views} & {op[5] for op in views}


def test_steps_a_replay_would_not_repeat_are_refused():
    x = torch.randn(4)

    def reads_a_value():
        return x * 2 if float(x.sum()) > 0 else x * 3  # the branch depends on the data

    def draws():
        return x + torch.rand(4)

    def writes_a_constant():
        buffer = torch.zeros(4)  # made without tensor arguments: kept as a constant
        return buffer.add_(x)

    for step, why in ((reads_a_value, "reads tensor values"), (draws, "random"), (writes_a_constant, "constant")):
        with pytest.raises(Unreplayable, match=why):
            record(step)


def test_a_step_that_cannot_be_recorded_runs_eagerly_with_a_warning(monkeypatch):
    model = small_gpt()
    expected = list(generate(model, [1, 2, 3], 40, temperature=0.0, record_steps=False))
    eager_step = GraphedSteps.step
    monkeypatch.setattr(GraphedSteps, "step", lambda self: eager_step(self) + 0 * float(self.position.sum()))
    with pytest.warns(UserWarning, match="cannot be recorded .*reads tensor values"):
        assert list(generate(model, [1, 2, 3], 40, temperature=0.0)) == expected


def test_replays_follow_the_inputs_they_read():
    a, b = torch.randn(3, 4), torch.randn(4)

    def step():
        return (a @ b.view(-1, 1))[:, 0].unsqueeze(0).t().permute(1, 0).relu()  # views of views

    replay, _ = record(step)
    with torch.inference_mode():
        a.copy_(torch.randn(3, 4))
        b.copy_(torch.randn(4))
        assert torch.equal(replay(), step())


def test_attention_through_sdpa_and_dropout_outside_training_are_recorded():
    q, k, v = (torch.randn(1, 2, 1, 8) for _ in range(3))  # d_head 8: no qkv kernel, SDPA
    keep = torch.ones(1, 1, 1, 1, dtype=torch.bool)

    def step():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return torch.nn.functional.dropout(out, 0.5, training=False) + torch.nn.functional.dropout(out, 0.0)

    replay, _ = record(step)
    with torch.inference_mode():
        q.copy_(torch.randn(1, 2, 1, 8))
        assert torch.equal(replay(), step())
    with pytest.raises(Unreplayable, match="random"):
        record(lambda: torch.nn.functional.dropout(q, 0.5, training=True))


def test_a_model_left_in_training_mode_is_not_recorded():
    # its dropout draws a fresh mask every step, which a replay would repeat: the step runs eagerly
    model = small_gpt(dropout=0.5).train()
    with pytest.warns(UserWarning, match="draws random numbers"):
        tokens = list(generate(model, [1, 2, 3], 40, temperature=0.0))
    assert len(tokens) == 40


def test_a_window_that_few_steps_will_reach_is_not_recorded():
    model = small_gpt()
    with torch.inference_mode():
        steps = GraphedSteps(model, capture=True)
        expected = steps(list(range(5)), 0)
        few = [steps([7], 5, steps_left=3), steps([8], 6, steps_left=2)]
        assert steps.replays == {}  # 3 steps left: run eagerly
        many = steps([9], 7, steps_left=30)  # 25 of them in the 32-slot window: recorded
        assert list(steps.replays) == [32] and steps.replays[32] is not None
    eager = GraphedSteps(model, capture=False)
    with torch.inference_mode():
        assert torch.equal(eager(list(range(5)), 0), expected)
        assert all(torch.equal(eager([t], p), f) for t, p, f in zip((7, 8), (5, 6), few))
        assert torch.equal(eager([9], 7), many)
    # generate passes what is left: 8 new tokens after a 16-token prompt record nothing
    assert list(generate(model, list(range(16)), 8, temperature=0.0)) == list(
        generate(model, list(range(16)), 8, temperature=0.0, record_steps=False)
    )
