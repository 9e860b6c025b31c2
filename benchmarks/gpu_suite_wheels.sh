#!/usr/bin/env bash
# Wheels that benchmarks/gpu_suite.py needs on a lent GPU machine and its image lacks (it has torch, transformers,
# accelerate, peft, safetensors, matplotlib, psutil; not diffusers, compel, hqq). Run HERE (pip works here, not
# there); they land in .whl/ (git-ignored through .git/info/exclude), about 7 MB. bitsandbytes (43 MB) is left out:
# with the ~42 MB working tree it would pass the 64 MiB a call may carry; the suite then says that the trainer used
# torch AdamW (for a LoRA the optimizer state is a few MB either way).
# Then, with the device tool: run(command=<the line printed at the end>, carry=[".whl"], timeout_s=600).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d .whl diffusers==0.42.1 compel==2.5.1 termcolor==3.3.0 importlib_metadata==10.2.0
python3 -m pip wheel -q --no-deps -w .whl hqq==0.2.8.post1  # published as a source archive only; pure Python
du -sh .whl
cat <<'LINE'
device command (carry [".whl"]):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 && mkdir -p $OUT/gpu_suite && python3 benchmarks/gpu_suite.py --out $OUT/gpu_suite 2>&1 | tee $OUT/gpu_suite/log.txt
LINE
