"""Tests of rtlib.data: fetching and verifying the files, and the loaders' exact numbers."""
from __future__ import annotations

import gzip
import hashlib
import importlib
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from rtlib.data import (
    MNIST_MEAN,
    MNIST_STD,
    MUSIC_DATASETS,
    SOURCES,
    ChecksumError,
    DataNotFoundError,
    batchify,
    default_data_dir,
    fetch,
    load_mnist,
    load_music,
    load_ptb,
    pixel_sequences,
    pmnist_permutation,
    verify_all,
)
from rtlib.configs import TASKS
from rtlib.data.fetch import DATA_DIR_ENV, MIRROR_ENV, TASK_DATA, fetch_tasks, read_checksums, sha256_of, task_files
from rtlib.paths import DATA_DIR

# the module, which `import rtlib.data.fetch as ...` would not give: the package's `fetch`
# attribute is the function it re-exports
fetch_module = importlib.import_module("rtlib.data.fetch")
PTB_VALID = "ptb/ptb.valid.txt"
MNIST_TEST_LABELS = "mnist/t10k-labels-idx1-ubyte"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that would reach for the network."""

    def refuse(url: str, timeout_s: float = 0.0) -> bytes:
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(fetch_module, "download", refuse)


def offline_download(url: str, timeout_s: float = 0.0) -> bytes:
    raise urllib.error.URLError("offline")


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def flip_byte(content: bytes) -> bytes:
    return content[:100] + bytes([content[100] ^ 0xFF]) + content[101:]


def truncate(content: bytes) -> bytes:
    return content[: len(content) // 2]


def gzip_of_flipped_byte(compressed: bytes) -> bytes:
    """A valid gzip stream of the wrong content."""
    return gzip.compress(flip_byte(gzip.decompress(compressed)))


def mirror_with(folder: Path, served_name: str, content: bytes) -> Path:
    """A mirror folder that holds one file, `served_name`, with `content`."""
    path = folder / served_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return folder


# --- fetch -------------------------------------------------------------------------------


def test_sources_name_every_checksummed_file():
    assert set(SOURCES) == set(read_checksums())


def test_default_data_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv(DATA_DIR_ENV)
    assert default_data_dir() == DATA_DIR == Path(__file__).resolve().parents[1] / "data"


def test_fetch_from_mirror_verifies_then_uses_cache(
    data_mirror: Path, tmp_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    path = fetch(PTB_VALID, tmp_data_dir)
    assert path == tmp_data_dir / PTB_VALID
    assert sha256_of(path) == read_checksums()[PTB_VALID]
    assert files_under(tmp_data_dir) == [path]  # no temp file left beside it

    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "empty_mirror"))
    assert fetch(PTB_VALID, tmp_data_dir) == path  # network is off: only the cache can serve it


def test_fetch_gunzips_a_compressed_mirror_copy(data_mirror: Path, tmp_data_dir: Path):
    path = fetch(MNIST_TEST_LABELS, tmp_data_dir)
    compressed = (data_mirror / f"{MNIST_TEST_LABELS}.gz").read_bytes()
    assert path.read_bytes() == gzip.decompress(compressed)
    assert path.read_bytes()[:4] == b"\x00\x00\x08\x01"  # IDX magic: unsigned bytes, 1 dimension


@pytest.mark.parametrize("corrupt", [flip_byte, truncate])
def test_corrupt_cached_file_raises_checksum_error(data_mirror: Path, tmp_data_dir: Path, corrupt):
    path = fetch(PTB_VALID, tmp_data_dir)
    bad_content = corrupt(path.read_bytes())
    path.write_bytes(bad_content)

    with pytest.raises(ChecksumError) as raised:
        fetch(PTB_VALID, tmp_data_dir)
    message = str(raised.value)
    assert str(path) in message
    assert read_checksums()[PTB_VALID] in message
    assert hashlib.sha256(bad_content).hexdigest() in message
    assert f"delete {path} and run again" in message and MIRROR_ENV in message
    assert path.read_bytes() == bad_content  # left for the user to inspect, not silently replaced

    path.unlink()  # the fix the message suggests
    assert sha256_of(fetch(PTB_VALID, tmp_data_dir)) == read_checksums()[PTB_VALID]


@pytest.mark.parametrize(
    "served_name, corrupt",
    [
        (PTB_VALID, flip_byte),
        (f"{MNIST_TEST_LABELS}.gz", gzip_of_flipped_byte),
        (f"{MNIST_TEST_LABELS}.gz", truncate),  # not even a whole gzip stream
    ],
)
def test_corrupt_mirror_file_raises_and_caches_nothing(
    data_mirror: Path,
    tmp_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    served_name: str,
    corrupt,
):
    bad_content = corrupt((data_mirror / served_name).read_bytes())
    bad_mirror = mirror_with(tmp_path / "bad_mirror", served_name, bad_content)
    monkeypatch.setenv(MIRROR_ENV, str(bad_mirror))
    name = served_name.removesuffix(".gz")

    with pytest.raises(ChecksumError) as raised:  # not a silent fall-through to the network
        fetch(name, tmp_data_dir)
    message = str(raised.value)
    assert str(bad_mirror / served_name) in message
    assert read_checksums()[name] in message
    assert files_under(tmp_data_dir) == []


def test_downloaded_file_is_verified(
    data_mirror: Path, tmp_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "empty_mirror"))
    served = {SOURCES[MNIST_TEST_LABELS]: (data_mirror / f"{MNIST_TEST_LABELS}.gz").read_bytes()}
    monkeypatch.setattr(fetch_module, "download", lambda url: served[url])
    path = fetch(MNIST_TEST_LABELS, tmp_data_dir)
    assert sha256_of(path) == read_checksums()[MNIST_TEST_LABELS]

    served[SOURCES[PTB_VALID]] = b"not the penn treebank\n"
    with pytest.raises(ChecksumError, match=SOURCES[PTB_VALID]):
        fetch(PTB_VALID, tmp_data_dir)
    assert files_under(tmp_data_dir) == [path]


@pytest.mark.parametrize("mirror_set", [True, False], ids=["empty-mirror", "no-mirror"])
def test_no_source_raises_data_not_found(
    tmp_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror_set: bool
):
    if mirror_set:
        monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "empty_mirror"))
    else:
        monkeypatch.delenv(MIRROR_ENV, raising=False)
    requested_urls = []

    def unreachable(url: str) -> bytes:
        requested_urls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(fetch_module, "download", unreachable)
    with pytest.raises(DataNotFoundError) as raised:
        fetch(PTB_VALID, tmp_data_dir)
    message = str(raised.value)
    assert PTB_VALID in message and str(tmp_data_dir / PTB_VALID) in message
    assert MIRROR_ENV in message and SOURCES[PTB_VALID] in message
    if mirror_set:
        assert str(tmp_path / "empty_mirror" / PTB_VALID) in message
    assert requested_urls == [SOURCES[PTB_VALID]]
    assert files_under(tmp_data_dir) == []


def test_a_stored_file_follows_the_umask_and_a_killed_stores_part_file_goes(tmp_data_dir: Path, data_mirror: Path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    orphan = tmp_data_dir / "ptb" / f".ptb.valid.txt.{gone.stdout.strip()}.part"  # its writer was killed
    orphan.parent.mkdir(parents=True)
    orphan.write_text("half a file")
    path = fetch(PTB_VALID, tmp_data_dir)
    assert not orphan.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not 0600: a shared cache stays readable


def test_unknown_name_raises_value_error(tmp_data_dir: Path):
    with pytest.raises(ValueError, match="ptb/ptb.train.txt"):
        fetch("ptb/ptb.train", tmp_data_dir)


def test_every_file_verifies_from_the_mirror(real_data: Path):
    paths = verify_all(real_data)
    checksums = read_checksums()
    assert set(paths) == set(checksums)
    for name, path in paths.items():
        assert path == real_data / name
        assert sha256_of(path) == checksums[name]
    assert files_under(real_data) == sorted(paths.values())


def test_write_mirror_from_downloads_serves_every_file(
    data_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Without $RTLIB_DATA_MIRROR the tests build their mirror from the canonical hosts' files."""
    served_name = {url: name + ".gz" if url.endswith(".gz") else name for name, url in SOURCES.items()}
    monkeypatch.setattr(fetch_module, "download", lambda url: (data_mirror / served_name[url]).read_bytes())
    monkeypatch.delenv(MIRROR_ENV)
    mirror = fetch_module.write_mirror(tmp_path / "mirror", tmp_path / "downloaded")
    assert sorted(path.relative_to(mirror).as_posix() for path in files_under(mirror)) == sorted(served_name.values())

    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    monkeypatch.setattr(fetch_module, "download", lambda url: pytest.fail(f"downloaded {url}"))
    assert set(verify_all(tmp_path / "from_mirror")) == set(SOURCES)


def test_data_command_without_data_says_where_to_get_it_in_one_line(
    tmp_data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setattr(fetch_module, "download", offline_download)
    assert fetch_module.main(["--data-dir", str(tmp_data_dir)]) == 1
    out, err = capsys.readouterr()
    first_url = SOURCES[next(iter(read_checksums()))]
    assert out == "" and err.count("\n") == 1 and err.startswith("rtlib data: error:")
    assert MIRROR_ENV in err and first_url in err


def test_data_command_verifies_every_file_with_the_standard_library_only(real_data: Path):
    """`make book` runs `python -m rtlib data` before it installs anything."""
    blocked = "import sys; sys.modules.update(dict.fromkeys(['torch', 'numpy', 'scipy', 'pandas']))"
    run = subprocess.run([sys.executable, "-c", f"{blocked}; from rtlib.__main__ import main; "
                          f"sys.exit(main(['data', '--data-dir', {str(real_data)!r}]))"],
                         capture_output=True, text=True, cwd=DATA_DIR.parent)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"rtlib data: all {len(SOURCES)} files present and verified in {real_data}\n"


def test_every_task_names_its_data_files_and_every_file_belongs_to_a_task():
    assert set(TASK_DATA) == set(TASKS)
    assert task_files("ptb-word") == task_files("ptb-char") == sorted(name for name in SOURCES if name.startswith("ptb/"))
    assert task_files("nottingham") == ["music/Nottingham.mat"] and len(task_files("mnist")) == 4
    assert {name for task in TASKS for name in task_files(task)} == set(SOURCES)
    with pytest.raises(ValueError, match="unknown task 'ptb'.*ptb-char"):
        task_files("ptb")


def test_data_for_some_tasks_is_fetched_alone_and_a_missing_set_fails_in_one_line(
    data_mirror: Path, tmp_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
):
    """Batch h carried no PTB data: the GPU machine's preflight checks only the tasks it runs."""
    partial = mirror_with(tmp_path / "partial", "music/Nottingham.mat", (data_mirror / "music/Nottingham.mat").read_bytes())
    monkeypatch.setenv(MIRROR_ENV, str(partial))
    assert set(fetch_tasks(["nottingham"], tmp_data_dir)) == {"music/Nottingham.mat"}
    assert fetch_module.main(["--data-dir", str(tmp_data_dir), "--tasks", "nottingham"]) == 0
    assert capsys.readouterr().out == f"rtlib data: the 1 files of nottingham present and verified in {tmp_data_dir}\n"
    monkeypatch.setattr(fetch_module, "download", offline_download)
    assert fetch_module.main(["--data-dir", str(tmp_data_dir), "--tasks", "nottingham", "ptb-word"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "ptb/ptb.test.txt" in err and "offline" in err
    assert files_under(tmp_data_dir) == [tmp_data_dir / "music/Nottingham.mat"]


# --- MNIST -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split, first_labels, class_counts, first_image_sum",
    [
        ("train", [5, 0, 4], [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], 27525),
        ("test", [7, 2, 1], [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], 18454),
    ],
)
def test_load_mnist(real_data: Path, split, first_labels, class_counts, first_image_sum):
    num_images = sum(class_counts)  # 60,000 and 10,000
    images, labels = load_mnist(split, real_data)
    assert images.shape == (num_images, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (num_images,) and labels.dtype == torch.int64
    assert labels[:3].tolist() == first_labels
    assert torch.bincount(labels, minlength=10).tolist() == class_counts  # all labels in 0..9
    assert images[0].sum().item() == first_image_sum


def test_load_mnist_rejects_unknown_split(tmp_data_dir: Path):
    with pytest.raises(ValueError, match="'valid'.*train, test"):
        load_mnist("valid", tmp_data_dir)


def test_pixel_sequences_normalize_mnist(real_data: Path):
    images, _ = load_mnist("train", real_data)
    sequences = pixel_sequences(images)
    assert sequences.shape == (60_000, 784, 1) and sequences.dtype == torch.float32
    first_image_brightness = 27525 / (784 * 255)  # its pixel sum over the maximum
    expected_mean = (first_image_brightness - MNIST_MEAN) / MNIST_STD
    assert sequences[0].mean().item() == pytest.approx(expected_mean, abs=1e-6)
    # MNIST_MEAN and MNIST_STD are the training set's own statistics
    assert sequences.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert sequences.std().item() == pytest.approx(1.0, abs=1e-3)


def test_pmnist_permutation_is_a_fixed_permutation():
    global_state = torch.get_rng_state()
    permutation = pmnist_permutation(seed=0)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert permutation.dtype == torch.int64
    assert torch.equal(permutation.sort().values, torch.arange(784))
    assert torch.equal(pmnist_permutation(seed=0), permutation)
    assert not torch.equal(pmnist_permutation(seed=1), permutation)


def test_pixel_sequences_permute_time_steps():
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    permutation = pmnist_permutation(seed=7)
    in_order = pixel_sequences(images)
    permuted = pixel_sequences(images, permutation)
    assert permuted.shape == (3, 784, 1)
    assert torch.equal(permuted, in_order[:, permutation])
    row, column = 5, 3
    pixel = (images[:, row, column].float() / 255 - MNIST_MEAN) / MNIST_STD
    assert torch.equal(in_order[:, 28 * row + column, 0], pixel)


# --- PTB ---------------------------------------------------------------------------------


def decode(vocab: list[str], ids: torch.Tensor, separator: str) -> str:
    return separator.join(vocab[i] for i in ids.tolist())


def test_ptb_word_level(real_data: Path):
    corpus = load_ptb("word", real_data)
    assert corpus.vocab_size == 10_000
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [929_589, 73_760, 82_430]
    eos = corpus.vocab.index("<eos>")
    for split, ids in [("train", corpus.train), ("valid", corpus.valid), ("test", corpus.test)]:
        assert ids.dtype == torch.int64
        num_lines = fetch(f"ptb/ptb.{split}.txt", real_data).read_text().count("\n")
        assert (ids == eos).sum().item() == num_lines
    assert corpus.vocab[:3] == ["aer", "banknote", "berlitz"]  # first appearance in train
    assert decode(corpus.vocab, corpus.valid[:16], " ") == (
        "consumers may want to move their telephones a little closer to the tv set <eos> <unk>"
    )


def test_ptb_char_level(real_data: Path):
    corpus = load_ptb("char", real_data)
    assert corpus.vocab_size == 49
    assert all(len(symbol) == 1 for symbol in corpus.vocab) and "\n" not in corpus.vocab
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [5_269_890, 413_262, 464_989]
    first_line = " consumers may want to move their telephones a little closer to the tv set <eos>"
    assert decode(corpus.vocab, corpus.valid[: len(first_line)], "") == first_line
    num_test_lines = 3761
    assert decode(corpus.vocab, corpus.test, "").count("<eos>") == num_test_lines


def test_load_ptb_is_cached_and_rejects_unknown_level(real_data: Path):
    assert load_ptb("word", real_data) is load_ptb("word", real_data)
    with pytest.raises(ValueError, match="'subword'.*word, char"):
        load_ptb("subword", real_data)


def test_batchify_lays_out_contiguous_rows():
    batches = batchify(torch.arange(23), batch_size=4)
    assert batches.shape == (4, 5) and batches.is_contiguous()
    assert torch.equal(batches[1], torch.arange(5, 10))  # row i continues where row i-1 ends
    assert batches[-1, -1].item() == 19  # the 3 tokens past 4 * 5 are dropped
    with pytest.raises(ValueError):
        batchify(torch.arange(3), batch_size=4)


# --- polyphonic music --------------------------------------------------------------------

MUSIC_SPLIT_SIZES = {
    "nottingham": (694, 173, 170),
    "jsb": (229, 76, 77),
    "muse": (524, 135, 124),
    "piano": (87, 12, 25),
}


def test_nottingham_piano_rolls(real_data: Path):
    splits = [load_music("nottingham", split, real_data) for split in ("train", "valid", "test")]
    assert [len(tunes) for tunes in splits] == [694, 173, 170]
    tunes = [tune for split_tunes in splits for tune in split_tunes]
    assert all(tune.dtype == torch.float32 for tune in tunes)
    assert all(tune.ndim == 2 and tune.shape[1] == 88 for tune in tunes)
    steps = torch.cat(tunes)  # (total T, 88)
    assert ((steps == 0) | (steps == 1)).all()


@pytest.mark.parametrize("name", sorted(MUSIC_DATASETS))
def test_music_split_sizes(real_data: Path, name: str):
    tunes_per_split = [load_music(name, split, real_data) for split in ("train", "valid", "test")]
    assert tuple(len(tunes) for tunes in tunes_per_split) == MUSIC_SPLIT_SIZES[name]
    assert all(tune.shape[1] == 88 for tunes in tunes_per_split for tune in tunes)


def test_load_music_rejects_unknown_names(tmp_data_dir: Path):
    with pytest.raises(ValueError, match="'bach'"):
        load_music("bach", "train", tmp_data_dir)
    with pytest.raises(ValueError, match="'dev'.*train, valid, test"):
        load_music("jsb", "dev", tmp_data_dir)
