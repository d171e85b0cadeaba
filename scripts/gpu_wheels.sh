#!/usr/bin/env bash
# The wheels the GPU machine needs to run the run notebook (papermill and its kernel), for its
# Python 3.12, without network: scripts/gpu_wheels.sh [FOLDER] (default wheels312).
# Downloads them unless FOLDER exists (../shared/TOOLCHAIN.md: with a 3.12 pip, or markers are
# missed), then deletes what the machine's image already holds (/work/.library/device/KINDS.md,
# "Python packages already there") and what the kernel runs without: debugpy (the debugger) and
# jedi and parso (completion). That takes the folder from 22 MB to about 5 MB of the 64 MiB a
# call carries, room for run folders to resume. gpu_paper_batch.sh installs them --no-deps.
set -eu
folder=${1:-wheels312}
# pyenv's shim answers `python3.12: command not found` unless that version is selected
if ! python3.12 -V > /dev/null 2>&1 && command -v pyenv > /dev/null; then
  PYENV_VERSION=$(pyenv versions --bare | grep '^3\.12' | tail -n 1)
  export PYENV_VERSION
fi
if [ ! -d "$folder" ]; then
  python3.12 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$folder" papermill ipykernel jupytext nbformat nbclient
fi
in_image="aiohappyeyeballs aiohttp aiosignal attrs certifi charset_normalizer click frozenlist idna
  markdown_it_py mdurl multidict packaging propcache psutil pygments python_dateutil pyyaml requests
  tqdm typing_extensions urllib3 yarl"
not_needed="debugpy jedi parso"
for wheel in "$folder"/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z-' 'a-z_')
  for drop in $in_image $not_needed; do
    [ "$name" = "$drop" ] && rm "$wheel" && break
  done
done
echo "$folder: $(ls "$folder"/*.whl | wc -l) wheels, $(du -sh "$folder" | cut -f1)"
