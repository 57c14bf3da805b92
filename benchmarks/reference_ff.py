"""A timing model of the reference reimplementation's training step (the "3 x faster" target).

fflab's per-epoch speed target is set against a widely used PyTorch reimplementation of FF
(loeweX/Forward-Forward: 3 x 1000 ReLU, batch 100, peer normalization, softmax head on the
neutral pass, SGD with momentum), whose epoch time was given for one machine (the AMD Zen 4
figure in BENCHMARKS.md and docs/reference-comparison.md). To judge "3 x faster" on whatever
machine this runs on, this module rebuilds the same per-step computation in plain eager
PyTorch, written here from that code's description (nothing copied), and
``benchmarks/engine_ab.py reference ...`` times it in turns with fflab's step on the same
machine. It was last checked against that code's main branch (its training script, model, data
set and utilities, and config.yaml, as after its pull request 7); docs/reference-comparison.md
lists what the check changed.

Per step, as that code does it:

- positive and negative images (label one-hot in the first 10 pixels) as one (200, 784) batch,
  divided by their root-mean-square (its "layer norm", eps 1e-8 outside the root);
- per layer: linear, ReLU whose backward passes the gradient through everywhere, the peer-
  normalization loss on the positive half (running mean, momentum 0.9, weight 0.03; the unweighted
  sum over layers is also logged), the FF loss ``BCEWithLogits(sum(h ** 2) - width, is_positive)``
  (threshold: the layer's width) and its accuracy read with ``.item()`` inside the forward pass;
  then the activity is detached and normalized for the next layer;
- the neutral image (label pixels 0.1) through the layers without gradient, the normalized
  activities of layers 2..3 (2000 features) into a bias-free, zero-initialized linear softmax
  head, cross-entropy on max-subtracted logits, and its accuracy (a tensor);
- one ``backward()`` of the summed losses (weight gradients only: every layer's input is
  detached), ``torch.optim.SGD`` with two parameter groups as that code's current version has
  them: the FF layers (weights and biases) at lr 1e-3, weight decay 3e-4, and the softmax head at
  lr 1e-2, weight decay 3e-3, both momentum 0.9, each held for the first half of the epochs and
  then cooled linearly (a step per epoch); and every logged scalar read with ``.item()``: 10 host
  reads a step at 3 layers (3 FF accuracies in the forward pass; the total loss, the peer-
  normalization sum, 3 FF losses, the classification loss and accuracy when logging). Before
  that code's pull request 7 its optimizer picked the head's group from the loss module, which
  has no parameters, so the head trained in the first group (lr 1e-3, weight decay 3e-4) and the
  second was empty: the same products and the same time per step.

``training_loop`` (what ``engine_ab.py`` times) leaves out the data pipeline, which can only
make this model faster than the code it stands for: that code reads MNIST through torchvision
(each image made a PIL image, then ``ToTensor``), builds each image's three variants in Python in
a ``Dataset``, and reads it through a ``DataLoader`` with four persistent worker processes
(``shuffle``, ``drop_last``, batch 100, numpy reseeded in each worker). So a speed-up measured
against ``training_loop`` is a lower bound on the speed-up against that code on the same
machine. Run as a script, this module trains the model on real MNIST (the first 50,000 training
images, as that code does: 500 steps an epoch; the other 10,000 are its validation set) and
prints seconds per epoch (also scaled to 60,000 images) and the test error, with the batches
either sliced from tensors or, with ``--loader``, drawn through such a ``Dataset`` and
``DataLoader`` (per-image Python work as that code's, PIL round trip included; torchvision
itself is not needed):

    python benchmarks/reference_ff.py --epochs 10 [--loader] [--threads 1] [--data-dir DIR]

That code sets no thread count (torch's default, all cores); ``--threads`` (default 2) sets the
training process's, and the loader's workers run one thread each, as torch makes them.

With ``--against-raw ROUNDS`` it instead times its step in turns with the raw fp32 products of
the same shapes (``fflab.bench.matmul_throughput``) and prints the fraction of the raw rate it
reaches, and the speed-up over it that an engine running fflab's products (``fflab bench``'s
count for the shared engine with ``neutral_every=4``) at 100% of the raw rate would have: the
ceiling of any fflab-vs-reference ratio measured without the data pipeline.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

NUM_CLASSES = 10


class _ReLUFullGrad(torch.autograd.Function):
    """ReLU forward, identity backward (the reimplementation's activation)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clone()


def _rms_normalize(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return z / (z.pow(2).mean(dim=-1, keepdim=True).sqrt() + eps)


class ReferenceFF(nn.Module):
    """The reimplementation's model: FF layers, peer normalization and the softmax head."""

    def __init__(self, hidden: tuple[int, ...] = (1000, 1000, 1000), *, peer_norm: float = 0.03,
                 peer_momentum: float = 0.9) -> None:
        super().__init__()
        widths = (784, *hidden)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=layer.weight.shape[0] ** -0.5)
            nn.init.zeros_(layer.bias)
        self.head = nn.Linear(sum(hidden[1:]), NUM_CLASSES, bias=False)
        nn.init.zeros_(self.head.weight)
        self.peer_norm, self.peer_momentum = peer_norm, peer_momentum
        self.running_means = [torch.full((h,), 0.5) for h in hidden]

    def losses(self, pos: torch.Tensor, neg: torch.Tensor, neutral: torch.Tensor,
               y: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """The step's losses and logged scalars; pos, neg, neutral (B, 784), y (B,)."""
        b = pos.shape[0]
        out: dict[str, torch.Tensor | float] = {}
        is_pos = torch.zeros(2 * b)
        is_pos[:b] = 1
        total, peer_sum = torch.zeros(1), torch.zeros(1)
        z = _rms_normalize(torch.cat([pos, neg]))                       # (2B, 784)
        for i, layer in enumerate(self.layers):
            z = _ReLUFullGrad.apply(layer(z))
            mean = z[:b].mean(0)
            self.running_means[i] = self.running_means[i].detach() * self.peer_momentum \
                + mean * (1 - self.peer_momentum)
            peer = (self.running_means[i].mean() - self.running_means[i]).pow(2).mean()
            logits = z.pow(2).sum(-1) - z.shape[1]
            ff = F.binary_cross_entropy_with_logits(logits, is_pos)
            with torch.no_grad():
                out[f"ff_accuracy_{i}"] = ((torch.sigmoid(logits) > 0.5) == is_pos).sum().div(2 * b).item()
            out[f"ff_loss_{i}"] = ff
            peer_sum = peer_sum + peer
            total = total + self.peer_norm * peer + ff
            z = _rms_normalize(z.detach())
        logits = self.head(self.neutral_features(neutral))
        logits = logits - logits.max(dim=-1, keepdim=True)[0]
        ce = F.cross_entropy(logits, y)
        out["peer_normalization"] = peer_sum
        out["classification_loss"] = ce
        out["classification_accuracy"] = (logits.argmax(1) == y).sum() / b
        out["loss"] = total + ce
        return out

    @torch.no_grad()
    def neutral_features(self, neutral: torch.Tensor) -> torch.Tensor:
        """The head's input: the normalized activities of layers 2.. for the neutral images."""
        feats = []
        z = _rms_normalize(neutral)
        for i, layer in enumerate(self.layers):
            z = _rms_normalize(_ReLUFullGrad.apply(layer(z)))
            if i >= 1:
                feats.append(z)
        return torch.cat(feats, dim=-1)


HEAD_LR, HEAD_WEIGHT_DECAY = 1e-2, 3e-3   # that code's "downstream" group: the softmax head


def _sgd(model: ReferenceFF, lr: float = 1e-3) -> torch.optim.SGD:
    head = set(map(id, model.head.parameters()))
    ff = [p for p in model.parameters() if id(p) not in head]
    return torch.optim.SGD([
        {"params": ff, "lr": lr, "weight_decay": 3e-4, "momentum": 0.9},
        {"params": list(model.head.parameters()), "lr": HEAD_LR, "weight_decay": HEAD_WEIGHT_DECAY,
         "momentum": 0.9}])


def _train_step(model: ReferenceFF, opt: torch.optim.Optimizer, pos: torch.Tensor, neg: torch.Tensor,
                neutral: torch.Tensor, y: torch.Tensor) -> float:
    """One training step; reads every logged scalar with ``.item()``, as the reference does, and
    returns the loss."""
    opt.zero_grad()
    out = model.losses(pos, neg, neutral, y)
    out["loss"].backward()
    opt.step()
    logged = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    return logged["loss"]


def _with_label(x: torch.Tensor, label_pixels: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :NUM_CLASSES] = label_pixels
    return x


def _neutral(x: torch.Tensor) -> torch.Tensor:
    return _with_label(x, torch.full((NUM_CLASSES,), 1 / NUM_CLASSES))


def _labelled(x: torch.Tensor, y: torch.Tensor, g: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive (true label), negative (a uniformly drawn wrong label) and neutral versions of x."""
    wrong = (y + torch.randint(1, NUM_CLASSES, y.shape, generator=g)) % NUM_CLASSES
    eye = torch.eye(NUM_CLASSES)
    return _with_label(x, eye[y]), _with_label(x, eye[wrong]), _neutral(x)


def training_loop(steps: int, hidden: tuple[int, ...] = (1000, 1000, 1000), batch: int = 100,
                  seed: int = 0) -> tuple[ReferenceFF, Callable[[], None]]:
    """The model and a function running ``steps`` of its training steps on synthetic MNIST-shaped
    batches, made beforehand (the reference builds them in DataLoader workers)."""
    g = torch.Generator().manual_seed(seed)
    model = ReferenceFF(hidden)
    opt = _sgd(model)
    n = steps * batch
    x = torch.rand(n, 784, generator=g)
    y = torch.randint(NUM_CLASSES, (n,), generator=g)
    pos, neg, neutral = _labelled(x, y, g)

    def run() -> None:
        for i in range(steps):
            sl = slice(i * batch, (i + 1) * batch)
            _train_step(model, opt, pos[sl], neg[sl], neutral[sl], y[sl])

    return model, run


def _pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """What ``ToTensor`` makes of a greyscale PIL image: (1, H, W) float32 in [0, 1]."""
    pixels = torch.from_numpy(np.array(image, np.uint8, copy=True))
    return pixels.view(image.size[1], image.size[0], 1).permute(2, 0, 1).contiguous().float().div(255)


class _PerImageVariants(torch.utils.data.Dataset):
    """The reimplementation's data path, one image at a time in Python: the image as its MNIST
    data set hands it over (uint8 array -> PIL image -> ``ToTensor``, its label an ``int``), then
    its positive, negative and neutral versions (one-hot tensors, clones, a list of the other
    classes and ``np.random.choice``), returned as a dict of images and a dict of labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels     # uint8 (N, 28, 28), int64 (N,)
        self.uniform = torch.ones(NUM_CLASSES) / NUM_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = _pil_to_tensor(Image.fromarray(self.images[i].numpy()))   # (1, 28, 28)
        label = int(self.labels[i])
        pos = image.clone()
        pos[:, 0, :NUM_CLASSES] = F.one_hot(torch.tensor(label), num_classes=NUM_CLASSES)
        others = list(range(NUM_CLASSES))
        others.remove(label)
        neg = image.clone()
        neg[:, 0, :NUM_CLASSES] = F.one_hot(torch.tensor(np.random.choice(others)), num_classes=NUM_CLASSES)
        image[:, 0, :NUM_CLASSES] = self.uniform
        return {"pos": pos, "neg": neg, "neutral": image}, {"class_labels": label}


def _seed_worker(worker_id: int) -> None:
    """Each loader worker reseeds numpy from its torch seed, as that code's workers do."""
    np.random.seed(torch.initial_seed() % 2 ** 32)


def _cooled_lr(lr: float, epoch: int, epochs: int) -> float:
    return lr * 2 * (1 + epochs - epoch) / epochs if epoch > epochs // 2 else lr


def _flops_per_step(batch: int = 100, neutral_every: int = 4) -> tuple[float, float]:
    """Products per step of 3 x 1000 at ``batch``: the reference's (forward on positive and
    negative, their weight gradients, the neutral pass on every step) and fflab's shared engine's
    (the first layer's image product shared by positive and negative, the neutral pass on 1 step
    in ``neutral_every``; as ``fflab.bench.run_benchmark`` counts them)."""
    from fflab.bench import ff_flops_per_image, forward_macs
    sizes = [784, 1000, 1000, 1000]
    reference = 2 * batch * (2 + 2 + 1) * forward_macs(sizes)
    return reference, batch * ff_flops_per_image(sizes, engine="shared", neutral_every=neutral_every)


def against_raw(rounds: int, steps: int = 20) -> None:
    """The reference step's fraction of the raw fp32 rate, and fflab's ceiling over it."""
    from fflab.bench import matmul_throughput
    _, run = training_loop(steps)
    run()   # warm-up
    ref_flops, ff_flops = _flops_per_step()
    step_s, raw = [], []
    for _ in range(rounds):   # in turns, so that the machine's drift falls on both
        start = time.perf_counter()
        run()
        step_s.append((time.perf_counter() - start) / steps)
        raw.append(matmul_throughput([784, 1000, 1000, 1000], 100, torch.float32, reps=3)["median"] * 1e9)
    frac = sorted(ref_flops / (t * r) for t, r in zip(step_s, raw))
    ceiling = sorted(t * r / ff_flops for t, r in zip(step_s, raw))
    q = lambda v: f"quartiles {v[len(v) // 4]:.2f} / {v[(3 * len(v)) // 4]:.2f}"
    print(f"reference step {1e3 * statistics.median(step_s):.2f} ms (median of {rounds} turns of {steps} steps); "
          f"raw fp32 {statistics.median(raw) / 1e9:.1f} GFLOP/s ({min(raw) / 1e9:.0f}-{max(raw) / 1e9:.0f})")
    print(f"reference: {ref_flops / 1e9:.3f} GFLOP per step at {statistics.median(frac):.2f} of the raw rate "
          f"(paired per turn; {q(frac)})")
    print(f"fflab's products, {ff_flops / 1e9:.3f} GFLOP per step, at 100% of the raw rate: "
          f"{statistics.median(ceiling):.2f} x the reference's speed ({q(ceiling)})")


def main() -> None:
    from fflab.data.mnist import load_mnist
    ap = argparse.ArgumentParser(description="Train the reference model on MNIST: s per epoch, test error.")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--loader", action="store_true",
                    help="batches through the reimplementation's per-image Dataset and a DataLoader with 4 workers")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the training process")
    ap.add_argument("--train-images", type=int, default=50000,
                    help="train on the first N images (the reimplementation: 50,000); fewer for a quick check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None,
                    help="folder with the MNIST IDX files (else $FFLAB_DATA_DIR or the cache)")
    ap.add_argument("--against-raw", type=int, metavar="ROUNDS", default=0,
                    help="time the step against the raw products instead of training")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.against_raw:
        return against_raw(args.against_raw)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    d = load_mnist(data_dir=args.data_dir)
    x, y = d["x_train"][:args.train_images], d["y_train"][:args.train_images]
    model = ReferenceFF()
    lr = 1e-3
    opt = _sgd(model, lr)
    b = 100
    steps = len(y) // b
    if args.loader:
        images = (x * 255).round().to(torch.uint8).view(-1, 28, 28)
        loader = torch.utils.data.DataLoader(_PerImageVariants(images, y), batch_size=b, shuffle=True,
                                             drop_last=True, num_workers=4, persistent_workers=True,
                                             worker_init_fn=_seed_worker,
                                             generator=torch.Generator().manual_seed(args.seed))
    g = torch.Generator().manual_seed(args.seed)
    times = []
    print(f"torch {torch.__version__}, {args.threads} threads, reference model 3 x 1000, batch {b}, "
          f"{len(y)} training images ({steps} steps) an epoch, "
          f"{'per-image Dataset, DataLoader (4 workers)' if args.loader else 'batches sliced from tensors'}")
    for epoch in range(args.epochs):
        opt.param_groups[0]["lr"] = _cooled_lr(lr, epoch, args.epochs)
        opt.param_groups[1]["lr"] = _cooled_lr(HEAD_LR, epoch, args.epochs)
        start, total = time.perf_counter(), 0.0
        if args.loader:
            batches = ((v["pos"].flatten(1), v["neg"].flatten(1), v["neutral"].flatten(1), t["class_labels"])
                       for v, t in loader)
        else:
            perm = torch.randperm(len(y), generator=g)

            def sliced(perm=perm):
                for i in range(0, len(y) - b + 1, b):
                    xb, yb = x[perm[i:i + b]], y[perm[i:i + b]]
                    yield (*_labelled(xb, yb, g), yb)
            batches = sliced()
        for pos, neg, neutral, yb in batches:
            total += _train_step(model, opt, pos, neg, neutral, yb)
        times.append(time.perf_counter() - start)
        print(f"epoch {epoch + 1}: {times[-1]:.2f} s ({times[-1] * 60000 / (steps * b):.2f} s per 60,000 "
              f"images), mean loss {total / steps:.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        logits = model.head(model.neutral_features(_neutral(d["x_test"])))
        err = (logits.argmax(1) != d["y_test"]).float().mean().item()
    med = statistics.median(times)
    print(f"median {med:.2f} s per {steps * b}-image epoch (min {min(times):.2f}), "
          f"{med * 60000 / (steps * b):.2f} s per 60,000 images; test error after {args.epochs} epochs: "
          f"{100 * err:.2f}%")

if __name__ == "__main__":
    main()
