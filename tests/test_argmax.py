"""Greedy decoding's integer-screened argmax (qkv.decoding.argmax, qkv/nn/screened_argmax.cpp): the same
index as float32 scores give, on any input, whether or not this processor has the instructions that
make the route fast (the route is forced on here)."""

import pytest
import torch
from conftest import native_kernel, needs_build, random_tokens
from torch import nn

import qkv.decoding.argmax as argmax
import qkv.nn.linear as qlinear
import qkv.nn.weight_copies as weight_copies
from qkv.decoding.greedy import greedy_decode

pytestmark = needs_build


@pytest.fixture
def screening(monkeypatch):
    """The integer route for every weight, on any x86 or other processor."""
    native_kernel("screened_argmax")
    monkeypatch.setattr(argmax, "integer_products", lambda: True)
    monkeypatch.setattr(qlinear, "mkl_runs_generic_code", lambda: True)
    monkeypatch.setattr(argmax, "MIN_SCREENED", 0)
    calls = []
    real = argmax.quantized
    monkeypatch.setattr(argmax, "quantized", lambda w: calls.append(w) or real(w))
    return calls


def screened(x: torch.Tensor, output: nn.Linear) -> torch.Tensor:
    with torch.inference_mode(), weight_copies.packed_weights():
        return argmax.output_argmax(x, output)


def layer(v: int, d: int, bias: bool, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    output = nn.Linear(d, v, bias=bias)
    nn.init.normal_(output.weight, std=d**-0.5)
    if bias:
        nn.init.normal_(output.bias, std=0.5)
    return output


def exact_argmax(x: torch.Tensor, output: nn.Linear) -> torch.Tensor:
    """float64 scores: the float32 answer wherever float32 rounding cannot change it."""
    w = output.weight.double()
    z = x.double() @ w.t() + (output.bias.double() if output.bias is not None else 0)
    return z.argmax(-1)


@pytest.mark.parametrize("v, d, bias", [(8000, 256, False), (1001, 40, True), (37, 17, False), (512, 64, True)])
def test_the_screened_argmax_is_the_float32_one(screening, v, d, bias):
    output = layer(v, d, bias, seed=v)
    x = torch.randn(48, d) * 3
    assert torch.equal(screened(x, output), exact_argmax(x, output))
    assert screening, "the integer route was not taken"


def test_near_ties_are_decided_in_float32(screening):
    """Rows 5 and 7 of W score far above the rest and within 0.01 of each other (of scores near 20):
    the integer estimates cannot tell them apart (their bound is near 0.5 here), float32 can."""
    output = layer(300, 64, False, seed=3)
    torch.manual_seed(3)
    u = torch.randn(64)
    u = u / u.norm()
    x = 20 * u + 0.5 * torch.randn(40, 64)  # every row points along u
    with torch.no_grad():
        output.weight[5] = u
        r = torch.randn(64)
        output.weight[7] = u + 5e-3 * (r - (r @ u) * u)  # ahead of row 5 for some rows, behind for others
    z = x.double() @ output.weight.double().t()
    gap = z[:, 7] - z[:, 5]
    assert (gap.abs() < 0.05).all() and (gap > 0).any() and (gap < 0).any()
    clear = gap.abs() > 1e-4  # far above float32 rounding of scores near 20
    assert clear.sum() >= 30
    got = screened(x, output)
    assert set(got.tolist()) == {5, 7}
    assert torch.equal(got[clear], exact_argmax(x, output)[clear])


def test_ties_go_to_the_first_index_and_odd_rows_are_handled(screening):
    output = layer(100, 32, False, seed=4)
    with torch.no_grad():
        output.weight[60] = output.weight[20]  # exactly equal scores: argmax takes the first, 20
        output.weight[20] *= 4
        output.weight[60] *= 4
    x = 5 * output.weight[20].detach() / output.weight[20].detach().norm() + 0.1 * torch.randn(6, 32)
    x[3] = 0  # a row of zeros: every score is 0, the answer is index 0
    x[4, 5] = float("nan")  # a NaN row: every score NaN, argmax gives the first
    x[5] *= 1e30  # huge numbers
    reference = (x @ output.weight.t()).argmax(-1)
    got = screened(x, output)
    assert torch.equal(got[[0, 1, 2, 5]], exact_argmax(x, output)[[0, 1, 2, 5]])
    assert (got[:3] == 20).all() and got[3] == 0 and got[4] == reference[4]


def test_rows_are_rounded_within_half_a_step():
    x = torch.randn(5, 70) * torch.tensor([1e-3, 1, 30, 1e4, 0])[:, None]
    q, scale = native_kernel("quantize_rows")(x)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert ((x - scale[:, None] * q.float()).abs() <= scale[:, None] * (0.5 + 2**-11)).all()
    assert scale[4] == 1 and (q[4] == 0).all()  # a row of zeros
    q, scale = native_kernel("quantize_rows")(torch.tensor([[1.0, float("inf")], [float("nan"), 2.0]]))
    assert scale.isnan().all() and (q == 0).all()


def test_the_weight_is_rounded_within_half_a_step():
    w = torch.randn(50, 30) * 0.1
    p, t, l1 = argmax.quantized(w)
    assert p.dtype == torch.int8 and p.abs().max() == 127
    t32 = torch.tensor(t, dtype=torch.float32).item()
    assert t == t32  # a float32 value, the one the kernel uses
    assert ((w.double() - t * p.double()).abs() <= t * (0.5 + 2**-11)).all()  # the kernel's margin
    assert l1 >= w.double().abs().sum(1).max().item()


@pytest.mark.parametrize("v, d", [(8000, 256), (1001, 40), (37, 17), (9, 70)])
def test_single_rows_are_screened_to_the_float32_argmax(screening, v, d):
    """One row a call, as batch-1 generation asks: the integer scores from qkv's own loop, with weight
    widths that are and are not multiples of its 32-number steps, and row counts of 8 and not."""
    output = layer(v, d, True, seed=d)
    x = torch.randn(12, d) * 3
    got = torch.cat([screened(x[i : i + 1], output) for i in range(12)])
    assert torch.equal(got, exact_argmax(x, output))
    q = native_kernel("quantize_rows")(x)[0]
    p = argmax.quantized(output.weight).p
    exact = torch._int_mm(torch.cat([q, q[:5]]), p.t())[:12]  # _int_mm wants more than 16 rows
    assert torch.equal(native_kernel("int8_matvec")(q[:1], p), exact[:1])
    assert torch.equal(native_kernel("int8_matvec")(q[:5], p), exact[:5])  # a speculative check's rows
    assert torch.equal(screened(x[:5], output), exact_argmax(x[:5], output))


def test_a_weight_with_a_nan_is_scored_in_float32(screening):
    output = layer(300, 32, False, seed=8)
    with torch.no_grad():
        output.weight[17, 3] = float("nan")  # row 17 scores NaN for every input: argmax gives 17
    p, t, l1 = argmax.quantized(output.weight)
    assert l1 != l1 and t == t  # the bound is NaN; the scale still comes from the other numbers
    x = torch.randn(3, 32)
    assert screened(x, output).tolist() == [17, 17, 17] == (x @ output.weight.t()).argmax(-1).tolist()


def test_greedy_generation_takes_the_integer_route_and_the_float32_tokens(screening):
    """Batch-1 greedy generation keeps the integer weight for the call: recorded steps, the plain cache
    and the uncached forward (float32 scores) give the same tokens."""
    from qkv.decoding.generate import generate
    from qkv.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, block_size=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, dropout=0.0))
    model.eval()
    prompt = [5, 17, 2]
    recorded = list(generate(model, prompt, 40, temperature=0.0))
    assert len(screening) == 1  # the output layer rounded once for the call
    assert list(generate(model, prompt, 40, temperature=0.0, record_steps=False)) == recorded
    assert len(screening) == 2
    assert list(generate(model, prompt, 40, temperature=0.0, use_cache=False)) == recorded
    assert list(generate(model, prompt, 8, temperature=0.0)) == recorded[:8]  # too few tokens to repay it
    assert len(screening) == 2


def test_greedy_generation_restarting_its_window_takes_the_float32_tokens(screening, monkeypatch):
    """Past the context window the cache restarts from the last half window (a prompt-sized forward
    into the fixed buffers): its next token comes through the integer route too."""
    from qkv.decoding.generate import generate
    from qkv.models.gpt import GPT, GPTConfig

    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=300, block_size=32, d_model=64, n_heads=4, n_layers=2, d_ff=128, dropout=0.0))
    model.eval()
    screened_out = list(generate(model, [5, 17, 2], 70, temperature=0.0))
    assert len(screening) == 1
    monkeypatch.setattr(argmax, "enabled", False)  # float32 scores, the same steps otherwise
    assert list(generate(model, [5, 17, 2], 70, temperature=0.0)) == screened_out
    assert len(screening) == 1


def test_greedy_decoding_is_the_same_screened_or_not(screening, tiny_model, monkeypatch):
    torch.manual_seed(5)
    src = random_tokens(16, 7)
    screened_out = greedy_decode(tiny_model, src, 12)
    assert screening  # the integer route ran (once: one weight, one block)
    monkeypatch.setattr(argmax, "enabled", False)
    assert torch.equal(screened_out, greedy_decode(tiny_model, src, 12))


def test_the_route_stays_off_where_it_does_not_apply(screening):
    output = layer(64, 16, False, seed=6)
    x = torch.randn(4, 16)
    assert not argmax.screens(x, output.weight)  # a weight that gradients are tracked for
    with torch.no_grad():
        assert argmax.screens(x, output.weight)
        assert argmax.screens(x[:1], output.weight)  # one row too: qkv's int8_matvec
        assert not argmax.screens(x.double(), output.weight.double())
        previous = qlinear.set_kernel("pytorch")
        try:
            assert not argmax.screens(x, output.weight)
        finally:
            qlinear.set_kernel(previous)
        outside = argmax.output_argmax(x, output)  # outside a packed_weights() block: float32 scores
    assert torch.equal(outside, (x @ output.weight.t()).argmax(-1)) and not screening


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_the_route_is_taken_on_either_vendor_with_vnni(monkeypatch, vendor):
    """Measured faster on an AMD Zen 4 and an Intel Xeon alike: the vendor does not decide, the
    instructions do."""
    from qkv.nn import native

    def processor(flags: str) -> None:
        monkeypatch.setattr(native, "cpuinfo", lambda: f"vendor_id\t: {vendor}\nflags\t\t: {flags}\n")
        argmax.integer_products.cache_clear()

    monkeypatch.setattr(qlinear, "x86_with_both", lambda: True)
    try:
        processor("fpu avx2 avx512f avx512_vnni")
        assert argmax.integer_products() == hasattr(torch, "_int_mm")
        processor("fpu avx2 avx512f")  # no VNNI: float32 scores
        assert not argmax.integer_products()
    finally:
        argmax.integer_products.cache_clear()  # read again from the real processor on next use
