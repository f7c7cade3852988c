"""The ``muon`` optimizer (fashion_cnn.training.muon): Muon's orthogonalised momentum for the
convolution filters, AdamW for the rest, at one learning rate and weight decay."""

from __future__ import annotations

import copy

import pytest
import torch
from fashion_cnn.training.muon import MuonAdamW, orthogonalise
from torch import nn


@pytest.mark.parametrize("shape", [(24, 9), (96, 864), (64, 576), (576, 64), (10, 64)])
def test_newton_schulz_moves_the_singular_values_near_one_and_keeps_the_vectors(shape):
    """Five steps of the quintic take every singular value of a random update into about
    (0.68, 1.21), whatever its scale, and point the same way as the exact orthogonal factor U V^T
    of its SVD."""
    torch.manual_seed(0)
    update = torch.randn(*shape) * 37.0
    update[:, :2] *= 20  # uneven columns: singular values that differ by orders of magnitude
    result = orthogonalise(update)
    assert result.shape == update.shape
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.6 and singular.max() < 1.25, singular
    u, _, vh = torch.linalg.svd(update, full_matrices=False)
    exact = u @ vh
    cosine = (result * exact).sum() / (result.norm() * exact.norm())
    assert cosine > 0.95


def _conv_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)
    )


def _steps(model, optimizer, count):
    torch.manual_seed(1)
    images, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    for _ in range(count):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()


def test_the_filters_take_muon_steps_and_the_other_parameters_adamw_steps():
    model = _conv_model()
    optimizer = MuonAdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    groups = {group["muon"]: group["params"] for group in optimizer.param_groups}
    assert [p.shape for p in groups[True]] == [(8, 1, 3, 3)]
    assert len(groups[False]) == 5  # the filters' bias, BatchNorm's two, the classifier's two


def test_without_filters_it_steps_exactly_as_adamw():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 3))
    twin = copy.deepcopy(model)
    optimizer = MuonAdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    assert [group["muon"] for group in optimizer.param_groups] == [False]
    _steps(model, optimizer, 10)
    _steps(twin, torch.optim.AdamW(twin.parameters(), lr=0.01, weight_decay=0.05), 10)
    for mine, reference in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-7)


def test_a_filter_step_is_the_orthogonalised_gradient_at_adamws_size():
    """From zero momentum the Nesterov update is a multiple of the gradient, and the orthogonal
    factor ignores the multiple: the step is lr * 0.2 * sqrt(max(rows, cols)) times the
    orthogonalised gradient, after decoupled weight decay."""
    torch.manual_seed(0)
    model = _conv_model()
    filters = model[0].weight
    before = filters.detach().clone()
    optimizer = MuonAdamW(model.parameters(), lr=0.02, weight_decay=0.1)
    _steps(model, optimizer, 1)
    flat = filters.grad.reshape(8, 9)
    expected = before * (1 - 0.02 * 0.1) - 0.02 * 0.2 * 9**0.5 * orthogonalise(flat).view(
        8, 1, 3, 3
    )
    torch.testing.assert_close(filters.detach(), expected)
    step = (filters.detach() - before * (1 - 0.02 * 0.1)).reshape(8, 9)
    rms = step.pow(2).mean().sqrt() / 0.02
    assert 0.12 < rms < 0.25  # AdamW's update size, about 0.2 * lr (Moonshot's scaling)


def test_a_closure_is_evaluated_and_its_loss_returned():
    model = _conv_model()
    optimizer = MuonAdamW(model.parameters(), lr=0.01, weight_decay=0.0)
    images, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    before = model[0].weight.detach().clone()

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        return loss

    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(images), labels).item()
    assert optimizer.step(closure).item() == pytest.approx(expected)
    assert not torch.equal(model[0].weight, before)
