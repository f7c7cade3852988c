"""Model definitions: the chapter's CNN layer for layer, ResNet-18 with the chapter's changes."""

from __future__ import annotations

import pytest
import torch
from fashion_cnn.models.architectures.cnn import BatchNormCNN, ChapterCNN
from fashion_cnn.models.architectures.resnet18 import resnet18_for_fashion
from fashion_cnn.models.catalog import build_model, parameter_count, summary_table
from torch import nn


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


def test_the_small_resnet_is_resnet9_sized_for_28x28():
    """Three stages down to 3x3, two residual blocks whose skip is really added (zeroing a
    block's last BatchNorm leaves x + 0 = x), and the multiply-adds its docstring states."""
    model = build_model("resnet_small", {"width": 16}).eval()
    shapes = []
    model.features.register_forward_hook(lambda _, __, output: shapes.append(output.shape))
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert shapes == [(2, 128, 3, 3)]
    blocks = [m for m in model.modules() if type(m).__name__ == "Residual"]
    assert [b.body[0].in_channels for b in blocks] == [32, 128]
    images = torch.randn(2, 32, 14, 14)
    with torch.no_grad():
        blocks[0].body[-2].weight.zero_()
        blocks[0].body[-2].bias.zero_()
        assert torch.equal(blocks[0](images), images)
    macs = []

    def count(module, inputs, output):
        kernel = module.weight[0].numel()
        macs.append(output.numel() // 2 * kernel)

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(count)
    model(torch.zeros(2, 1, 28, 28))
    assert len(macs) == 8 and 16e6 < sum(macs) < 18e6


def test_summary_table_lists_layers_like_torchsummary():
    table = summary_table(ChapterCNN())
    assert "[-1, 32, 26, 26]" in table and "[-1, 1152]" in table
    assert "Total params: 167,114" in table


@pytest.mark.parametrize(
    ("channels", "out_channels", "stride", "size"),
    [(512, 512, 1, 1), (256, 512, 2, 2)],  # ResNet-18's last stage at 28x28
)
def test_a_one_pixel_convolution_is_computed_as_a_matmul_with_the_same_result(
    channels, out_channels, stride, size
):
    from fashion_cnn.models.layers import OnePixelConv2d

    torch.manual_seed(0)
    plain = nn.Conv2d(channels, out_channels, 3, stride=stride, padding=1, bias=False)
    fast = OnePixelConv2d(channels, out_channels, 3, stride=stride, padding=1, bias=False)
    fast.load_state_dict(plain.state_dict())
    images = torch.randn(8, channels, size, size, requires_grad=True)
    expected, got = plain(images), fast(images)
    assert "Convolution" not in type(got.grad_fn).__name__  # the matrix product path ran
    assert got.shape == expected.shape == (8, out_channels, 1, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    (input_grad_plain,) = torch.autograd.grad(expected.square().sum(), images)
    (input_grad_fast,) = torch.autograd.grad(got.square().sum(), images)
    torch.testing.assert_close(input_grad_fast, input_grad_plain, rtol=1e-4, atol=1e-4)
    weight_grad_plain = torch.autograd.grad(plain(images).sum(), plain.weight)[0]
    weight_grad_fast = torch.autograd.grad(fast(images).sum(), fast.weight)[0]
    torch.testing.assert_close(weight_grad_fast, weight_grad_plain, rtol=1e-4, atol=1e-4)
    # the taps that only ever see zero padding get exactly zero, as in the convolution
    assert weight_grad_fast[:, :, 0, :].abs().max() == 0


@pytest.mark.parametrize("size", [1, 2])
def test_a_one_pixel_convolutions_weight_gradient_arrives_in_the_weights_layout(size):
    """In channels_last (the engine's CPU layout) the taps' gradient reaches the weight already
    in that layout, the same values as the convolution's: autograd has no whole-weight copy to
    make (slicing handed it a contiguous gradient, copied into the layout every step)."""
    from fashion_cnn.models.layers import OnePixelConv2d

    torch.manual_seed(0)
    plain = nn.Conv2d(32, 16, 3, stride=size, padding=1, bias=False)
    fast = OnePixelConv2d(32, 16, 3, stride=size, padding=1, bias=False)
    fast.load_state_dict(plain.state_dict())
    plain, fast = (m.to(memory_format=torch.channels_last) for m in (plain, fast))
    arriving = []
    fast.weight.register_hook(
        lambda grad: arriving.append(grad.is_contiguous(memory_format=torch.channels_last))
    )
    images = torch.randn(8, 32, size, size).contiguous(memory_format=torch.channels_last)
    plain(images).square().sum().backward()
    fast(images).square().sum().backward()
    assert arriving == [True]
    assert fast.weight.grad.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-5)


def test_resnet18_with_matmul_convolutions_trains_like_the_plain_one(arrays):
    """The engine's CPU model: the same loss and gradients on real images, state_dict unchanged."""
    import copy

    from fashion_cnn.models.layers import OnePixelConv2d, one_pixel_convolutions_as_matmuls

    torch.manual_seed(0)
    plain = build_model("resnet18", {"output_softmax": False}).train()
    fast = copy.deepcopy(plain)
    assert one_pixel_convolutions_as_matmuls(fast) == 20
    assert sum(isinstance(m, OnePixelConv2d) for m in fast.modules()) == 20
    assert list(fast.state_dict()) == list(plain.state_dict())
    images = torch.from_numpy(arrays["train_images"][:16]).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(arrays["train_labels"][:16].astype("int64"))
    losses = []
    for model in (plain, fast):
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for a, b in zip(plain.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- the exercises


def test_dropout_adds_no_weights_and_is_the_plain_network_in_eval_mode():
    """Exercise 2: the same state_dict keys as the chapter's CNN (weights move between the two),
    identical outputs in eval mode (and so in evaluation and ONNX), different ones in training."""
    torch.manual_seed(0)
    plain = ChapterCNN()
    dropped = ChapterCNN(dropout=0.5, dropout_place="both")
    assert list(dropped.state_dict()) == list(plain.state_dict())
    dropped.load_state_dict(plain.state_dict())
    images = torch.rand(8, 1, 28, 28)
    assert torch.equal(dropped.eval()(images), plain.eval()(images))
    dropped.train()
    assert not torch.allclose(dropped(images), plain(images))
    table = summary_table(dropped)
    assert "Dropout (dropout_classifier)" in table and "Dropout2d (dropout_features)" in table


@pytest.mark.parametrize(
    ("place", "expected"),
    [
        ("classifier", "conv relu pool conv relu pool conv relu flatten DROP fc relu DROP fc"),
        (
            "features",
            "conv relu pool DROP2D conv relu pool DROP2D conv relu DROP2D flatten fc relu fc",
        ),
        (
            "both",
            "conv relu pool DROP2D conv relu pool DROP2D conv relu DROP2D flatten DROP fc relu DROP fc",
        ),
    ],
)
def test_dropout_acts_where_it_is_placed(place, expected):
    """The order in which the layers run: dropout before each fully connected layer, channel
    dropout after each pooling stage and the last conv block."""
    model = ChapterCNN(dropout=0.5, dropout_place=place).train()
    short = {
        nn.Conv2d: "conv",
        nn.ReLU: "relu",
        nn.MaxPool2d: "pool",
        nn.Flatten: "flatten",
        nn.Linear: "fc",
        nn.Dropout: "DROP",
        nn.Dropout2d: "DROP2D",
    }
    ran = []
    for module in model.modules():
        if type(module) in short:
            module.register_forward_hook(lambda m, i, o: ran.append(short[type(m)]))
    images = torch.rand(16, 1, 28, 28)
    model(images)
    assert " ".join(ran) == expected
    if "DROP2D" in expected:  # whole channels zeroed: the feature maps' dropout is channel-wise
        maps = model.dropout_features(torch.ones(16, 32, 13, 13)).flatten(2)
        assert ((maps == 0).all(dim=2) | (maps == 2).all(dim=2)).all()


def test_vit_small_cuts_28x28_into_patches():
    model = build_model("vit_small", {"output_softmax": False, "width": 64, "patch_size": 4})
    assert model.vit.conv_proj.in_channels == 1 and model.vit.conv_proj.kernel_size == (4, 4)
    assert model.vit.seq_length == 7 * 7 + 1  # 49 patches and the class token
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    seven = build_model("vit_small", {"output_softmax": False, "width": 64, "patch_size": 7})
    assert seven.vit.seq_length == 4 * 4 + 1
    assert len(seven.vit.encoder.layers) == 6


def test_vit_b16_takes_grey_28x28_as_imagenet_rgb_at_its_size():
    torch.manual_seed(0)
    model = build_model("vit_b16", {"output_softmax": False, "image_size": 32}).eval()
    grey = torch.rand(2, 1, 28, 28)
    stem = model.stem(grey)
    assert stem.shape == (2, 3, 32, 32)
    resized = torch.nn.functional.interpolate(grey, size=(32, 32), mode="bilinear")
    for channel, (mean, std) in enumerate([(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)]):
        assert torch.allclose(stem[:, channel : channel + 1], (resized - mean) / std, atol=1e-6)
    assert model(grey).shape == (2, 10)
    assert model.vit.heads[0].out_features == 10 and model.vit.hidden_dim == 768
    # torchvision's vit_b_16 (86,567,656), a 10-way head for the 1000-way one, and position
    # embeddings for 2x2 patches and the class token instead of 14x14 and the class token
    assert parameter_count(model) == 86_567_656 - 769_000 + 7_690 - (197 - 5) * 768


def test_the_light_frontier_recipe_is_the_frontier_recipe_with_the_keys_its_comment_names():
    """cnn_frontier_light is what config.yaml's comment says: cnn_frontier without erasing, with the
    moving average warmed up and one epoch more, nothing else (its figures are compared with
    cnn_frontier's on docs/results/frontier.md, which holds only where nothing else differs)."""
    from conftest import base_config

    experiments = base_config()["experiments"]
    frontier, light = experiments["cnn_frontier"], experiments["cnn_frontier_light"]
    changed = {
        key: (frontier.get(key), light.get(key))
        for key in frontier.keys() | light.keys()
        if frontier.get(key) != light.get(key) and key != "description"
    }
    assert changed == {
        "augmentation": ("flip_crop_erase", "flip_crop"),
        "ema_warmup": (False, True),
        "epochs": (15, 16),
    }


def test_every_experiment_of_the_config_builds_its_model_with_its_arguments():
    """config.yaml's experiments, each as its own settings build it (width, dropout, patch size,
    ...): ten outputs per image at the size the experiment feeds it. The two frontier recipes'
    sizes are the ones docs/results/notebook.md names (926,578 and 1,645,546 parameters), the
    speed-run's width 16 a quarter of the arithmetic of width 32 (412,666); cnn_frontier_light is
    cnn_frontier's network."""
    from conftest import base_config
    from fashion_cnn.config.settings import ExperimentSettings
    from fashion_cnn.models.catalog import model_arguments

    experiments = base_config()["experiments"]
    counts = {}
    for name, values in experiments.items():
        experiment = ExperimentSettings.from_dict(values)
        if experiment.model.name == "vit_b16":
            continue  # 86M parameters at 224x224: tests/test_engine.py trains it small
        model = build_model(experiment.model.name, model_arguments(experiment.model)).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10), name
        counts[name] = parameter_count(model)
    assert counts["cnn_frontier"] == 926_578
    assert counts["cnn_frontier_wide"] == 1_645_546
    assert counts["cnn_speedrun"] == 412_666
    # the same network as cnn_frontier, lighter augmentation
    assert counts["cnn_frontier_light"] == counts["cnn_frontier"]
    assert counts["cnn_baseline"] == 167_114
