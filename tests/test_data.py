"""Download, verification and IDX parsing, on the real Fashion-MNIST files."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import threading

import numpy as np
import pytest
from conftest import assert_no_traceback, cli, flat, link_raw_data, snakemake, write_config
from fashion_cnn import CLASS_NAMES
from fashion_cnn.core.errors import UserError
from fashion_cnn.data.dataset import (
    FILES,
    download_dataset,
    load_prepared,
    parse_idx,
    prepare_dataset,
)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def http_mirror(debian_mirror):
    """A real HTTP server on loopback serving the Debian files (and 404 for anything else)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(debian_mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


# ----------------------------------------------------------------------------- IDX


def test_parse_idx_round_trip():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(parse_idx(idx_bytes(array)), array)


def test_parse_idx_refuses_wrong_magic():
    data = bytearray(idx_bytes(np.zeros((2, 2), dtype=np.uint8)))
    data[2] = 0x0D  # float32 type code
    with pytest.raises(UserError, match="wrong IDX magic number 0x00000d02"):
        parse_idx(bytes(data), "x.idx")


def test_an_images_file_with_a_labels_files_magic_is_named_as_such():
    """The right reason: the file's header says labels (one dimension) where images belong,
    so the files were swapped or renamed; not "longer than its header says"."""
    labels_header = bytearray(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(
        UserError, match="magic number of a labels file .* where an images file belongs"
    ):
        parse_idx(
            bytes(labels_header) + bytes(28 * 28 * 5), "train-images-idx3-ubyte", dimensions=3
        )
    images = idx_bytes(np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(
        UserError, match="magic number of an images file .* where a labels file belongs"
    ):
        parse_idx(images, "train-labels-idx1-ubyte", dimensions=1)
    assert parse_idx(images, "x", dimensions=3).shape == (2, 28, 28)


@pytest.mark.parametrize("keep", [2, 6, -20], ids=["no header", "half a header", "short payload"])
def test_parse_idx_refuses_truncated_data(keep):
    data = idx_bytes(np.ones((2, 3, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="truncated"):
        parse_idx(data[:keep], "x.idx")


def test_prepare_refuses_wrong_count_and_corrupt_gzip(tmp_path, debian_mirror):
    for item in FILES:
        shutil.copyfile(debian_mirror / item.filename, tmp_path / item.filename)
    # a valid IDX file with 5 labels where 60,000 belong
    with gzip.open(tmp_path / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(UserError, match=r"shape \(5,\), expected \(60000,\)"):
        prepare_dataset(tmp_path, tmp_path / "out.npz")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="not a valid gzip file"):
        prepare_dataset(tmp_path, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
    assert leftovers(tmp_path) == []


def test_prepared_dataset_is_the_real_fashion_mnist(arrays):
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert arrays["test_images"].shape == (10000, 28, 28)
    assert arrays["train_images"].dtype == np.uint8
    # every class equally represented, as published: 6,000 train and 1,000 test images each
    assert np.bincount(arrays["train_labels"]).tolist() == [6000] * 10
    assert np.bincount(arrays["test_labels"]).tolist() == [1000] * 10
    assert CLASS_NAMES[arrays["train_labels"][0]] == "Ankle boot"


def test_load_prepared_names_a_corrupt_cache(tmp_path):
    path = tmp_path / "fashion_mnist.npz"
    path.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UserError, match="rerun the prepare_data rule"):
        load_prepared(path)


# ----------------------------------------------------------------------------- download


def test_download_from_file_mirror_verifies_and_is_idempotent(tmp_path, debian_mirror):
    folder = tmp_path / "raw"
    paths = download_dataset([f"file://{debian_mirror}/"], folder, timeout_s=5)
    assert [p.name for p in paths] == [item.filename for item in FILES]
    before = [p.stat().st_mtime_ns for p in paths]
    download_dataset(["file:///nowhere/"], folder, timeout_s=5)  # present and verified: no fetch
    assert [p.stat().st_mtime_ns for p in paths] == before


def test_download_over_http_falls_through_a_404_mirror(tmp_path, http_mirror):
    folder = tmp_path / "raw"
    download_dataset([http_mirror + "missing/", http_mirror], folder, timeout_s=5)
    assert sorted(p.name for p in folder.iterdir()) == sorted(item.filename for item in FILES)


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, debian_mirror):
    evil = tmp_path / "evil"
    evil.mkdir()
    for item in FILES:
        shutil.copyfile(debian_mirror / item.filename, evil / item.filename)
    # same size, different content: a valid gzip of a tampered file
    with gzip.open(evil / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(idx_bytes(np.zeros(10000, dtype=np.uint8)))
    folder = tmp_path / "raw"
    with pytest.raises(UserError) as caught:
        download_dataset([f"file://{evil}/"], folder, timeout_s=5)
    assert "checksum mismatch" in str(caught.value)
    assert not (folder / "t10k-labels-idx1-ubyte.gz").exists()
    assert leftovers(folder) == []


def test_all_mirrors_failing_names_each_and_how_to_prestage(tmp_path, http_mirror):
    dead = closed_port_url()
    mirrors = [dead, http_mirror + "missing/", "file:///no/such/folder/"]
    folder = tmp_path / "raw"
    with pytest.raises(UserError) as caught:
        download_dataset(mirrors, folder, timeout_s=5)
    message = " ".join(caught.value.paragraph().split())
    assert "unreachable" in message and "HTTP 404" in message and "no such file" in message
    for mirror in mirrors:
        assert mirror in message
    assert "pre-stage" in message and "dataset-fashion-mnist" in message
    assert leftovers(folder) == []


def test_an_unreachable_mirror_is_tried_once(tmp_path, debian_mirror, caplog):
    dead = closed_port_url()
    download_dataset([dead, f"file://{debian_mirror}/"], tmp_path, timeout_s=5)
    attempts = [r for r in caplog.records if r.getMessage().startswith(dead)]
    assert len(attempts) == 1


@pytest.mark.slow
def test_download_command_fails_cleanly(tmp_path):
    result = cli("download-data", "--folder", tmp_path, "--mirror", "file:///no/such/folder/")
    assert result.returncode == 2
    assert "Could not get train-images-idx3-ubyte.gz from any mirror" in flat(result.stderr)
    assert_no_traceback(result.stderr)


def _change_one_label(path):
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[8] = (data[8] + 1) % 10  # the first label, after the 8-byte IDX header
    path.write_bytes(gzip.compress(bytes(data)))


@pytest.mark.slow
def test_a_prestaged_file_with_one_changed_label_is_refused(tmp_path, debian_mirror):
    """The README's offline route: the four files copied into resources/fashion-mnist/ by hand.
    Snakemake does not run download_data for files that exist, so the files prepare_data would
    read are checked before any job starts, as prepare_data checks them: one changed label (a
    valid gzip of a valid IDX file) stops Snakemake there."""
    link_raw_data(tmp_path, debian_mirror)
    _change_one_label(tmp_path / "resources" / "fashion-mnist" / "train-labels-idx1-ubyte.gz")
    extra = write_config(tmp_path / "extra.yaml", "run_experiments: [cnn_small_plain]\n")
    result = snakemake(
        tmp_path, "--cores", "1", "results/data/fashion_mnist.npz", configfiles=[extra], timeout=300
    )
    assert result.returncode != 0
    output = flat(result.stdout + result.stderr)
    assert (
        "train-labels-idx1-ubyte.gz is not the published Fashion-MNIST file (checksum mismatch"
        in output
    )
    assert "Delete it and rerun download_data" in output
    assert "Snakemake stopped before any job" in output
    assert_no_traceback(output)
    assert not (tmp_path / "results" / "data" / "fashion_mnist.npz").exists()
    assert "rule " not in output  # no job ran: neither download_data nor prepare_data


@pytest.mark.slow
def test_a_half_copied_file_is_refused(tmp_path, debian_mirror):
    """A copy cut short (quota reached, a killed rsync) is not valid gzip: named, nothing written."""
    for item in FILES:
        shutil.copyfile(debian_mirror / item.filename, tmp_path / item.filename)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = cli("prepare-data", "--raw-folder", tmp_path, "--output", tmp_path / "out.npz")
    assert result.returncode == 2
    assert "train-images-idx3-ubyte.gz is not a valid gzip file" in flat(result.stderr)
    assert not (tmp_path / "out.npz").exists()
