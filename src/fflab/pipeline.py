"""Layer-pipelined supervised FF over the processes of a torchrun job (``parallel=pipeline``).

FF sends nothing backwards (paper, section 2): each layer learns from its own normalized input,
so a stack can be cut into contiguous blocks of layers, one block (a *stage*) per process. Each
step, a stage receives the normalized activities of the positive and negative batch from the
stage below (``irecv``), makes its own layers' FF update, and sends its normalized outputs up
(``isend``); while it works on batch t, the stage below already works on batch t + 1. No weight,
gradient or derivative crosses a stage boundary.

Supervised FF (paper, section 3.3) also needs, for its hard negatives, each image's label
probabilities from the softmax head of a neutral-label pass, and the head lives on the last
stage. The neutral pass of a batch therefore enters the pipeline ``lag`` steps before the batch's
positive/negative pass, and only the probabilities (B x classes numbers) flow back down to the
first stage, which draws the negatives. Staleness: the negatives of batch t come from weights
after step t - lag - 1 instead of t - 1 (``lag`` steps old), which the hard negatives tolerate as
they tolerate ``neutral_every`` (probabilities an epoch old). With ``lag = 0`` the stages take
turns and make the updates of one process, up to rounding (tests/test_pipeline.py); a pipeline
of S stages overlaps fully from ``lag = S - 1``.

Every rank keeps a whole copy of the model; at the end of each epoch each stage's layers (and
their optimizer state) are broadcast from their owner, so rank 0 writes complete checkpoints and
every rank evaluates its share of the test set with the whole net.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from . import distributed
from ._engines import dense
from ._engines.supervised import head_grads
from .errors import ConfigError
from .layers import normalize
from .nets import FFNet, SoftmaxHead
from .runtime import Runtime

# Message tags: a neutral pass's activities (and head features) going up, a positive/negative
# pass going up, label probabilities coming down.
_NEUTRAL, _POSNEG, _PROBS = 1, 2, 3
# isend requests kept in flight before waiting on the oldest: a sender may run a few steps ahead.
_IN_FLIGHT = 8


def split_layers(num_layers: int, stages: int) -> list[range]:
    """Contiguous blocks of layers, one per stage, as even as the count allows (the first stages
    take the extra layers: a supervised net's first layer is its cheapest, its input being the
    image)."""
    if stages > num_layers:
        raise ConfigError(f"parallel=pipeline over {stages} processes needs at least {stages} hidden layers; "
                          f"this net has {num_layers} (use fewer processes, or parallel=data)")
    base, extra = divmod(num_layers, stages)
    bounds = [0]
    for i in range(stages):
        bounds.append(bounds[-1] + base + (i < extra))
    return [range(bounds[i], bounds[i + 1]) for i in range(stages)]


class SupervisedPipeline:
    """One stage of a pipelined supervised FF step; every rank of the job holds one.

    ``begin_epoch(fetch, steps)`` gives the stage the epoch's batches (``fetch(i)`` -> (x, y, idx),
    the lookahead the neutral passes need); ``step(...)`` then runs the stage's share of the
    epoch's batches in order; ``end_epoch()`` drains the sends and makes every rank's model whole.
    """

    def __init__(self, net: FFNet, head: SoftmaxHead, opt: torch.optim.Optimizer,
                 head_opt: torch.optim.Optimizer, *, layers: list[int], num_classes: int, rt: Runtime,
                 cache, lag: int, prepare: Callable, negatives: Callable) -> None:
        if not dense.supports(net):
            raise ConfigError("parallel=pipeline needs dense layers")
        if lag < -1:
            raise ConfigError(f"pipeline_lag={lag} must be >= 0 (or -1: stages - 1)")
        par = rt.parallel
        self.par, self.rt, self.num_classes = par, rt, num_classes
        self.stages = par.world_size
        self.s = par.rank
        self.lag = self.stages - 1 if lag == -1 else lag
        blocks = split_layers(len(net.layers), self.stages)
        self.block = blocks[self.s]
        self.owner = [s for s, b in enumerate(blocks) for _ in b]   # layer -> its stage
        self.net, self.head, self.opt, self.head_opt = net, head, opt, head_opt
        self.stage_net = FFNet([net.layers[i] for i in self.block], eps=net.eps)   # a view: same parameters
        self.width_in = net.layers[self.block.start].in_features    # what the stage below sends per case
        self.feature_layers = [i for i in layers if i in self.block]
        self.num_features = sum(net.layers[i].num_units for i in layers if i < self.block.start)
        self.cache, self.prepare, self.negatives = cache, prepare, negatives
        self.dtype = rt.product_dtype
        self._sends: deque = deque()

    @property
    def first(self) -> bool:
        return self.s == 0

    @property
    def last(self) -> bool:
        return self.s == self.stages - 1

    # ------------------------------------------------------------------ epoch
    def begin_epoch(self, fetch: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                    steps: int) -> None:
        self.fetch, self.steps, self.tick = fetch, steps, 0
        self.images: dict[int, torch.Tensor] = {}     # first stage: each batch's (jittered) images
        self.neutral_of: dict[int, bool] = {}          # batch -> whether it has a neutral pass
        self.local_probs: dict[int, torch.Tensor] = {}   # a one-stage pipeline keeps them here

    def end_epoch(self) -> None:
        """Wait for the sends in flight, then give every rank every stage's layers and state."""
        while self._sends:
            self._sends.popleft().wait()
        owned = [(t, self.owner[i]) for i, layer in enumerate(self.net.layers)
                 for t in (*layer.parameters(), *layer.buffers())]
        owned += [(t, self.stages - 1) for t in self.head.parameters()]
        distributed.broadcast_from_owners(owned, self.par)
        _broadcast_optimizer_state(self.opt, {id(p): self.owner[i] for i, layer in enumerate(self.net.layers)
                                              for p in layer.parameters()}, self.par)
        _broadcast_optimizer_state(self.head_opt, {id(p): self.stages - 1 for p in self.head.parameters()}, self.par)

    # ------------------------------------------------------------------ step
    def step(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None) -> torch.Tensor:
        """This stage's part of batch ``self.tick`` (x, y, idx are that batch); returns the stage's
        summed layer losses."""
        t = self.tick
        self.tick += 1
        launch = range(0, self.lag + 1) if t == 0 else range(t + self.lag, t + self.lag + 1)
        for b in launch:
            if b < self.steps:
                self._neutral(b, g)
        return self._update(t, y, g, idx)

    def _neutral(self, b: int, g: torch.Generator) -> None:
        """Batch b enters the pipeline: its images are prepared (jitter) and, on a neutral step,
        its neutral pass runs through this stage (the last stage: the head's step, and the
        probabilities sent down)."""
        x, y, idx = self.fetch(b)
        if self.first:
            self.images[b] = self.prepare(x, g)
        neutral = not self.cache.stale(idx)     # every stage keeps the same count
        self.neutral_of[b] = neutral
        if not neutral:
            return
        n = y.shape[0]
        if self.first:
            hs = dense.LabelledInput(self.stage_net, self.images[b], self.num_classes, dtype=self.dtype).forward(None)
            feats_in = hs[0].new_zeros(n, 0)
        else:
            msg = distributed.recv((n, self.width_in + self.num_features), self.s - 1, _NEUTRAL, self.rt.device)
            h_in, feats_in = msg[:, :self.width_in], msg[:, self.width_in:]
            hs = dense.stack_forward(self.stage_net.layers, h_in, self.net.eps, self.dtype, out_dtype=torch.float32)
        feats = torch.cat([feats_in, *(normalize(hs[i - self.block.start].float(), self.net.eps)
                                       for i in self.feature_layers)], 1)
        if not self.last:
            self._send(torch.cat([normalize(hs[-1].float(), self.net.eps), feats], 1), self.s + 1, _NEUTRAL)
            return
        probs, self.head.linear.weight.grad, self.head.linear.bias.grad = head_grads(feats, self.head, y)
        self.head_opt.step()
        if self.first:
            self.local_probs[b] = probs
        else:
            self._send(probs.float(), 0, _PROBS)

    def _update(self, t: int, y: torch.Tensor, g: torch.Generator, idx: torch.Tensor | None) -> torch.Tensor:
        """Batch t's positive and negative passes through this stage and its layers' FF step."""
        self.opt.zero_grad(set_to_none=True)
        n = y.shape[0]
        hs: list[torch.Tensor] = []
        if self.first:
            x = self.images.pop(t)
            if not self.neutral_of.pop(t):
                probs = self.cache.get(idx)
            else:
                probs = (self.local_probs.pop(t) if self.last
                         else distributed.recv((n, self.num_classes), self.stages - 1, _PROBS, self.rt.device))
                self.cache.put(idx, probs)
            y_neg = self.negatives(probs, y, g)
            loss = dense.LabelledInput(self.stage_net, x, self.num_classes, dtype=self.dtype).ff_backward(
                y, y_neg, hs_out=hs)
        else:
            self.neutral_of.pop(t)
            x_pn = distributed.recv((2 * n, self.width_in), self.s - 1, _POSNEG, self.rt.device)
            loss = dense.stack_backward(self.stage_net.layers, x_pn, n, self.net.eps, self.dtype,
                                        x_pn.new_zeros(()), hs)
        self.opt.step()
        if not self.last:
            self._send(normalize(hs[-1].float(), self.net.eps), self.s + 1, _POSNEG)
        return loss.detach()

    def _send(self, t: torch.Tensor, dst: int, tag: int) -> None:
        self._sends.append(distributed.send(t, dst, tag))
        while len(self._sends) > _IN_FLIGHT:
            self._sends.popleft().wait()


def _broadcast_optimizer_state(opt: torch.optim.Optimizer, owner: dict[int, int], par) -> None:
    """Every parameter's optimizer state (e.g. Adam's moments) copied from its owner rank to all."""
    if not par.active:
        return
    import torch.distributed as dist
    for group in opt.param_groups:
        for p in group["params"]:
            src = owner[id(p)]
            state = opt.state.get(p, {})
            meta = [{k: (tuple(v.shape), v.dtype) if torch.is_tensor(v) else v for k, v in state.items()}]
            dist.broadcast_object_list(meta, src)
            if par.rank != src:
                state = opt.state[p] = {k: torch.empty(v[0], dtype=v[1], device=p.device)
                                        if isinstance(v, tuple) else v for k, v in meta[0].items()}
            distributed.broadcast_from_owners([(v, src) for _, v in sorted(state.items()) if torch.is_tensor(v)],
                                              par)
