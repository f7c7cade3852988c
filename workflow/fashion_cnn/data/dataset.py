"""Fashion-MNIST: download from mirrors, verify, parse IDX, cache as one compact file.

The SHA-256 values are of the *decompressed* files: Debian's gzip bytes differ from upstream's,
the content does not. Every reader checks them, whatever put the file there: the download, a user
who copied the files in by hand, or a cache carried over from another machine. The cache holds
the same bytes as the IDX files (header aside), so its arrays are checked against the same values.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_cnn import NUM_CLASSES, TEST_IMAGES, TRAINING_IMAGES
from fashion_cnn.core.errors import UserError
from fashion_cnn.core.files import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdxFile:
    key: str
    filename: str
    sha256: str  # of the decompressed content
    count: int
    shape: tuple[int, ...]  # per-item shape: () for labels, (28, 28) for images


FILES = (
    IdxFile(
        "train_images",
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        TRAINING_IMAGES,
        (28, 28),
    ),
    IdxFile(
        "train_labels",
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        TRAINING_IMAGES,
        (),
    ),
    IdxFile(
        "test_images",
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        TEST_IMAGES,
        (28, 28),
    ),
    IdxFile(
        "test_labels",
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        TEST_IMAGES,
        (),
    ),
)
IDX_UBYTE = 0x08


# ----------------------------------------------------------------------------- download


def content_sha256(path: Path) -> str:
    """SHA-256 of a gzip file's decompressed content; raises ValueError if it is not valid gzip."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"not a valid gzip file ({error})") from error
    return digest.hexdigest()


def idx_sha256(array: np.ndarray) -> str:
    """SHA-256 of the IDX file that holds ``array`` (unsigned bytes): what FILES pins."""
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + b"".join(
        size.to_bytes(4, "big") for size in array.shape
    )
    digest = hashlib.sha256(header)
    digest.update(np.ascontiguousarray(array, dtype=np.uint8).data)
    return digest.hexdigest()


def _mismatch(actual: str, item: IdxFile) -> str:
    return (
        f"checksum mismatch: decompressed SHA-256 is {actual[:16]}…, expected {item.sha256[:16]}…"
    )


def verify(path: Path, item: IdxFile) -> str | None:
    """None when ``path`` holds the right content, else the reason it does not."""
    try:
        actual = content_sha256(path)
    except ValueError as error:
        return str(error)
    if actual != item.sha256:
        return _mismatch(actual, item)
    return None


def fetch(url: str, destination: Path, timeout_s: float) -> None:
    """Copy ``url`` (http, https or file) to ``destination``; raises OSError/URLError on failure."""
    if url.startswith("file://"):
        source = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        if not source.is_file():
            raise FileNotFoundError(f"no such file {source}")
        shutil.copyfile(source, destination)
        return
    request = urllib.request.Request(url, headers={"User-Agent": "fashion-cnn"})
    with (
        urllib.request.urlopen(request, timeout=timeout_s) as response,
        open(destination, "wb") as out,
    ):
        shutil.copyfileobj(response, out, 1 << 20)


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable ({error.reason})"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, FileNotFoundError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _is_unreachable(error: BaseException) -> bool:
    """No answer at all (DNS, refused, timeout), as opposed to an answer we did not like."""
    if isinstance(error, urllib.error.HTTPError):
        return False
    return isinstance(error, (urllib.error.URLError, TimeoutError, ConnectionError))


def download_file(
    item: IdxFile, mirrors: list[str], folder: Path, timeout_s: float, unreachable: set[str]
) -> Path:
    """Put a verified copy of ``item`` in ``folder``, trying ``mirrors`` in order.

    A mirror that could not be reached at all is added to ``unreachable`` and not tried again for
    the other files (an offline machine should not wait out every timeout four times).
    """
    target = folder / item.filename
    if target.is_file() and verify(target, item) is None:
        log.info("%s already present and verified", target)
        return target
    failures = []
    for mirror in mirrors:
        url = mirror + item.filename
        if mirror in unreachable:
            failures.append(f"{url} (skipped: unreachable for an earlier file)")
            continue
        try:
            with atomic_path(target) as temporary:
                fetch(url, temporary, timeout_s)
                problem = verify(temporary, item)
                if problem:
                    raise ValueError(problem)
        except (OSError, ValueError, urllib.error.URLError) as error:
            reason = str(error) if isinstance(error, ValueError) else _reason(error)
            if _is_unreachable(error):
                unreachable.add(mirror)
            log.warning("%s: %s", url, reason)
            failures.append(f"{url} ({reason})")
            continue
        log.info("%s verified from %s", item.filename, url)
        return target
    raise UserError(
        f"Could not get {item.filename} from any mirror. Tried: {'; '.join(failures)}. "
        f"To pre-stage the data, copy the four Fashion-MNIST .gz files "
        f"({', '.join(f.filename for f in FILES)}) into {folder.resolve()}/ "
        "(on Debian: apt-get install dataset-fashion-mnist puts them in "
        "/usr/share/datasets/fashion-mnist/), or add a mirror that has them to data.mirrors in "
        "config.yaml (a file:///path/ URL works for a local folder), then rerun."
    )


def download_dataset(mirrors: list[str], folder: Path, timeout_s: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    unreachable: set[str] = set()
    return [download_file(item, mirrors, folder, timeout_s, unreachable) for item in FILES]


# ----------------------------------------------------------------------------- IDX parsing


def parse_idx(data: bytes, name: str = "IDX data", dimensions: int | None = None) -> np.ndarray:
    """Parse IDX bytes (magic 0x00000800 + ndim, big-endian sizes, unsigned bytes);
    ``dimensions``: the number the file must have (1 for labels, 3 for images)."""
    fix = "Delete the file and rerun the download_data rule to fetch a fresh copy."
    if len(data) < 4:
        raise UserError(
            f"{name} is truncated: {len(data)} bytes, too short for an IDX header. {fix}"
        )
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != IDX_UBYTE or not 1 <= ndim <= 4:
        raise UserError(
            f"{name} has the wrong IDX magic number 0x{data[:4].hex()} (expected 0x0000080N: "
            f"unsigned bytes, N dimensions); it is not a Fashion-MNIST IDX file. {fix}"
        )
    if dimensions is not None and ndim != dimensions:
        kinds = {1: "a labels file", 3: "an images file"}
        raise UserError(
            f"{name} has the IDX magic number of {kinds.get(ndim, f'{ndim}-dimensional data')} "
            f"(0x{data[:4].hex()}) where {kinds.get(dimensions, 'another file')} belongs "
            f"(0x000008{dimensions:02x}): the images and labels files were swapped or renamed. "
            f"{fix}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{name} is truncated inside its IDX header. {fix}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) + header
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise UserError(
            f"{name} is {what}: its header announces {dims} = {expected} bytes, "
            f"but it holds {len(data)}. {fix}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_gz(path: Path, item: IdxFile) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as error:
        raise UserError(f"{path} is missing. Run the download_data rule first.") from error
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(
            f"{path} is not a valid gzip file ({error}). Delete it and rerun download_data."
        ) from error
    array = parse_idx(data, str(path), dimensions=1 + len(item.shape))
    expected = (item.count, *item.shape)
    if array.shape != expected:
        raise UserError(
            f"{path} holds an array of shape {array.shape}, expected {expected} for "
            f"{item.key}. Delete it and rerun download_data."
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != item.sha256:
        raise UserError(
            f"{path} is not the published Fashion-MNIST file ({_mismatch(actual, item)}): a copy "
            "placed by hand was changed, damaged or half-copied, or comes from another data set. "
            "Delete it and rerun download_data (or copy the file again from a trusted source)."
        )
    return array


def prepare_dataset(raw_folder: Path, output: Path) -> dict[str, np.ndarray]:
    """Parse the four IDX files into one uncompressed .npz of uint8 images and labels."""
    arrays = {item.key: read_idx_gz(raw_folder / item.filename, item) for item in FILES}
    for split in ("train", "test"):
        labels = arrays[f"{split}_labels"]
        if labels.max() >= NUM_CLASSES:
            raise UserError(
                f"The {split} labels hold the value {labels.max()}, outside 0..9. "
                "Delete the label file and rerun download_data."
            )
    with atomic_path(output) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stub: ** as allow_pickle
    log.info(
        "prepared %s: %d train / %d test images",
        output,
        len(arrays["train_images"]),
        len(arrays["test_images"]),
    )
    return arrays


def load_prepared(path: str | Path) -> dict[str, np.ndarray]:
    """Load the cached dataset written by ``prepare_dataset`` (no pickles allowed)."""
    path = Path(path)
    fix = "Delete it and rerun the prepare_data rule."
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError as error:
        raise UserError(f"{path} is missing. Run the prepare_data rule first.") from error
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path} is not a readable dataset cache ({error}). {fix}") from error
    for item in FILES:
        array = arrays.get(item.key)
        expected = (item.count, *item.shape)
        if array is None or array.shape != expected or array.dtype != np.uint8:
            found = "missing" if array is None else f"{array.dtype} {array.shape}"
            raise UserError(f"{path}: {item.key} is {found}, expected uint8 {expected}. {fix}")
        actual = idx_sha256(array)
        if actual != item.sha256:
            raise UserError(
                f"{path}: {item.key} is not Fashion-MNIST's ({_mismatch(actual, item)}); the "
                f"cache was edited or made from other files. {fix}"
            )
    return arrays
