import torch

from fflab.negatives import hard_wrong_labels, overlay_label, uniform_wrong_labels


def test_uniform_wrong_labels_never_true_and_cover_all():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (5000,), generator=g)
    neg = uniform_wrong_labels(y, 10, generator=g)
    assert (neg != y).all()
    assert set(neg.tolist()) == set(range(10))


def test_hard_wrong_labels_follow_probs_and_never_true():
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(4000, dtype=torch.long)
    probs = torch.zeros(4000, 10)
    probs[:, 0] = 0.9   # true label: must never be drawn
    probs[:, 3] = 0.075
    probs[:, 7] = 0.025
    neg = hard_wrong_labels(probs, y, generator=g)
    assert (neg != y).all()
    frac3 = (neg == 3).float().mean().item()
    assert 0.7 < frac3 < 0.8 and set(neg.tolist()) <= {3, 7}
    # a perfectly confident model still yields valid wrong labels
    onehot = torch.nn.functional.one_hot(y[:100], 10).float()
    neg = hard_wrong_labels(onehot, y[:100], generator=g)
    assert (neg != 0).all()


def test_hard_wrong_labels_draw_as_torch_multinomial_does(monkeypatch):
    """The sampler skips torch.multinomial's checks (host reads), not its draw: on CPU the same
    labels from the same generator, which is left in the same state; and it reads the host never."""
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(300, 10, generator=g).softmax(1)
    y = torch.randint(0, 10, (300,), generator=g)
    ref = (probs + 1e-12).scatter_(1, y[:, None], 0.0)   # what the sampler draws from
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = torch.multinomial(ref, 1, generator=g1).squeeze(1)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: (_ for _ in ()).throw(AssertionError("host read")))
    got = hard_wrong_labels(probs, y, generator=g2)
    assert torch.equal(got, expected)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_overlay_touches_exactly_ten_pixels():
    x = torch.rand(8, 784)
    y = torch.arange(8)
    out = overlay_label(x, y)
    changed = (out != x).any(0)
    assert changed[10:].sum() == 0
    assert torch.equal(out[:, :10], torch.eye(10)[y])
    neutral = overlay_label(x, None)
    assert torch.allclose(neutral[:, :10], torch.full((8, 10), 0.1))
    assert torch.equal(neutral[:, 10:], x[:, 10:])
