"""The whole training step as one CUDA graph: forward, loss, backward and optimizer step, captured
once and replayed for every full batch (after PyTorch's "whole network capture" recipe).

At the chapter's batch 64 a small CNN's step is a few hundred short kernels, and on a GPU the time
goes to launching them, not running them (docs/results/notebook.md, "GPU"); a replay launches them all
at once. What makes the replayed step the eager step:

- the optimizer keeps its step count and learning rate in device tensors (``capturable``, a tensor
  ``lr`` that a schedule fills in place), so nothing the graph reads is a Python number that
  changes between steps;
- capture needs warm-up steps first (lazy optimizer state, cuDNN/cuBLAS handles); they run on a
  copy of the batch, and afterwards the model, the optimizer state and the CUDA random state are
  put back exactly as they were, in place, so the run trains the same steps as without a graph;
- a batch of another size (an epoch's last, when the batch size does not divide the images)
  runs eagerly through the same parameters and optimizer.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

WARMUP_STEPS = 3


class GraphedStep:
    """``step(images, labels) -> (outputs, loss)``, replaying one captured graph per full batch."""

    def __init__(
        self,
        forward: nn.Module,
        model: nn.Module,
        optimizer,
        loss_function,
        *,
        bf16: bool,
        batch_size: int,
    ):
        self.forward, self.model, self.optimizer = forward, model, optimizer
        self.loss_function, self.bf16, self.batch_size = loss_function, bf16, batch_size
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] = {}
        self.replays = 0
        self.eager_steps = 0

    # -------------------------------------------------------------------------------- capture

    def _snapshot(self) -> dict:
        optimizer_state = {
            parameter: {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
            for parameter, state in self.optimizer.state.items()
        }
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            # the loss's running counts (ConsistencyLoss's pseudo-labels): warm-up adds to them
            "loss": [buffer.clone() for buffer in self.loss_function.buffers()],
            "optimizer": optimizer_state,
            "cuda_rng": torch.cuda.get_rng_state(),
        }

    def _restore(self, snapshot: dict) -> None:
        """Put everything the warm-up changed back, in place (the graph holds these tensors)."""
        with torch.no_grad():
            for key, value in self.model.state_dict().items():
                value.copy_(snapshot["model"][key])
            for buffer, before in zip(self.loss_function.buffers(), snapshot["loss"], strict=True):
                buffer.copy_(before)
            for parameter, state in self.optimizer.state.items():
                before = snapshot["optimizer"].get(parameter)
                for key, value in state.items():
                    if not torch.is_tensor(value):
                        continue
                    if before is None:
                        # a fresh optimizer: Adam's lazily created state starts at zero
                        value.zero_()
                    else:
                        value.copy_(before[key])
        torch.cuda.set_rng_state(snapshot["cuda_rng"])

    def _eager(self, images, labels, set_to_none: bool):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            outputs = self.forward(images)
        loss = self.loss_function(outputs.float(), labels)
        self.optimizer.zero_grad(set_to_none=set_to_none)
        loss.backward()
        self.optimizer.step()
        return outputs.detach(), loss.detach()

    def _capture(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        snapshot = self._snapshot()
        static_images, static_labels = images.clone(), labels.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._eager(static_images, static_labels, set_to_none=True)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            with torch.autocast(
                "cuda", dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False
            ):
                outputs = self.forward(static_images)
            loss = self.loss_function(outputs.float(), static_labels)
            loss.backward()
            self.optimizer.step()
        self._restore(snapshot)
        self.graph = graph
        self.static = {
            "images": static_images,
            "labels": static_labels,
            "outputs": outputs,
            "loss": loss,
        }
        log.info(
            "CUDA graph: the training step captured for batches of %d (%d warm-up steps undone)",
            len(labels),
            WARMUP_STEPS,
        )

    # -------------------------------------------------------------------------------- replay

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        if self.graph is None and len(labels) == self.batch_size:
            self._capture(images, labels)
        static = self.static
        if (
            self.graph is None
            or images.shape != static["images"].shape
            or images.stride() != static["images"].stride()
        ):
            # The gradients live in the graph's memory: zero them in place, never drop them.
            self.eager_steps += 1
            return self._eager(images, labels, set_to_none=self.graph is None)
        static["images"].copy_(images)
        static["labels"].copy_(labels)
        self.graph.replay()
        self.replays += 1
        return static["outputs"].detach(), static["loss"].detach()
