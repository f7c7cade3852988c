"""Batch sources for the training loop.

``DeviceBatches`` (the default) keeps the dataset on the training device as one uint8 tensor and
gathers, scales and augments whole batches there. ``LoaderBatches`` is the chapter's pipeline
(DataLoader over per-sample PIL transforms), kept to compare speed and accuracy.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from fashion_cnn.data.augment import Policy, augment_batch, to_float_batch, torchvision_transform


class DeviceBatches:
    """The dataset as one uint8 tensor on the device; batches gathered, scaled, augmented there."""

    resumable_mid_epoch = True

    def __init__(
        self,
        images,
        labels,
        device,
        *,
        policy: Policy,
        batch_size: int,
        generator,
        channels_last,
        steps_per_epoch: int = 0,
    ):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1)
        # class indices, or soft targets (N x classes, float: a teacher's) as they are
        soft = labels.ndim == 2
        self.labels = torch.from_numpy(labels.astype(np.float32 if soft else np.int64)).to(device)
        self.policy, self.batch_size, self.generator = policy, batch_size, generator
        self.channels_last = channels_last
        self.count = len(self.labels)
        self.steps_per_epoch = steps_per_epoch

    def __len__(self) -> int:
        return self.steps_per_epoch or math.ceil(self.count / self.batch_size)

    def new_order(self) -> torch.Tensor:
        """One random order of the images; with ``steps_per_epoch``, as many successive random
        orders as its full batches need (every image once before any twice), cut to fit."""
        if not self.steps_per_epoch:
            return torch.randperm(self.count, generator=self.generator, device=self.images.device)
        needed = self.steps_per_epoch * self.batch_size
        orders = [
            torch.randperm(self.count, generator=self.generator, device=self.images.device)
            for _ in range(math.ceil(needed / self.count))
        ]
        return torch.cat(orders)[:needed]

    def batches(self, order: torch.Tensor | None, start_step: int):
        assert order is not None  # new_order's, for this pipeline
        for step in range(start_step, len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images = augment_batch(to_float_batch(self.images[index]), self.policy, self.generator)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, self.labels[index]

    def rng_state(self) -> dict:
        return {"generator": self.generator.get_state()}

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class SemiSupervisedBatches(DeviceBatches):
    """Labelled batches as ``DeviceBatches`` gives them, each followed by unlabelled images: a
    random draw of ``ratio`` x batch size of them, augmented twice (the weak policy, then the
    strong one). Yields ``(images, labels)`` where ``labels`` belong to the first ``len(labels)``
    images; the rest is the unlabelled weak half, then the strong half (``ConsistencyLoss``).

    Only the unlabelled images are given to it, never their labels. Resumable mid-epoch: every
    draw comes from the one generator whose state the checkpoint keeps."""

    def __init__(
        self,
        images,
        labels,
        unlabelled_images,
        device,
        *,
        policy: Policy,
        strong_policy: Policy,
        batch_size: int,
        ratio: int,
        generator,
        channels_last,
        steps_per_epoch: int = 0,
    ):
        super().__init__(
            images,
            labels,
            device,
            policy=policy,
            batch_size=batch_size,
            generator=generator,
            channels_last=False,
            steps_per_epoch=steps_per_epoch,
        )
        self.unlabelled = (
            torch.from_numpy(np.ascontiguousarray(unlabelled_images)).to(device).unsqueeze(1)
        )
        self.strong_policy, self.unlabelled_batch = strong_policy, ratio * batch_size
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def batches(self, order: torch.Tensor | None, start_step: int):
        for images, labels in super().batches(order, start_step):
            pick = torch.randint(
                len(self.unlabelled),
                (self.unlabelled_batch,),
                generator=self.generator,
                device=self.unlabelled.device,
            )
            raw = to_float_batch(self.unlabelled[pick])
            weak = augment_batch(raw, self.policy, self.generator)
            strong = augment_batch(raw, self.strong_policy, self.generator)
            yield torch.cat([images, weak, strong]).contiguous(memory_format=self.layout), labels


class ChapterDataset(torch.utils.data.Dataset):
    """Like torchvision's FashionMNIST: one PIL image at a time through the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index], mode="L")), int(
            self.labels[index]
        )


class LoaderBatches:
    """The chapter's pipeline: DataLoader(shuffle=True) over per-sample PIL transforms.

    Kept to compare speed and accuracy with the device pipeline. Resumes at epoch boundaries only.
    """

    resumable_mid_epoch = False

    def __init__(
        self, images, labels, device, *, policy: Policy, batch_size: int, seed: int, channels_last
    ):
        self.generator = torch.Generator().manual_seed(seed)
        dataset = ChapterDataset(images, labels, torchvision_transform(policy))
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, generator=self.generator
        )
        self.device, self.channels_last = device, channels_last

    def __len__(self) -> int:
        return len(self.loader)

    def new_order(self) -> None:
        return None

    def batches(self, order, start_step: int):
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels.to(self.device, non_blocking=True)

    def rng_state(self) -> dict:
        # per-sample transforms draw from the global generator
        return {"generator": self.generator.get_state(), "global": torch.get_rng_state()}

    def set_rng_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["global"])
