"""Move run folders too large for one device call between this machine and a lent GPU machine,
in parts over several calls (standard library and rtlib.data.fetch only: it runs on both).

A call brings back at most 64 MiB (8 files of 16 MiB) and carries in at most 64 MiB with the
working tree, but a PTB-word GRU's run folder is 150 MB and a PTB-char R-Transformer's 114 MB:
such a run cannot finish in one 30-minute lease, nor resume in the next unless its folder
travels in parts.

    python scripts/transfer.py split FOLDER RUN_DIR... --part-bytes N
        one tar of the run folders (paths as given, say runs/<id>), cut into FOLDER/part-000, ...
        of at most N bytes, with FOLDER/manifest.json: each part's size and SHA-256, the runs
    python scripts/transfer.py next FOLDER OUT --parts K
        move the next K parts not yet sent (and the manifest) into OUT; prints how many are left
    python scripts/transfer.py join FOLDER... [--into ROOT]
        gather a manifest's parts from the FOLDERs, check each, and unpack the run folders
        into ROOT (default .); exit 3 naming the parts still missing, 2 on a damaged part

The GPU side is `scripts/gpu_paper_batch.sh more` (out) and `receive` (in); this side,
`scripts/land_batch.py` (out) and `split` into the ignored incoming/ (in).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from rtlib.data.fetch import sha256_of  # noqa: E402  (standard library only, like this script)

MANIFEST = "manifest.json"
SENT = "sent"  # the subfolder of FOLDER that parts move to once `next` has put them in OUT


def split(folder: Path, run_dirs: list[Path], part_bytes: int) -> dict:
    """Tar `run_dirs` and cut the tar into parts of at most `part_bytes` in `folder`."""
    if part_bytes < 1:
        raise ValueError(f"--part-bytes {part_bytes}: must be at least 1")
    missing = [str(run) for run in run_dirs if not run.is_dir()]
    if missing:
        raise ValueError(f"not a run folder: {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / MANIFEST).exists():
        raise ValueError(f"{folder / MANIFEST} exists: these runs are already split there")
    parts = []
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        archive = Path(scratch) / "runs.tar"
        with tarfile.open(archive, "w") as tar:
            for run in run_dirs:
                tar.add(run, arcname=run.as_posix())
        with open(archive, "rb") as whole:
            for index, block in enumerate(iter(lambda: whole.read(part_bytes), b"")):
                part = folder / f"part-{index:03d}"
                part.write_bytes(block)
                parts.append(dict(name=part.name, bytes=len(block), sha256=hashlib.sha256(block).hexdigest()))
    manifest = dict(runs=[run.as_posix() for run in run_dirs], parts=parts)
    temporary = folder / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temporary, folder / MANIFEST)  # the manifest last: its presence means the parts are whole
    return manifest


def send_next(folder: Path, out: Path, parts: int) -> int:
    """Move the next `parts` unsent parts (and a copy of the manifest) into `out`; the number left."""
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / SENT).mkdir(exist_ok=True)
    unsent = [part["name"] for part in manifest["parts"] if (folder / part["name"]).exists()]
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / MANIFEST, out / MANIFEST)
    for name in unsent[:parts]:
        shutil.copy(folder / name, out / name)
        os.replace(folder / name, folder / SENT / name)
    return max(len(unsent) - parts, 0)


def join(folders: list[Path], into: Path) -> tuple[list[str], list[str]]:
    """The runs unpacked into `into` and the parts still missing (then nothing is unpacked);
    ValueError naming a part whose content is not the manifest's."""
    manifests = [folder / MANIFEST for folder in folders if (folder / MANIFEST).exists()]
    if not manifests:
        raise ValueError(f"no {MANIFEST} in {', '.join(map(str, folders))}")
    manifest = json.loads(manifests[0].read_text())
    found = {}
    for part in manifest["parts"]:
        for folder in folders:
            for candidate in (folder / part["name"], folder / SENT / part["name"]):
                if candidate.exists() and part["name"] not in found:
                    if sha256_of(candidate) != part["sha256"]:
                        raise ValueError(f"{candidate}: its SHA-256 is not the manifest's; fetch it again")
                    found[part["name"]] = candidate
    missing = [part["name"] for part in manifest["parts"] if part["name"] not in found]
    if missing:
        return [], missing
    into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into) as scratch:
        archive = Path(scratch) / "runs.tar"
        with open(archive, "wb") as whole:
            for part in manifest["parts"]:
                with open(found[part["name"]], "rb") as piece:
                    shutil.copyfileobj(piece, whole)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return manifest["runs"], []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cut = commands.add_parser("split")
    cut.add_argument("folder", type=Path)
    cut.add_argument("runs", type=Path, nargs="+")
    cut.add_argument("--part-bytes", type=int, required=True)
    send = commands.add_parser("next")
    send.add_argument("folder", type=Path)
    send.add_argument("out", type=Path)
    send.add_argument("--parts", type=int, required=True)
    gather = commands.add_parser("join")
    gather.add_argument("folders", type=Path, nargs="+")
    gather.add_argument("--into", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            manifest = split(args.folder, args.runs, args.part_bytes)
            print(f"{len(manifest['runs'])} run folders in {len(manifest['parts'])} parts in {args.folder}")
        elif args.command == "next":
            left = send_next(args.folder, args.out, args.parts)
            print(f"parts left to send: {left}")
        else:
            runs, missing = join(args.folders, args.into)
            if missing:
                print(f"transfer: {len(missing)} parts still missing: {' '.join(missing)}", file=sys.stderr)
                return 3
            print("unpacked: " + " ".join(runs))
    except (ValueError, OSError) as error:
        print(f"transfer: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
