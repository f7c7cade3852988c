"""Packaging: the pins of pyproject.toml and of the CUDA image agree; the image definitions use them."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([\w.]+)", line).groups()
            pins[name.lower()] = version
    return pins


def test_image_requirements_match_the_package_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    package = _pins(project["dependencies"])
    image = _pins((REPO / "containers" / "requirements.txt").read_text().splitlines())
    gpu_runtime = _pins(project["optional-dependencies"]["gpu"])
    assert image == {**package, **gpu_runtime}
    assert package["torch"] == "2.14.1" and package["torchvision"] == "0.29.1"


def test_image_definitions_install_the_requirements_on_the_pinned_base():
    definition = (REPO / "containers" / "fashion-cnn.def").read_text()
    dockerfile = (REPO / "containers" / "Dockerfile").read_text()
    # the CUDA of the base is a build argument (13.0 by default; 12.8 for older drivers)
    assert "From: pytorch/pytorch:2.14.1-cuda{{ CUDA }}-cudnn9-runtime" in definition
    assert re.search(r"^%arguments\n\s+CUDA=13\.0$", definition, re.MULTILINE)
    assert "FROM pytorch/pytorch:2.14.1-cuda${CUDA}-cudnn9-runtime" in dockerfile
    assert "ARG CUDA=13.0" in dockerfile
    for text in (definition, dockerfile):
        assert "containers/requirements.txt" in text
        assert "pip install --no-cache-dir -r /opt/fashion-cnn/requirements.txt" in text
