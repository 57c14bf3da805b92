"""Tests for hybrid-image negatives (paper section 3.2): masks, hybrids, pairing, gallery."""
import pytest
import torch
import torch.nn.functional as F

from fflab.hybrid import compare_blur_passes, hybrid_negatives, make_masks, mean_run_length, neighbour_agreement
from fflab.plot import negatives_gallery


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def naive_masks(bits: torch.Tensor, passes: int) -> torch.Tensor:
    """Reference: explicit loops, [1/4, 1/2, 1/4] with replicate borders, row pass then column pass."""
    v = bits.double().clone()
    n, h, w = v.shape
    for _ in range(passes):
        out = torch.empty_like(v)
        for j in range(w):
            out[:, :, j] = 0.25 * v[:, :, max(j - 1, 0)] + 0.5 * v[:, :, j] + 0.25 * v[:, :, min(j + 1, w - 1)]
        v, out = out, torch.empty_like(out)
        for i in range(h):
            out[:, i] = 0.25 * v[:, max(i - 1, 0)] + 0.5 * v[:, i] + 0.25 * v[:, min(i + 1, h - 1)]
        v = out
    return ((v > 0.5) | ((v == 0.5) & bits.bool())).float()


@pytest.mark.parametrize("passes", [0, 1, 6, 8])
def test_masks_match_naive_blur(passes):
    masks = make_masks(5, height=9, width=7, blur_passes=passes, generator=gen(3))
    bits = torch.randint(0, 2, (5, 1, 9, 7), generator=gen(3)).squeeze(1)  # the same draw
    assert torch.equal(masks, naive_masks(bits, passes))


def test_masks_binary_shape_deterministic():
    m = make_masks(16, height=28, width=20, blur_passes=6, generator=gen(1))
    assert m.shape == (16, 28, 20) and m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m, make_masks(16, height=28, width=20, blur_passes=6, generator=gen(1)))
    assert not torch.equal(m, make_masks(16, height=28, width=20, blur_passes=6, generator=gen(2)))


def test_blur_makes_large_regions():
    # Measured on 5000 masks: agreement 0.50 at 0 passes, 0.85 at 4, 0.88 at 6, 0.89 at 8.
    # With 400 masks the sampling error is ~0.002, so these bounds are far from the noise.
    g = gen(0)
    m0 = make_masks(400, blur_passes=0, generator=g)
    m6 = make_masks(400, blur_passes=6, generator=g)
    assert abs(neighbour_agreement(m0) - 0.5) < 0.02
    assert neighbour_agreement(m6) > 0.85
    assert mean_run_length(m0) < 2.2 and mean_run_length(m6) > 5.5
    # Both images still contribute: about half the pixels are ones.
    assert abs(m6.mean().item() - 0.5) < 0.03


def test_measures_on_known_masks():
    const = torch.ones(2, 4, 4)
    assert neighbour_agreement(const) == 1.0 and mean_run_length(const) == 4.0
    stripes = torch.tensor([[0.0, 1.0] * 2] * 4).unsqueeze(0)   # columns alternate
    assert neighbour_agreement(stripes) == 0.5                  # rows all change, columns never
    assert mean_run_length(stripes) == 2 * 16 / (16 + 4)


def test_compare_blur_passes_monotone():
    r = compare_blur_passes((0, 2, 6), n=200, height=16, width=16, generator=gen(0))
    assert set(r) == {0, 2, 6}
    assert set(r[6]) == {"neighbour_agreement", "mean_run_length", "fraction_ones",
                         "fraction_ones_std", "degenerate"}
    agree = [r[p]["neighbour_agreement"] for p in (0, 2, 6)]
    assert agree[0] < agree[1] < agree[2]
    for p in r:
        assert abs(r[p]["fraction_ones"] - 0.5) < 0.05


@pytest.mark.parametrize("shape", [(12, 784), (12, 1, 28, 28), (12, 3, 8, 10), (12, 8, 10)])
def test_hybrid_is_mask_times_a_plus_rest_times_b(shape):
    x = torch.randn(shape, generator=gen(5))
    x_neg, mask, idx_a, idx_b = hybrid_negatives(x, generator=gen(6))
    assert x_neg.shape == x.shape
    assert mask.shape == ((12, 28, 28) if len(shape) == 2 else (12, *shape[-2:]))
    assert torch.equal(idx_a, torch.arange(12))
    assert (idx_a != idx_b).all()
    assert torch.equal(idx_b.sort().values, torch.arange(12))   # a permutation: each image once as B
    h, w = mask.shape[-2:]
    xi = x.reshape(12, -1, h, w)
    ni = x_neg.reshape(12, -1, h, w)
    m = mask.bool().unsqueeze(1).expand_as(xi)
    assert torch.equal(ni[m], xi[m])                            # A where mask = 1
    assert torch.equal(ni[~m], xi[idx_b].reshape_as(xi)[~m])    # B where mask = 0
    assert 0 < mask.sum() < mask.numel()


def test_hybrid_deterministic_and_batch_of_two():
    x = torch.randn(2, 784)
    a = hybrid_negatives(x, generator=gen(0))
    b = hybrid_negatives(x, generator=gen(0))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert a[3].tolist() == [1, 0]
    with pytest.raises(ValueError):
        hybrid_negatives(x[:1], generator=gen(0))
    with pytest.raises(ValueError):
        hybrid_negatives(torch.randn(3, 783), generator=gen(0))


def test_labels_make_classes_differ():
    g = gen(0)
    for _ in range(20):
        labels = torch.randint(0, 3, (50,), generator=g) * 7 - 4   # arbitrary label values
        x = torch.randn(50, 16, generator=g)
        _, _, idx_a, idx_b = hybrid_negatives(x, generator=g, labels=labels, blur_passes=0)
        assert (labels[idx_a] != labels[idx_b]).all()
    # Skewed classes: 49 of one class and 1 of another: everyone pairs across the divide.
    labels = torch.zeros(50, dtype=torch.long)
    labels[17] = 1
    _, _, idx_a, idx_b = hybrid_negatives(torch.randn(50, 16), generator=g, labels=labels)
    assert (labels[idx_b] != labels).all() and (idx_b[labels == 0] == 17).all()
    with pytest.raises(ValueError):
        hybrid_negatives(torch.randn(5, 16), generator=g, labels=torch.full((5,), 3))


def test_labels_partner_uniform_over_other_classes():
    # Every case of class 0 is redrawn (its derangement partner may be class 0); partners should
    # spread over all the other-class cases, not a few.
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    counts = torch.zeros(30)
    g = gen(1)
    for _ in range(100):
        _, _, _, idx_b = hybrid_negatives(torch.randn(30, 4), generator=g, labels=labels,
                                         blur_passes=0)
        counts += F.one_hot(idx_b[:10], 30).sum(0)
    assert counts[:10].sum() == 0
    assert counts[10:].min() > 0.5 * counts[10:].mean()


def test_gallery_writes_png(tmp_path):
    x = torch.rand(10, 784, generator=gen(0))
    path = negatives_gallery(x, tmp_path / "sub" / "neg.png", n=4, blur_passes=6, seed=0)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    rgb = negatives_gallery(torch.randn(5, 3, 8, 8), tmp_path / "rgb.png", n=3, blur_passes=2,
                            labels=torch.tensor([0, 1, 0, 1, 2]))
    assert rgb.stat().st_size > 1000
