"""The scripts in benchmarks/ keep running (they are not timed here: nothing slow in tests)."""
import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import reference_ff  # noqa: E402


def test_engine_ab_times_the_reference_model_against_fflab():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "engine_ab.py"), "--hidden", "16x3", "--rounds", "2",
                          "--steps", "2", "--threads", "1", "reference", "optimizer=adam"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("reference") and "ms/step" in line for line in lines)
    assert any(line.startswith("optimizer=adam") and "minus reference" in line and "x as fast" in line
               for line in lines)


def test_engine_ab_pseudo_overrides_build_and_run():
    # update=plain and linear=addmm on fp32 SGD, whose engine has its own update (ProductSGD)
    out = subprocess.run([sys.executable, str(BENCHMARKS / "engine_ab.py"), "--hidden", "16x3", "--rounds", "1",
                          "--steps", "1", "--threads", "1", "optimizer=sgd",
                          "optimizer=sgd,update=plain,linear=addmm"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith("optimizer=sgd,update=plain,linear=addmm") and "minus optimizer=sgd" in line
               for line in out.stdout.splitlines())


def test_gpu_run_script_parses():
    out = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_run.sh")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_reference_data_path_labels_each_image_as_the_reimplementation_does():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([3, 0, 9, 3, 7])
    ds = reference_ff._PerImageVariants(images, labels)
    for i in range(len(ds)):
        v, target = ds[i]
        label = target["class_labels"]
        assert isinstance(label, int) and label == labels[i]
        pos, neg, neutral = (v[k][0, 0, :10] for k in ("pos", "neg", "neutral"))
        assert pos.argmax() == label and pos.sum() == 1
        assert neg.argmax() != label and neg.sum() == 1                 # a wrong label, one-hot
        assert torch.allclose(neutral, torch.full((10,), 0.1))
        rest = images[i].float().div(255)[None]                          # pixels past the label row
        for x in (v["pos"], v["neg"], v["neutral"]):
            assert torch.equal(x[0, 1:], rest[0, 1:]) and torch.equal(x[0, 0, 10:], rest[0, 0, 10:])


def test_reference_step_reads_what_the_reimplementation_logs(monkeypatch):
    # 3 FF accuracies in the forward pass; the total, the peer-normalization sum, 3 FF losses,
    # the classification loss and its accuracy when logging: 10 host reads a step at 3 layers
    torch.manual_seed(0)
    model = reference_ff.ReferenceFF((8, 8, 8))
    opt = reference_ff._sgd(model)
    x = torch.rand(4, 784)
    reads = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or real_item(t))
    reference_ff._train_step(model, opt, x, x.flip(0), x, torch.tensor([0, 1, 2, 3]))
    assert len(reads) == 10
    assert [(g["lr"], g["weight_decay"], g["momentum"], len(g["params"])) for g in opt.param_groups] == \
        [(1e-3, 3e-4, 0.9, 6), (1e-2, 3e-3, 0.9, 1)]


def test_reference_model_learns_layer_by_layer():
    # every layer's input is detached: layer 1's weights get no gradient from layer 2's loss,
    # so its gradient with layer 2 frozen at any value is the same
    torch.manual_seed(0)
    model = reference_ff.ReferenceFF((8, 8, 8))
    x = torch.rand(4, 784)
    y = torch.tensor([0, 1, 2, 3])
    out = model.losses(x, x.flip(0), x, y)
    out["loss"].backward()
    g0 = model.layers[0].weight.grad.clone()
    model.zero_grad()
    with torch.no_grad():
        model.layers[2].weight.mul_(3)
    model.running_means = [torch.full((8,), 0.5) for _ in range(3)]
    model.losses(x, x.flip(0), x, y)["loss"].backward()
    assert torch.equal(model.layers[0].weight.grad, g0)
    assert model.layers[2].weight.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0


def test_gpu_check_passes_the_engines_and_catches_a_wrong_gradient(monkeypatch):
    """benchmarks/gpu_check.py, on the CPU: the shared engine agrees with autograd within its
    fp32 tolerance, and a dL/dz off by 1% is over it."""
    import gpu_check
    from fflab.layers import FFLayer
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(16, 784, generator=gen) > 0.8).float()
    y = torch.randint(0, 10, (16,), generator=gen)

    def rel_error() -> float:
        want = gpu_check.params_after({"engine": "autograd"}, torch.device("cpu"), x, y, 2)
        got = gpu_check.params_after({"engine": "shared"}, torch.device("cpu"), x, y, 2)
        return max(((got[k] - want[k]).abs().max() / want[k].abs().max()).item() for k in want)

    tolerance = next(t for over, t in gpu_check.VARIANTS if over == {"engine": "shared"})
    assert rel_error() <= tolerance
    real = FFLayer.local_grad   # the analytic engines' dL/dz; autograd differentiates local_loss

    def off_by_one_percent(layer, h, num_pos):
        dz, loss = real(layer, h, num_pos)
        return dz * 1.01, loss

    monkeypatch.setattr(FFLayer, "local_grad", off_by_one_percent)
    assert rel_error() > tolerance
