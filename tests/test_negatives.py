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
