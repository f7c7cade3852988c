"""Self-training (Noisy Student): a teacher's softmax on the unlabelled images is their soft
target; the student trains on the labelled images and those together. The promise is FixMatch's:
the unlabelled images' labels never reach training, and a teacher never knows more labels than
its student may."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import base_config, tiny_training_job, weights_with_the_unlabelled_labels_changed
from fashion_cnn.config.validation import experiment_settings, validate_config
from fashion_cnn.core.errors import UserError
from fashion_cnn.models.checkpoint import load_checkpoint, model_from_checkpoint
from fashion_cnn.models.inference import predict
from fashion_cnn.training.engine import train_model
from fashion_cnn.training.methods import SelfTraining, most_confident_per_class, training_method
from fashion_cnn.training.run import start_run
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays as numpy_arrays

LABELLED = 64
TEACHER = {
    "model": "cnn_bn",
    "width": 8,
    "train_subset": LABELLED,
    "augmentation": "flip",
    "epochs": 2,
    "batch_size": 32,
    "test_time_flip": True,
}
STUDENT = dict(TEACHER, unlabelled_images=448, teacher="cnn_teacher", epochs=1)


@pytest.fixture(scope="module")
def teacher_model(tmp_path_factory, prepared_data):
    """A teacher trained on the first 64 real images (its labels the only ones it read)."""
    folder = tmp_path_factory.mktemp("teacher")
    job = tiny_training_job(folder, prepared_data, **TEACHER)
    train_model(job)
    return job.model_path


def student_job(folder, prepared_data, teacher_model, **changes):
    job = tiny_training_job(folder, prepared_data, **dict(STUDENT, **changes))
    job.teacher_path = teacher_model
    return job


def test_the_students_targets_are_the_labels_then_the_teachers_softmax(
    tmp_path, prepared_data, arrays, teacher_model
):
    """The labelled images carry their labels (one-hot); each unlabelled image the mean softmax of
    the teacher over its own test-time views (the image and its mirror), computed here apart."""
    run = start_run(student_job(tmp_path, prepared_data, teacher_model))
    assert isinstance(run.method, SelfTraining)
    assert run.source.count == LABELLED + 448
    targets = run.source.labels.numpy()
    assert np.array_equal(targets[:LABELLED].argmax(1), arrays["train_labels"][:LABELLED])
    assert np.array_equal(targets[:LABELLED].max(1), np.ones(LABELLED, dtype=np.float32))
    model = model_from_checkpoint(load_checkpoint(teacher_model)).eval()
    unlabelled = torch.from_numpy(arrays["train_images"][LABELLED : LABELLED + 448]).float()
    unlabelled = unlabelled.div(255).unsqueeze(1)
    with torch.no_grad():
        expected = (model(unlabelled).softmax(1) + model(unlabelled.flip(3)).softmax(1)) / 2
    np.testing.assert_allclose(targets[LABELLED:], expected.numpy(), atol=1e-5)
    images = run.source.images.squeeze(1).numpy()
    assert np.array_equal(images, arrays["train_images"][: LABELLED + 448])


def test_the_surest_share_of_each_class_is_kept_with_hard_targets_and_the_labels_repeated(
    tmp_path, prepared_data, arrays, teacher_model
):
    """teacher_keep 0.5, teacher_hard and labelled_repeat 3: the labelled images three times with
    their labels, then the unlabelled images the teacher is surest of, half of each class (by
    its top class, its confidence computed here apart), each with its top class one-hot."""
    job = student_job(
        tmp_path,
        prepared_data,
        teacher_model,
        teacher_keep=0.5,
        teacher_hard=True,
        labelled_repeat=3,
    )
    run = start_run(job)
    images, targets = run.source.images.squeeze(1).numpy(), run.source.labels.numpy()
    labelled = arrays["train_images"][:LABELLED]
    assert np.array_equal(images[: 3 * LABELLED], np.concatenate([labelled] * 3))
    assert np.array_equal(
        targets[: 3 * LABELLED].argmax(1), np.tile(arrays["train_labels"][:LABELLED], 3)
    )
    model = model_from_checkpoint(load_checkpoint(teacher_model)).eval()
    pool = arrays["train_images"][LABELLED : LABELLED + 448]
    unlabelled = torch.from_numpy(pool).float().div(255).unsqueeze(1)
    with torch.no_grad():
        softmax = (model(unlabelled).softmax(1) + model(unlabelled.flip(3)).softmax(1)) / 2
    top, confidence = softmax.argmax(1).numpy(), softmax.max(1).values.numpy()
    expected = []
    for label in range(10):
        members = np.flatnonzero(top == label)
        expected += list(members[np.argsort(-confidence[members])][: math.ceil(len(members) / 2)])
    kept = sorted(expected)
    assert np.array_equal(images[3 * LABELLED :], pool[kept])
    assert set(np.unique(targets[3 * LABELLED :])) == {0.0, 1.0}
    assert np.array_equal(targets[3 * LABELLED :].argmax(1), top[kept])


@given(
    numpy_arrays(np.float32, (60, 4), elements=st.floats(0.25, 1, width=32)),
    st.floats(0.05, 1.0),
)
def test_each_class_keeps_its_surest_share(scores, share):
    """Of each class (its top class), ceil(share x its count) images, none less sure than one
    left out of the same class: a confidence threshold of each class's own."""
    probabilities = scores / scores.sum(1, keepdims=True)
    kept = most_confident_per_class(probabilities, share)
    assert np.array_equal(kept, np.unique(kept))
    top, confidence = probabilities.argmax(1), probabilities.max(1)
    chosen = np.zeros(len(top), bool)
    chosen[kept] = True
    for label in range(4):
        members = top == label
        assert chosen[members].sum() == math.ceil(round(share * members.sum(), 9))
        if (members & ~chosen).any():
            assert confidence[members & chosen].min() >= confidence[members & ~chosen].max()


def test_the_student_trains_and_counts_its_agreement_with_the_targets(
    tmp_path, prepared_data, teacher_model
):
    job = student_job(tmp_path, prepared_data, teacher_model, epochs=2)
    state = train_model(job)
    history = state["progress"]["history"]
    assert len(history) == 2 and all(np.isfinite(row["train_loss"]) for row in history)
    assert all(0.0 <= row["train_accuracy"] <= 1.0 for row in history)
    assert state["config"]["teacher"] == "cnn_teacher"
    predicted = predict(model_from_checkpoint(state), np.zeros((2, 28, 28), np.uint8), "cpu", 2)
    assert predicted.shape == (2, 10)


def test_the_unlabelled_images_labels_never_reach_the_student(
    tmp_path, prepared_data, teacher_model, monkeypatch
):
    """Train the student twice: once on the real dataset, once with every label after the
    labelled ones changed. The weights are bit-identical: those labels never reached training."""
    weights = weights_with_the_unlabelled_labels_changed(
        tmp_path,
        monkeypatch,
        lambda folder: student_job(folder, prepared_data, teacher_model),
        LABELLED,
    )
    for key, tensor in weights[0].items():
        assert torch.equal(weights[1][key], tensor), key


def test_the_unlabelled_images_labels_never_reach_a_student_that_keeps_the_surest(
    tmp_path, prepared_data, teacher_model, monkeypatch
):
    """The same with the teacher's surest half of each class as hard targets and the labels
    repeated: the choice of images is the teacher's, never their labels'."""
    weights = weights_with_the_unlabelled_labels_changed(
        tmp_path,
        monkeypatch,
        lambda folder: student_job(
            folder,
            prepared_data,
            teacher_model,
            teacher_keep=0.5,
            teacher_hard=True,
            labelled_repeat=2,
        ),
        LABELLED,
    )
    for key, tensor in weights[0].items():
        assert torch.equal(weights[1][key], tensor), key


def test_a_teacher_trained_on_other_labels_is_refused(tmp_path, prepared_data, teacher_model):
    """A teacher's model from another train_subset (it would pass the labels it read on to the
    student) is a one-paragraph error before any training."""
    job = student_job(tmp_path, prepared_data, teacher_model, train_subset=128)
    with pytest.raises(UserError, match="same labelled images"):
        start_run(job)
    assert not job.model_path.exists()


def test_a_student_without_its_teachers_model_is_a_clear_error(tmp_path, prepared_data):
    job = tiny_training_job(tmp_path, prepared_data, **STUDENT)
    with pytest.raises(UserError, match="--teacher"):
        start_run(job)
    job.teacher_path = tmp_path / "missing" / "model.pt"
    with pytest.raises(UserError, match="does not exist"):
        start_run(job)


def test_the_method_is_the_first_that_applies(tmp_path, teacher_model):
    """config.yaml's recipes: the chapter's, FixMatch's and self-training's, one method each."""
    from fashion_cnn.config.settings import ExperimentSettings

    experiments = base_config()["experiments"]

    def method(name: str, teacher=None) -> str:
        settings = ExperimentSettings.from_dict(experiments[name])
        return type(training_method(settings, name, teacher)).__name__

    assert method("cnn_baseline") == "Supervised"
    assert method("cnn_500_fixmatch") == "SemiSupervised"
    assert method("cnn_500_student", teacher_model) == "SelfTraining"


def _config_with(**student):
    config = base_config()
    config["experiments"]["cnn_teacher"] = dict(config["experiments"]["cnn_500_supervised"])
    config["experiments"]["cnn_student"] = dict(
        config["experiments"]["cnn_500_student"], **{"teacher": "cnn_teacher", **student}
    )
    return config


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"teacher": "cnn_teachr"}, "Did you mean 'cnn_teacher'"),
        ({"train_subset": 1000}, "same labelled images"),
        ({"validation_images": 5000}, "same labelled images"),
        ({"seeds": [42, 45]}, "no seed 45"),
        ({"unlabelled_images": 0}, "remove teacher"),
        ({"teacher": "cnn_student"}, "come back round"),
        ({"teacher": "", "teacher_keep": 0.5}, "teacher_keep = 0.5 .* no teacher"),
        ({"teacher": "", "labelled_repeat": 10}, "labelled_repeat = 10 .* no teacher"),
        ({"teacher": "", "teacher_hard": True}, "teacher_hard = True .* no teacher"),
        ({"teacher_keep": 0}, "teacher_keep"),
        ({"labelled_repeat": 0}, "labelled_repeat"),
    ],
)
def test_a_teacher_that_cannot_teach_is_a_config_error(changes, expected):
    config = _config_with(**changes)
    with pytest.raises(UserError, match=expected) as error:
        validate_config(config)
    assert "\n" not in str(error.value)


def test_a_chain_of_teachers_that_comes_back_round_is_refused():
    config = _config_with()
    config["experiments"]["cnn_teacher"].update(
        teacher="cnn_student", unlabelled_images="all", seeds=[42, 43, 44]
    )
    with pytest.raises(UserError, match="cnn_teacher -> cnn_student -> cnn_teacher"):
        validate_config(config)


def test_a_students_job_config_carries_its_teachers_as_that_seeds_models():
    """The job's own config holds the chain of teachers (so the job checks them too), each as its
    model of the job's seed: a seed added to a teacher changes no student's job."""
    config = validate_config(_config_with())
    import json

    written = experiment_settings(config, "cnn_student", 43)
    settings = json.loads(written)
    assert set(settings["experiments"]) == {"cnn_student", "cnn_teacher"}
    assert settings["experiments"]["cnn_teacher"]["seed"] == 43
    assert "seeds" not in settings["experiments"]["cnn_teacher"]
    validate_config(settings)  # the job's config passes its own checks
    config["experiments"]["cnn_teacher"]["seeds"] = [42, 43, 44, 45]
    assert experiment_settings(config, "cnn_student", 43) == written


@pytest.mark.slow
def test_each_round_trains_after_its_teacher_of_the_same_seed(tmp_path):
    """A dry run of round 2 alone, for seed 43: the workflow trains the supervised teacher, round
    1 and round 2 of that seed, each job given its teacher's model of seed 43."""
    import re

    from conftest import snakemake, write_config

    extra = write_config(
        tmp_path / "extra.yaml",
        "run_experiments: [cnn_500_student2]\nexperiments:\n  cnn_500_student2: {seeds: [43]}\n",
    )
    result = snakemake(tmp_path, "-n", "-p", configfiles=[extra], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    trained = re.findall(r"--experiment (\S+) --name \S+ .*?--model (\S+)", output)
    assert sorted(trained) == [
        ("cnn_500_student", "results/cnn_500_student/seed-43/model.pt"),
        ("cnn_500_student2", "results/cnn_500_student2/seed-43/model.pt"),
        ("cnn_500_supervised", "results/cnn_500_supervised/seed-43/model.pt"),
    ]
    assert "--teacher results/cnn_500_supervised/seed-43/model.pt" in output
    assert "--teacher results/cnn_500_student/seed-43/model.pt" in output
    assert len(re.findall(r"--teacher ", output)) == 2
