"""StepRunner (step_runner): eager steps on CPU; on CUDA, graph replays that match eager
steps, a new graph per key, and a capture that fails (a host sync) falling back to eager."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from minerf_cli.step_runner import WARMUP_STEPS, StepRunner

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@dataclass
class _Batch:
    x: torch.Tensor
    y: torch.Tensor

    def tensors(self):
        return [self.x, self.y]

    def with_tensors(self, values):
        return _Batch(*values)


def _setup(device):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def loss_fn(batch, key):
        scale = 1.0 if key is None else float(key)
        loss = ((net(batch.x)[:, 0] * scale - batch.y) ** 2).mean()
        loss.backward()
        return (loss.detach(),)

    return net, opt, loss_fn


def _batches(device, n=8):
    g = torch.Generator().manual_seed(1)
    return [_Batch(torch.randn(32, 4, generator=g).to(device), torch.randn(32, generator=g).to(device)) for _ in range(n)]


def _train(device, graphs, keys):
    net, opt, loss_fn = _setup(device)
    runner = StepRunner(loss_fn, opt, torch.device(device), graphs=graphs)
    losses = []
    for batch, key in zip(_batches(device, len(keys)), keys):
        (loss,) = runner(batch, key)
        opt.step()
        losses.append(loss.item())
    return losses, [p.detach().cpu() for p in net.parameters()], runner


def test_on_cpu_steps_run_eagerly_and_gradients_do_not_pile_up():
    losses, params, runner = _train("cpu", True, [None] * 4)
    assert not runner.enabled and runner.captures == 0 and not runner.graphed
    net, opt, loss_fn = _setup("cpu")  # the same four steps by hand
    ref = []
    for batch in _batches("cpu", 4):
        opt.zero_grad()
        ref.append(loss_fn(batch, None)[0].item())
        opt.step()
    assert losses == pytest.approx(ref)
    for a, b in zip(params, net.parameters()):
        assert torch.allclose(a, b.detach())


@cuda
def test_graph_replays_train_like_eager_steps():
    keys = [None] * 6 + [2.0] * 5  # a new key: warm-up and a second capture
    eager, p_eager, _ = _train("cuda", False, keys)
    graphed, p_graph, runner = _train("cuda", True, keys)
    assert runner.captures == 2 and runner.graphed and runner.failure is None
    assert graphed == pytest.approx(eager, rel=1e-4)
    for a, b in zip(p_graph, p_eager):
        assert torch.allclose(a, b, atol=1e-5)


@cuda
def test_a_step_that_syncs_falls_back_to_eager_once(capsys):
    net, opt, loss_fn = _setup("cuda")

    def syncing(batch, key):
        out = loss_fn(batch, key)
        torch.rand(4, device="cuda")  # the generator is in the capture too
        (batch.x.cumprod(0) * 1.0).sum()
        float(out[0])  # a host read: not allowed while capturing
        return out

    runner = StepRunner(syncing, opt, torch.device("cuda"), graphs=True)
    for batch in _batches("cuda", WARMUP_STEPS + 3):
        (loss,) = runner(batch, None)
        opt.step()
        assert torch.isfinite(loss)
    assert runner.failure and not runner.enabled and runner.captures == 0
    assert capsys.readouterr().err.count("without CUDA graphs") == 1
