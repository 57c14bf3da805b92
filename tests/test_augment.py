"""Tests of fflab.data.augment (jitter, shift) against a naive per-pixel reference."""
from __future__ import annotations

import itertools

import pytest
import torch

from fflab.data.augment import jitter, shift


def naive_shift(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Reference: out[i, j] = img[i - dy, j - dx], 0 outside. img: (H, W)."""
    src = img.tolist()  # plain lists: a per-pixel loop over tensors would be slow
    H, W = len(src), len(src[0])
    out = [[src[i - dy][j - dx] if 0 <= i - dy < H and 0 <= j - dx < W else 0 for j in range(W)]
           for i in range(H)]
    return torch.tensor(out, dtype=img.dtype)


def dot_images(B: int) -> torch.Tensor:
    x = torch.zeros(B, 28, 28)
    x[:, 14, 14] = 1.0
    return x.reshape(B, 784)


def found_shifts(out: torch.Tensor) -> list[tuple[int, int]]:
    flat = out.reshape(out.shape[0], 784)
    assert torch.all(flat.sum(1) == 1)  # the dot is never lost for shifts of at most 2
    idx = flat.argmax(1)
    return [(int(c) - 14, int(r) - 14) for r, c in zip(idx // 28, idx % 28)]


def test_shift_matches_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 28, 28, generator=g)
    dx = torch.tensor([0, 1, -2, 3, -28, 5])
    dy = torch.tensor([0, -1, 2, 0, 0, -27])
    out = shift(x, dx, dy)
    for b in range(6):
        torch.testing.assert_close(out[b], naive_shift(x[b], int(dx[b]), int(dy[b])))
    torch.testing.assert_close(shift(x, 2, -1)[3], naive_shift(x[3], 2, -1))


def test_zero_fill():
    x = torch.ones(1, 784)
    out = shift(x, 2, -1).reshape(28, 28)
    assert torch.all(out[:, :2] == 0) and torch.all(out[-1, :] == 0)
    assert torch.all(out[:-1, 2:] == 1)
    assert out.sum() == 26 * 27


def test_jitter_range_and_all_25_shifts_reachable():
    g = torch.Generator().manual_seed(1)
    shifts = found_shifts(jitter(dot_images(2000), 2, generator=g))
    assert all(-2 <= dx <= 2 and -2 <= dy <= 2 for dx, dy in shifts)
    counts = {s: shifts.count(s) for s in itertools.product(range(-2, 3), repeat=2)}
    assert len(set(shifts)) == 25
    assert min(counts.values()) > 40  # uniform: 80 expected each; 40 is > 4 std below


def test_jitter_each_image_is_some_shift_of_itself():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(8, 1, 28, 28, generator=g)
    out = jitter(x, 1, generator=torch.Generator().manual_seed(3))
    for b in range(8):
        assert any(torch.equal(out[b, 0], naive_shift(x[b, 0], dx, dy))
                   for dx, dy in itertools.product(range(-1, 2), repeat=2))


def test_jitter_is_deterministic_given_the_seed():
    x = torch.rand(64, 784, generator=torch.Generator().manual_seed(0))
    a = jitter(x, generator=torch.Generator().manual_seed(42))
    b = jitter(x, generator=torch.Generator().manual_seed(42))
    c = jitter(x, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_jitter_draws_per_image_not_per_batch():
    shifts = found_shifts(jitter(dot_images(64), generator=torch.Generator().manual_seed(5)))
    assert len(set(shifts)) > 10


def test_max_shift_zero_is_identity():
    x = torch.rand(5, 784)
    assert torch.equal(jitter(x, 0, generator=torch.Generator().manual_seed(0)), x)


@pytest.mark.parametrize("shape", [(7, 784), (7, 28, 28), (7, 1, 28, 28), (7, 3, 28, 28)])
def test_shapes_dtypes_and_layouts_agree(shape):
    x = torch.randint(0, 256, shape, dtype=torch.uint8)
    out = jitter(x, generator=torch.Generator().manual_seed(9))
    assert out.shape == x.shape and out.dtype == torch.uint8
    ref = jitter(x.reshape(7, -1, 28, 28)[:, :1].reshape(7, 784).float(),
                 generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(out.reshape(7, -1, 28, 28)[:, 0].reshape(7, 784).float(), ref)


def test_bad_input_is_an_error():
    g = torch.Generator()
    with pytest.raises(ValueError, match="D = side"):
        jitter(torch.zeros(2, 785), generator=g)
    with pytest.raises(ValueError, match="non-negative int"):
        jitter(torch.zeros(2, 784), -1, generator=g)
    with pytest.raises(ValueError, match="expected images"):
        jitter(torch.zeros(784), generator=g)
