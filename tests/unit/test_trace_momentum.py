"""SGD momentum credit: the tracer's lazy buffers against eager per-example buffers.

The tracer keeps the class, weight-decay and per-example momentum buffers lazily (a step only
touches the rows of its batch; folds at epoch ends and whenever the rescaling grows past a
bound). This checks it against the plain definition: per-example gradients from one backward
pass per example, every example's buffer updated at every step with torch's rule, credits
``-η m`` (Nesterov ``-η (g + μ m)``) summed per (epoch, class) and per example, over enough
steps to fold many times, with a learning rate that changes every step, a momentum change and
an optimizer state reset in the middle of training.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compute.trace import TraceConfig, Tracer

N, BATCH, EPOCHS, CLASSES = 36, 6, 8, 3
LAYERS = ("0", "2", "5")
TOL = 1e-10


def small_model() -> nn.Module:
    """Both sketched-layer paths: a conv with more output positions than channels (per-example
    gradients formed) and a strided conv and a linear layer with fewer (label-sorted rows)."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, bias=False),
        nn.ReLU(),
        nn.Conv2d(3, 12, 3, stride=2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(48, 3),
    ).double()


def example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """``[B, *W]`` per traced layer: ∇ of each example's share of the batch's mean loss."""
    modules = dict(model.named_modules())
    grads = [torch.zeros(len(y), *modules[n].weight.shape, dtype=torch.float64) for n in LAYERS]
    for b in range(len(y)):
        model.zero_grad()
        (nn.functional.cross_entropy(model(x[b : b + 1]), y[b : b + 1]) / len(y)).backward()
        for j, name in enumerate(LAYERS):
            grads[j][b] = modules[name].weight.grad
    model.zero_grad()
    return grads


@pytest.mark.parametrize(
    ("momentum", "dampening", "nesterov", "maximize", "exact_max_weights"),
    [
        (0.5, 0.2, False, False, 100),  # first conv exact per example, the others sketched
        (0.5, 0.0, True, False, 0),  # both sketched
        (0.6, 0.1, False, True, 10_000),  # both exact, maximize
    ],
)
def test_lazy_momentum_matches_eager_buffers(
    momentum: float, dampening: float, nesterov: bool, maximize: bool, exact_max_weights: int
) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, 2, 7, 7, generator=generator, dtype=torch.float64)
    y = torch.arange(N) % CLASSES
    model = small_model()
    wd = 1e-2
    opt = torch.optim.SGD(
        model.parameters(),
        lr=0.05,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        weight_decay=wd,
        maximize=maximize,
    )
    config = TraceConfig(
        LAYERS, CLASSES, exact_max_weights=exact_max_weights, projection_dim=16, seed=4
    )
    tracer = Tracer(model, opt, config, num_examples=N)
    modules = dict(model.named_modules())
    shapes = [tuple(modules[n].weight.shape) for n in LAYERS]
    # Eager reference: one buffer per example and one for weight decay, per layer.
    ex_buf = [torch.zeros(N, *s, dtype=torch.float64) for s in shapes]
    reg_buf = [torch.zeros(s, dtype=torch.float64) for s in shapes]
    ex_credit = [torch.zeros(N, *s, dtype=torch.float64) for s in shapes]
    class_epoch = [torch.zeros(EPOCHS, CLASSES, *s, dtype=torch.float64) for s in shapes]
    reg_epoch = [torch.zeros(EPOCHS, *s, dtype=torch.float64) for s in shapes]
    fresh = True
    order = torch.Generator().manual_seed(2)
    step = 0
    sign = -1.0 if maximize else 1.0
    for epoch in range(EPOCHS):
        perm = torch.randperm(N, generator=order)
        for start in range(0, N, BATCH):
            idx = perm[start : start + BATCH]
            lr = 0.05 / (1 + 0.1 * step)
            mu = momentum if step < 24 else momentum + 0.2  # a momentum change: a fold
            for group in opt.param_groups:
                group["lr"], group["momentum"] = lr, mu
            if step == 36:
                opt.state.clear()  # the optimizer's buffers start over
                fresh = True
            grads = example_grads(model, x[idx], y[idx])
            w = 1.0 if fresh else 1.0 - dampening
            for j, name in enumerate(LAYERS):
                g = torch.zeros_like(ex_buf[j])
                g[idx] = sign * grads[j]
                g_reg = wd * modules[name].weight.detach().clone()
                if fresh:
                    ex_buf[j].zero_()
                    reg_buf[j].zero_()
                ex_buf[j].mul_(mu).add_(g, alpha=w)
                reg_buf[j].mul_(mu).add_(g_reg, alpha=w)
                credit = -lr * (g + mu * ex_buf[j] if nesterov else ex_buf[j])
                reg = -lr * (g_reg + mu * reg_buf[j] if nesterov else reg_buf[j])
                ex_credit[j] += credit
                class_epoch[j][epoch].index_add_(0, y, credit)
                reg_epoch[j][epoch] += reg
            fresh = False
            opt.zero_grad()
            tracer.set_batch(y[idx], idx)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
        tracer.end_epoch()
    result = tracer.finish()
    for j, name in enumerate(LAYERS):
        layer = result.layer(name)
        scale = float(class_epoch[j].abs().max())
        assert float((layer.class_epoch - class_epoch[j]).abs().max()) < TOL * scale, name
        assert float((layer.reg_epoch - reg_epoch[j]).abs().max()) < TOL * scale, name
        if layer.example is not None:
            expected = ex_credit[j]
            got = layer.example
        else:
            assert layer.proj_out is not None and layer.proj_in is not None
            flat = ex_credit[j].reshape(N, shapes[j][0], -1)
            expected = layer.proj_out @ flat @ layer.proj_in.T
            got = layer.example_proj
        assert got is not None
        assert float((got - expected).abs().max()) < TOL * float(expected.abs().max()), name
    assert max(result.reconstruction_error().values()) < 1e-12
    assert max(result.example_reconstruction_error().values()) < 1e-12
