"""Model definitions: the chapter's CNN layer for layer, ResNet-18 with the chapter's changes."""

from __future__ import annotations

import torch
from fashion_cnn.models import (
    BatchNormCNN,
    ChapterCNN,
    parameter_count,
    resnet18_for_fashion,
    summary_table,
)


def test_chapter_cnn_shape_and_parameter_count():
    model = ChapterCNN()
    # conv 1->32, 32->64, 64->128 (3x3, with bias), fc 1152->64, 64->10: 167,114 parameters
    assert parameter_count(model) == 320 + 18_496 + 73_856 + 73_792 + 650
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    flatten_input = model.features(torch.zeros(1, 1, 28, 28))
    assert flatten_input.shape == (1, 128, 3, 3)  # flattened to 1152


def test_output_softmax_reproduces_the_chapter_head():
    torch.manual_seed(0)
    logits_model = ChapterCNN(output_softmax=False)
    softmax_model = ChapterCNN(output_softmax=True)
    softmax_model.load_state_dict(logits_model.state_dict())
    images = torch.rand(4, 1, 28, 28)
    probabilities = softmax_model(images)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(4))
    assert torch.allclose(probabilities, logits_model(images).softmax(dim=1))


def test_resnet18_has_one_input_channel_and_ten_outputs():
    model = resnet18_for_fashion()
    assert tuple(model.conv1.weight.shape) == (64, 1, 7, 7)
    assert (
        model.conv1.bias is None and model.conv1.stride == (2, 2) and model.conv1.padding == (3, 3)
    )
    assert model.fc.out_features == 10
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_batchnorm_cnn_runs():
    assert BatchNormCNN()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_summary_table_lists_layers_like_torchsummary():
    table = summary_table(ChapterCNN())
    assert "[-1, 32, 26, 26]" in table and "[-1, 1152]" in table
    assert "Total params: 167,114" in table
