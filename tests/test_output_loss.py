"""The output layer and the label-smoothed loss taken together, a block of rows at a time
(`qkv.train.losses.output_smoothed_cross_entropy`), against the output layer followed by the loss."""

import pytest
import torch

from qkv.models.seq2seq import EncoderDecoder, Seq2SeqConfig
from qkv.nn import native
from qkv.nn.linear import linear, set_kernel
from qkv.tasks.translation import PAD, translation_loss
from qkv.train import losses
from qkv.train.losses import label_smoothed_cross_entropy, output_smoothed_cross_entropy


@pytest.fixture(params=["chunked", "pytorch"])
def path(request, monkeypatch):
    """Both ways: blocks of 5 rows (so that a batch spans several, the last one short), and PyTorch's
    operations (`set_kernel("pytorch")`, as on a GPU)."""
    if request.param == "chunked" and native.kernel("smoothed_loss_forward") is None:
        pytest.skip("qkv's kernels are not built here")
    monkeypatch.setattr(losses, "CHUNK_BYTES", 5 * 4 * 13)  # 5 rows of V = 13 scores
    previous = set_kernel("auto" if request.param == "chunked" else "pytorch")
    yield request.param
    set_kernel(previous)


def _leaves(with_bias: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 6, generator=g, requires_grad=True)  # (B, T, D): 21 rows
    weight = torch.randn(13, 6, generator=g, requires_grad=True)  # (V, D)
    bias = torch.randn(13, generator=g, requires_grad=True) if with_bias else None
    target = torch.randint(1, 13, (3, 7), generator=g)
    target[0, 5:] = 0  # padding, ignored
    target[2, 0] = 0
    return x, weight, bias, target


@pytest.mark.parametrize("with_bias", [False, True])
def test_loss_and_gradients_are_those_of_the_layer_then_the_loss(path, with_bias):
    x, weight, bias, target = _leaves(with_bias)
    leaves = [t for t in (x, weight, bias) if t is not None]
    want, n_want = label_smoothed_cross_entropy(x @ weight.t() + (0 if bias is None else bias), target, 0.1, 0)
    (want / n_want * 0.7).backward()  # an incoming gradient other than 1
    expected = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    got, n = output_smoothed_cross_entropy(x, weight, bias, target, 0.1, 0)
    (got / n * 0.7).backward()
    assert n == n_want == 18
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for t, e in zip(leaves, expected):
        torch.testing.assert_close(t.grad, e, rtol=1e-4, atol=1e-6)


def test_without_gradients_and_for_weights_that_need_none(path):
    x, weight, _, target = _leaves(False)
    want, _ = label_smoothed_cross_entropy(linear(x, weight), target, 0.1, 0)
    with torch.inference_mode():
        got, _ = output_smoothed_cross_entropy(x, weight, None, target, 0.1, 0)
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    frozen = weight.detach()  # only the input's gradient is wanted
    loss, _ = output_smoothed_cross_entropy(x, frozen, None, target, 0.1, 0)
    loss.backward()
    x_grad, x.grad = x.grad, None
    label_smoothed_cross_entropy(linear(x, frozen), target, 0.1, 0)[0].backward()
    torch.testing.assert_close(x_grad, x.grad, rtol=1e-4, atol=1e-6)


def test_a_batch_without_rows_gives_zero_loss_and_zero_gradients(path):
    _, weight, bias, _ = _leaves(True)
    x = torch.randn(0, 6, requires_grad=True)
    loss, n = output_smoothed_cross_entropy(x, weight, bias, torch.zeros(0, dtype=torch.long), 0.1, 0)
    loss.backward()
    assert n == 0 and loss.item() == 0.0
    assert torch.equal(weight.grad, torch.zeros_like(weight)) and torch.equal(bias.grad, torch.zeros_like(bias))


def test_a_second_backward_gives_the_same_gradient_again(path):
    x, weight, _, target = _leaves(False)
    loss, _ = output_smoothed_cross_entropy(x, weight, None, target, 0.1, 0)
    if path == "pytorch":  # PyTorch's operations refuse it (tests/test_training_pieces.py)
        return
    loss.backward(retain_graph=True)
    first = weight.grad.clone()
    loss.backward()
    torch.testing.assert_close(weight.grad, 2 * first)


def test_the_scores_are_never_held_whole(monkeypatch):
    """The chunked path makes its scores in one block of at most CHUNK_BYTES, never an (N, V) tensor."""
    if native.kernel("smoothed_loss_forward") is None:
        pytest.skip("qkv's kernels are not built here")
    x, weight, bias, target = _leaves(True)
    monkeypatch.setattr(losses, "CHUNK_BYTES", 5 * 4 * 13)
    made = []
    real_mm = torch.mm

    def spy(a, b, *rest, **kw):
        made.append((a.size(0), b.size(1)))  # the product's shape
        return real_mm(a, b, *rest, **kw)

    monkeypatch.setattr(torch, "mm", spy)
    output_smoothed_cross_entropy(x, weight, None, target, 0.1, 0)
    scores = [rows for rows, cols in made if cols == 13]  # (rows, V): a block of scores
    assert scores == [5, 5, 5, 5, 1]  # 21 rows in blocks of 5


def test_the_translation_task_loss_equals_the_model_logits_loss(path):
    """The task asks the model for its decoder states and lets the criterion apply the tied output
    layer; loss and every parameter's gradient equal those of the model's own logits."""
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        src_vocab_size=17, tgt_vocab_size=17, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1,
        n_decoder_layers=1, dropout=0.0, attention_dropout=0.0, share_embeddings=True, output_bias=True,
    )  # fmt: skip
    model = EncoderDecoder(config).train()
    src = torch.randint(3, 17, (2, 5))
    tgt_in, tgt_out = torch.randint(3, 17, (2, 4)), torch.randint(3, 17, (2, 4))
    tgt_out[1, 3] = PAD
    want, n_want = label_smoothed_cross_entropy(model(src, tgt_in), tgt_out, 0.1, PAD)
    want.backward()
    expected = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(model.output(model(src, tgt_in, output_layer=False)), model(src, tgt_in))
    got, n = translation_loss(model, src, tgt_in, tgt_out, 0.1)
    got.backward()
    assert n == n_want == 7
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[k], rtol=1e-4, atol=1e-6, msg=k)


def test_sharded_weights_leave_the_output_layer_to_the_model():
    """Under FSDP the weights are DTensors, which only the model's own forward may use: the task then
    asks the model for its logits (a tensor subclass stands in for the DTensor here)."""

    class Sharded(torch.Tensor):
        pass

    calls = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.output = torch.nn.Linear(4, 9, bias=False)
            self.output.weight = torch.nn.Parameter(torch.randn(9, 4).as_subclass(Sharded))

        def forward(self, src, tgt, output_layer=True):
            calls.append(output_layer)
            return torch.randn(*tgt.shape, 9 if output_layer else 4)

    loss, n = translation_loss(Model(), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long),
                               torch.ones(2, 3, dtype=torch.long), 0.1)  # fmt: skip
    assert calls == [True] and n == 6 and torch.isfinite(loss)


def test_loss_with_gradient_in_one_pass_is_the_two_passes_bit_for_bit():
    if native.kernel("smoothed_loss_with_gradient") is None:
        pytest.skip("qkv's kernels are not built here")
    g = torch.Generator().manual_seed(3)
    z = torch.randn(37, 1001, generator=g) * 4  # rows over several tasks; V not a whole number of vectors
    target = torch.randint(1, 1001, (37,), generator=g)
    target[[0, 17, 36]] = 0  # ignored rows: zero loss, zero gradient
    part, lse = native.kernel("smoothed_loss_forward")(z, target, 0.1, 0)
    want = native.kernel("smoothed_loss_backward")(z, target, lse, 0.1, 0, 1.0, False)
    total = native.kernel("smoothed_loss_with_gradient")(z, target, 0.1, 0)  # z becomes the gradient
    assert total.item() == part.item()
    assert torch.equal(z, want)
    assert not z[[0, 17, 36]].any()


def test_a_target_outside_the_vocabulary_is_named_in_the_output_layers_loss(path):
    x, weight, bias, target = _leaves(True)
    target[1, 2] = 13
    with pytest.raises((RuntimeError, IndexError), match="13|out of bounds"):
        output_smoothed_cross_entropy(x, weight, bias, target, 0.1, 0)
