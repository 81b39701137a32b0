#!/usr/bin/env bash
# Installs every Debian 12 package comcl needs to build, test, benchmark and run its demo.
# Used by the README's commands and by .ci/run; safe to run again (apt skips what is present).
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang-format git ca-certificates
  # training engine
  libtorch-dev
  # DICOM imaging: library, command-line tools (storescu/findscu), codecs
  libdcmtk-dev dcmtk libpng-dev
  # storage and plumbing
  libsqlite3-dev sqlite3 libboost-dev nlohmann-json3-dev libcli11-dev
  # Orthanc server, its plugin SDK header, and its JPEG 2000 decoder plugin
  orthanc orthanc-dev orthanc-gdcm
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev curl
  # the Python pipeline the benchmarks compare against
  python3 python3-pydicom python3-numpy python3-pil
  # the PyTorch side of the training benchmark, and loading exported weights in the tests
  python3-torch python3-torchvision
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
# The orthanc package starts a service on install where systemd runs; tests start their own Orthanc.
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
