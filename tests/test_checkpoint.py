"""Checkpoints and weights from elsewhere: corrupt files, other architectures, pickled code."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from conftest import assert_no_traceback, base_config, cli, flat
from fashion_cnn.config.settings import ExperimentSettings
from fashion_cnn.core.errors import UserError
from fashion_cnn.models.architectures.resnet18 import resnet18_for_fashion
from fashion_cnn.models.catalog import build_model
from fashion_cnn.models.checkpoint import load_checkpoint, load_file, model_from_checkpoint
from fashion_cnn.models.weights import apply_weights, fetch_imagenet_weights, initialise


class RunsCode:
    """Unpickling this calls os.system: a file that would run code when loaded unsafely."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "fashion-cnn-checkpoint/1", "model": RunsCode(marker)}, path)
    with pytest.raises(UserError, match="could run code"):
        load_checkpoint(path)
    assert not marker.exists()
    # the same file through the command line: a clear paragraph, no traceback, no payload
    result = cli(
        "plot-filters",
        "--checkpoint",
        path,
        "--chapter-figure",
        tmp_path / "a.png",
        "--layers-figure",
        tmp_path / "b.png",
    )
    assert result.returncode == 2 and "could run code" in flat(result.stderr)
    assert_no_traceback(result.stderr)
    assert not marker.exists()
    # proof that the payload is live: loading unsafely runs it
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04" + b"\0" * 64],
    ids=["empty", "text", "broken zip"],
)
def test_corrupt_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="corrupt or not a PyTorch file"):
        load_checkpoint(path)


def test_a_folder_or_a_plain_pickle_is_named_for_what_it_is(tmp_path):
    """The right reason: a folder given as the checkpoint is "a folder", not "missing"; a plain
    pickle.dump file is "a plain Python pickle", not "corrupt" (and is still never unpickled)."""
    import pickle  # here: only this test writes a plain pickle

    with pytest.raises(UserError, match="is a folder, not a file"):
        load_checkpoint(tmp_path)
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"conv.weight": [[0.1, 0.2]]}, protocol=4))
    with pytest.raises(UserError, match="is a plain Python pickle, not a file torch.save writes"):
        load_file(path)
    legacy = tmp_path / "legacy.pt"  # torch.save's old format is a pickle too, and still loads
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_file(legacy)["w"], torch.ones(2))


def test_truncated_real_checkpoint_is_named(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(1000, 100)}, path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="corrupt or not a PyTorch file"):
        load_file(path)


def test_bare_state_dict_is_not_mistaken_for_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(resnet18_for_fashion().state_dict(), path)
    with pytest.raises(UserError, match="not a fashion-cnn checkpoint"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture_is_named(tmp_path):
    state = {
        "format": "fashion-cnn-checkpoint/1",
        "model": {"name": "cnn", "arguments": {"output_softmax": False}},
        "model_state": resnet18_for_fashion().state_dict(),
    }
    with pytest.raises(UserError, match="belong to another architecture"):
        model_from_checkpoint(state, "colleague.pt")


# ----------------------------------------------------------------------------- pretrained weights


@pytest.fixture
def imagenet_layout_file(tmp_path):
    """A state_dict in torchvision's ResNet-18 key layout (3-channel conv1, 1000-way fc), made
    here: ImageNet weights cannot be downloaded in tests."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-imagenet-layout.pth"
    torch.save(state, path)
    return path, state


def test_imagenet_layout_weights_load_except_the_replaced_layers(imagenet_layout_file):
    path, state = imagenet_layout_file
    torch.manual_seed(2)
    model = resnet18_for_fashion()
    fresh_conv1 = model.conv1.weight.detach().clone()
    apply_weights(model, "resnet18", path, conv1_init="random")
    assert torch.equal(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(model.bn1.running_var, state["bn1.running_var"])
    assert torch.equal(model.conv1.weight, fresh_conv1)  # the chapter: a new conv1
    assert model.fc.weight.shape == (10, 512)


def test_mean_rgb_keeps_the_pretrained_conv1_filters(imagenet_layout_file):
    path, state = imagenet_layout_file
    model = resnet18_for_fashion()
    apply_weights(model, "resnet18", path, conv1_init="mean_rgb")
    assert torch.allclose(model.conv1.weight, state["conv1.weight"].mean(dim=1, keepdim=True))


def test_weights_of_another_model_are_refused(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(UserError, match="do not fit model 'resnet18'"):
        apply_weights(resnet18_for_fashion(), "resnet18", path, conv1_init="random")


def test_offline_fetch_records_unavailable_and_training_goes_on_loudly(tmp_path, caplog):
    """No internet here: torchvision's URL fails, for real, and the fallback is flagged."""
    status_path = tmp_path / "resnet18_imagenet.json"
    status = fetch_imagenet_weights(tmp_path / "weights", status_path, strict=False)
    assert status["available"] is False and "download.pytorch.org" in status["url"]
    assert not list((tmp_path / "weights").glob("*.pth"))
    experiment = ExperimentSettings.from_dict(base_config()["experiments"]["resnet18_finetune"])
    assert (experiment.model.weights, experiment.chapter_accuracy) == ("imagenet", 0.91)
    source = initialise(resnet18_for_fashion(), experiment, str(status_path), strict=False)
    assert source == "random init (ImageNet weights unavailable)"
    assert (
        "RANDOM INITIALISATION — random init — not comparable with the chapter's 91%" in caplog.text
    )
    with pytest.raises(UserError, match="pretrained.strict is true"):
        initialise(resnet18_for_fashion(), experiment, str(status_path), strict=True)


@pytest.mark.slow
def test_strict_fetch_fails_with_a_clear_message(tmp_path):
    result = cli(
        "fetch-weights", "--folder", tmp_path / "w", "--status", tmp_path / "s.json", "--strict"
    )
    assert result.returncode == 2
    assert "pretrained.strict is true, so the workflow stops here" in flat(result.stderr)
    assert_no_traceback(result.stderr)
    assert not (tmp_path / "s.json").exists()


def test_a_prestaged_weights_file_is_hash_checked(tmp_path, caplog):
    """A file under torchvision's name is accepted only if its SHA-256 starts with the hash in the
    name; anything else (here a state_dict made by the test) is not used as ImageNet weights."""
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(
        torchvision.models.resnet18(weights=None).state_dict(), folder / "resnet18-f37072fd.pth"
    )
    status = fetch_imagenet_weights(folder, tmp_path / "status.json", strict=False)
    assert status["available"] is False
    assert "does not match the hash in its name" in caplog.text


@pytest.mark.parametrize(
    "content",
    [b"\x80\x02]q\x00.", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01", b"a state an earlier run left"],
    ids=["pickle of an empty list", "pickle cut short", "text"],
)
def test_a_damaged_file_of_any_kind_is_named(tmp_path, content):
    """torch.load fails in many ways on a damaged file (IndexError, KeyError, ...): each one is the
    same clear error, never a traceback."""
    path = tmp_path / "train_state.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="corrupt or not a PyTorch file|not a fashion-cnn"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- ViT-B/16 weights


@pytest.fixture(scope="module")
def vit_b16_layout_file(tmp_path_factory):
    """A state_dict in torchvision's vit_b_16 layout (224x224 position embeddings, 1000-way head),
    made here: the ImageNet weights cannot be downloaded in tests."""
    torch.manual_seed(3)
    state = torchvision.models.vit_b_16(weights=None).state_dict()
    path = tmp_path_factory.mktemp("vit") / "vit_b_16-layout.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("image_size", [224, 64])
def test_vit_b16_weights_load_with_position_embeddings_fitted_to_the_size(
    vit_b16_layout_file, image_size
):
    from torchvision.models.vision_transformer import interpolate_embeddings

    path, state = vit_b16_layout_file
    torch.manual_seed(4)
    model = build_model("vit_b16", {"output_softmax": False, "image_size": image_size})
    fresh_head = model.vit.heads[0].weight.detach().clone()
    done = apply_weights(model, "vit_b16", path, conv1_init="random")
    assert done["fresh"] == ["vit.heads.0.weight", "vit.heads.0.bias"]
    own = model.state_dict()
    for key in ("class_token", "conv_proj.weight", "encoder.layers.encoder_layer_11.mlp.3.weight"):
        assert torch.equal(own[f"vit.{key}"], state[key]), key
    assert torch.equal(model.vit.heads[0].weight, fresh_head)  # the new 10-way head
    tokens = (image_size // 16) ** 2 + 1
    assert own["vit.encoder.pos_embedding"].shape == (1, tokens, 768)
    expected = interpolate_embeddings(image_size, 16, dict(state))["encoder.pos_embedding"]
    assert torch.equal(own["vit.encoder.pos_embedding"], expected)
    if image_size == 224:  # no interpolation at the pretrained size
        assert torch.equal(own["vit.encoder.pos_embedding"], state["encoder.pos_embedding"])


def test_a_trained_vit_b16_checkpoint_loads_as_weights(tmp_path):
    """A fashion-cnn vit_b16 (keys under vit., a 10-way head) is taken whole, head included."""
    torch.manual_seed(5)
    trained = build_model("vit_b16", {"output_softmax": False, "image_size": 32})
    path = tmp_path / "trained.pth"
    torch.save(trained.state_dict(), path)
    model = build_model("vit_b16", {"output_softmax": False, "image_size": 32})
    assert apply_weights(model, "vit_b16", path, conv1_init="random")["fresh"] == []
    assert torch.equal(model.vit.heads[0].weight, trained.vit.heads[0].weight)


def test_resnet_weights_given_to_a_vit_are_refused(imagenet_layout_file):
    path, _ = imagenet_layout_file
    model = build_model("vit_b16", {"output_softmax": False, "image_size": 32})
    with pytest.raises(UserError, match="do not fit model 'vit_b16'"):
        apply_weights(model, "vit_b16", path, conv1_init="random")


def test_the_pretrained_models_are_the_ones_the_config_allows():
    from fashion_cnn.config.choices import models_with
    from fashion_cnn.models.catalog import MODELS
    from fashion_cnn.models.weights import imagenet_weights_url

    with_weights = [name for name in MODELS if MODELS.get(name).pretrained is not None]
    assert with_weights == models_with("pretrained") == ["resnet18", "vit_b16"]
    assert all(imagenet_weights_url(name).startswith("https://") for name in with_weights)
    assert imagenet_weights_url("vit_b16") == (
        "https://download.pytorch.org/models/vit_b_16-c867db91.pth"
    )


def test_offline_vit_fetch_goes_on_loudly_from_random_init(tmp_path, caplog):
    """No internet here: torchvision's vit_b_16 URL fails, for real; the run is flagged."""
    status_path = tmp_path / "vit_b16_imagenet.json"
    status = fetch_imagenet_weights(tmp_path / "weights", status_path, False, model="vit_b16")
    assert status["available"] is False and status["model"] == "vit_b16"
    assert status["url"].endswith("/vit_b_16-c867db91.pth")
    experiment = ExperimentSettings.from_dict(base_config()["experiments"]["vit_b16_finetune"])
    model = build_model("vit_b16", {"output_softmax": False, "image_size": 32})
    source = initialise(model, experiment, str(status_path), strict=False)
    assert source == "random init (ImageNet weights unavailable)"
    assert "training vit_b16 from RANDOM INITIALISATION" in flat(caplog.text)


# ----------------------------------------------------------------------------- Google's ViT file


def write_safetensors(path, tensors: dict) -> None:
    """The safetensors layout, written here (the package is not a dependency): 8-byte header
    length, JSON header with dtype, shape and byte range of each tensor, then the bytes."""
    import json

    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, tensor in tensors.items():
        blob = tensor.contiguous().numpy().tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def google_layout(state: dict) -> dict:
    """torchvision's vit_b_16 tensors under the names of google/vit-base-patch16-224's
    model.safetensors (Hugging Face's ViTForImageClassification), query/key/value apart."""
    google = {
        "vit.embeddings.cls_token": state["class_token"],
        "vit.embeddings.position_embeddings": state["encoder.pos_embedding"],
        "vit.embeddings.patch_embeddings.projection.weight": state["conv_proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": state["conv_proj.bias"],
        "vit.layernorm.weight": state["encoder.ln.weight"],
        "vit.layernorm.bias": state["encoder.ln.bias"],
        "classifier.weight": torch.zeros(1000, 768),
        "classifier.bias": torch.zeros(1000),
    }
    for layer in range(12):
        ours, theirs = f"encoder.layers.encoder_layer_{layer}.", f"vit.encoder.layer.{layer}."
        for kind in ("weight", "bias"):
            query, key, value = state[f"{ours}self_attention.in_proj_{kind}"].chunk(3)
            google |= {
                f"{theirs}attention.attention.query.{kind}": query,
                f"{theirs}attention.attention.key.{kind}": key,
                f"{theirs}attention.attention.value.{kind}": value,
                f"{theirs}attention.output.dense.{kind}": state[
                    f"{ours}self_attention.out_proj.{kind}"
                ],
                f"{theirs}layernorm_before.{kind}": state[f"{ours}ln_1.{kind}"],
                f"{theirs}layernorm_after.{kind}": state[f"{ours}ln_2.{kind}"],
                f"{theirs}intermediate.dense.{kind}": state[f"{ours}mlp.0.{kind}"],
                f"{theirs}output.dense.{kind}": state[f"{ours}mlp.3.{kind}"],
            }
    return google


def test_googles_own_vit_checkpoint_loads_by_its_key_names(vit_b16_layout_file, tmp_path):
    """google/vit-base-patch16-224's model.safetensors, in layout (made here from torchvision's
    tensors): every encoder tensor lands where torchvision's own file puts it, and the model
    normalises its input as Google's ViT was trained ([-1, 1])."""
    from fashion_cnn.models.catalog import model_arguments

    _, state = vit_b16_layout_file
    path = tmp_path / "model.safetensors"
    write_safetensors(path, google_layout(state))
    experiment = ExperimentSettings.from_dict(
        dict(base_config()["experiments"]["vit_b16_finetune"], weights=str(path))
    )
    arguments = model_arguments(experiment.model)
    assert arguments["statistics"] == "google"
    model = build_model("vit_b16", arguments)
    source = initialise(model, experiment, None, strict=False)
    assert source == f"file {path}"
    own = model.state_dict()
    for key, tensor in state.items():
        if not key.startswith("heads."):
            assert torch.equal(own[f"vit.{key}"], tensor), key
    grey = torch.rand(2, 1, 224, 224)
    assert torch.allclose(model.stem(grey), (grey.expand(-1, 3, -1, -1) - 0.5) / 0.5)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda data: data[:5], "shorter than the header's length field"),
        (lambda data: (10**12).to_bytes(8, "little") + data[8:], "more than the file holds"),
        (lambda data: data[:-4], "lies outside the file"),
        (lambda data: data[:8] + b"[" + data[9:], "not JSON"),
    ],
    ids=["cut to 5 bytes", "huge header", "last tensor cut", "header not JSON"],
)
def test_a_damaged_safetensors_file_is_named(tmp_path, damage, expected):
    from fashion_cnn.models.safetensors import read_safetensors

    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"vit.embeddings.cls_token": torch.ones(1, 1, 8)})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=expected) as caught:
        read_safetensors(path)
    assert str(path) in str(caught.value)


def test_overlapping_or_misshapen_tensors_are_refused(tmp_path):
    import json

    from fashion_cnn.models.safetensors import read_safetensors

    for header, expected in (
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "overlap"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, "does not fit"),
        ({"a": {"dtype": "I8", "shape": [8], "data_offsets": [0, 8]}}, "no valid dtype"),
    ):  # fmt: skip
        text = json.dumps(header).encode()
        path = tmp_path / "bad.safetensors"
        path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(12))
        with pytest.raises(UserError, match=expected):
            read_safetensors(path)


def test_a_safetensors_file_that_is_not_googles_vit_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    write_safetensors(path, {"conv1.weight": torch.zeros(64, 3, 7, 7)})
    model = build_model("vit_b16", {"output_softmax": False, "image_size": 32})
    with pytest.raises(UserError, match="has no embeddings.cls_token"):
        apply_weights(model, "vit_b16", path, conv1_init="random")
