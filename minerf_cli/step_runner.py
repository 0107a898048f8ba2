"""Running training steps, eagerly or as a replayed CUDA graph.

A training step of a NeRF is a thousand small kernels (samplers, per-layer matmuls,
activations, their gradients, volume rendering): launching them from Python costs more
than the GPU needs to run them (measured on an H100, the vanilla field's step: 27 ms of
host time for 18 ms of GPU work). On CUDA the forward and backward pass of a step is
therefore captured once as a CUDA graph and replayed: each step only copies its batch
into the graph's input tensors and launches the graph. The optimizer step stays outside
(fused Adam is a few launches), so learning-rate changes need nothing special.

A graph is made per *key*, whatever changes the step's shapes or code path (smoothing on
or off, the packed passes' capacities): the first steps of a new key run eagerly on the
capture stream (warm-up: Triton compilation, cuBLAS workspaces), then the graph is
captured and replayed until the key changes. Capture fails if the step synchronises with
the host; the runner then says why once on stderr and goes on eagerly.

The gradients of a replayed step live in the graph's memory: between replays, nothing may
set them to None (``zero_grad``); the runner zeroes gradients only for eager steps.
"""

from __future__ import annotations

from typing import Callable, Hashable

import torch

from .output import warn

WARMUP_STEPS = 2  # eager steps of a new key before its capture

LossFn = Callable[[object, Hashable], tuple]  # (batch, key) -> tuple of tensors (forward and backward done)


class StepRunner:
    """``runner(batch, key) -> outputs of loss_fn(batch, key)``: forward + backward of one step.

    ``loss_fn(batch, key)`` runs the forward and backward pass and returns a tuple of tensors
    (or None); ``batch.tensors()`` lists the batch's tensors (their shapes fixed per key)
    and ``batch.with_tensors(list)`` is the same batch made of other tensors;
    ``optimizer`` is the optimizer whose gradients the step fills; ``graphs``: capture on
    CUDA (``False``: always eager, e.g. on CPU).
    """

    def __init__(self, loss_fn: LossFn, optimizer: torch.optim.Optimizer, device: torch.device, graphs: bool = True):
        self.loss_fn, self.optimizer, self.device = loss_fn, optimizer, device
        self.enabled = graphs and device.type == "cuda"
        self.failure: str | None = None
        self.captures = 0
        self._key: Hashable = None
        self._warm = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: list[torch.Tensor] = []
        self._outputs: tuple = ()
        self._stream = torch.cuda.Stream(device) if self.enabled else None

    @property
    def graphed(self) -> bool:
        """Whether the last step was a graph replay."""
        return self._graph is not None

    def __call__(self, batch, key: Hashable = None) -> tuple:
        if not self.enabled:
            return self._eager(batch, key)
        if key != self._key:
            self._key, self._warm, self._graph, self._inputs, self._outputs = key, 0, None, [], ()
        if self._graph is None:
            if self._warm < WARMUP_STEPS:
                self._warm += 1
                return self._on_stream(self._eager, batch, key)
            try:
                return self._capture(batch, key)
            except Exception as exc:  # noqa: BLE001 - any failure: go on without graphs
                self._give_up(exc)
                return self._eager(batch, key)
        for static, new in zip(self._inputs, batch.tensors()):
            static.copy_(new, non_blocking=True)
        self._graph.replay()
        return self._outputs

    def _eager(self, batch, key: Hashable) -> tuple:
        self.optimizer.zero_grad(set_to_none=True)
        return self.loss_fn(batch, key)

    def _on_stream(self, fn, *args):
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            out = fn(*args)
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        return out

    def _capture(self, batch, key: Hashable) -> tuple:
        inputs = [t.clone() for t in batch.tensors()]
        static = batch.with_tensors(inputs)
        self.optimizer.zero_grad(set_to_none=True)  # the gradients are made inside the graph's memory
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(self.device)
        with torch.cuda.graph(graph, stream=self._stream):
            outputs = self.loss_fn(static, key)
        self._graph, self._inputs, self._outputs = graph, inputs, outputs
        self.captures += 1
        graph.replay()  # the capture ran nothing: this step's work
        return outputs

    def _give_up(self, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        self.enabled, self.failure, self._graph = False, reason, None
        try:  # a capture that broke off can leave the CUDA generator in capture mode: a clean one resets it
            with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=self._stream):
                torch.rand(1, device=self.device)
        except Exception:  # noqa: BLE001 - nothing more to try
            pass
        torch.cuda.synchronize(self.device)
        warn(f"training goes on without CUDA graphs (capture failed: {reason})")

