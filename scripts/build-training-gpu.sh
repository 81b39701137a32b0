#!/usr/bin/env bash
# Builds the training engine alone (-DCOMCL_TRAINING_ONLY=ON: storage/, training/, the comcl tool's training
# subcommands, training_tests) on a GPU machine that has CUDA, CMake, a C++ compiler and a python3 with a CUDA
# PyTorch 2.x (its LibTorch is used), but no Debian packages and no network. The few other libraries the
# engine needs come as Debian 12 .deb files fetched here beforehand and unpacked there into a private prefix.
#
# 1. Here (Debian 12, network to the Debian mirrors), fetch the packages into a git-ignored folder:
#      scripts/build-training-gpu.sh --fetch-debs .gpu-debs
#    (libsqlite3-dev libsqlite3-0 zlib1g-dev zlib1g nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
#    googletest, amd64 / all). Copy the repository with .gpu-debs/ (and ../shared/data for the tests) there.
# 2. There:
#      scripts/build-training-gpu.sh --debs .gpu-debs [--build build-gpu] [--jobs N] [--torch-dir DIR]
#                                    [--gtest auto|debian|source] [--configure-only]
#    unpacks the .debs into BUILD/_debs-prefix (dpkg -x, else ar + tar, else python3), configures with
#    -DCOMCL_TRAINING_ONLY=ON -DCOMCL_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=Release against the python
#    torch's LibTorch (Torch_DIR = torch.utils.cmake_prefix_path/Torch, or --torch-dir), builds training_tests
#    and comcl, and prints how to run them.
#
# ABI: LibTorch fixes _GLIBCXX_USE_CXX11_ABI (its TorchConfig.cmake's TORCH_CXX_FLAGS; PyTorch wheels before
# 2.6 use 0, later ones 1) and the whole build follows it (CMAKE_CXX_FLAGS). nlohmann-json and CLI11 are
# header-only and SQLite and zlib are C, so they fit either; Debian's libgtest.a/libgmock.a are built with ABI 1
# and GCC 12: --gtest auto (default) links a probe against them and, if that fails (other ABI, older
# libstdc++), builds googletest from the googletest package's source (usr/src/googletest) with the same flags.
# The same kind of probe decides between the prefix's libsqlite3/libz and the machine's own (an older glibc
# cannot load Debian 12's); if the prefix's are used, the build tree finds them through its RPATH, and an
# installed copy needs LD_LIBRARY_PATH (printed at the end).
# Debian's own LibTorch works too (for a check on a Debian machine):
#   scripts/build-training-gpu.sh --debs .gpu-debs --build build-gpu-test --torch-dir /usr/lib/x86_64-linux-gnu/cmake/Torch
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

packages=(libsqlite3-dev libsqlite3-0 zlib1g-dev zlib1g nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev
          googletest)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "build-training-gpu: $*" >&2; exit 1; }

mode="" debs="" build=build-gpu jobs=$(nproc) torch_dir="" gtest=auto configure_only=0
while [ $# -gt 0 ]; do
  case $1 in
    --fetch-debs) mode=fetch; debs=${2:?--fetch-debs DIR}; shift 2 ;;
    --debs) mode=build; debs=${2:?--debs DIR}; shift 2 ;;
    --build) build=${2:?--build DIR}; shift 2 ;;
    --jobs) jobs=${2:?--jobs N}; shift 2 ;;
    --torch-dir) torch_dir=${2:?--torch-dir DIR}; shift 2 ;;
    --gtest) gtest=${2:?--gtest auto|debian|source}; shift 2 ;;
    --configure-only) configure_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ -n "$mode" ] || { usage >&2; exit 2; }
case $gtest in auto|debian|source) ;; *) die "--gtest must be auto, debian or source" ;; esac

# --------------------------------------------------------------------------------------------------------
if [ "$mode" = fetch ]; then
  command -v apt-get >/dev/null || die "--fetch-debs needs apt-get (Debian 12)"
  mkdir -p "$debs"
  (cd "$debs" && rm -f ./*.deb && apt-get download "${packages[@]}") ||
    die "apt-get download failed (run 'apt-get update' first?)"
  echo "fetched into $debs:"
  ls -1 "$debs"/*.deb
  echo "copy the repository with $debs/ to the GPU machine and run there: scripts/build-training-gpu.sh --debs $debs"
  exit 0
fi

# --------------------------------------------------------------------------------------------------------
[ -d "$debs" ] || die "no folder $debs (fetch it with --fetch-debs on a Debian 12 machine)"
for p in "${packages[@]}"; do
  compgen -G "$debs/${p}_*.deb" >/dev/null || die "$debs has no ${p}_*.deb (fetch again with --fetch-debs)"
done
command -v cmake >/dev/null || die "cmake not found"
cxx=${CXX:-c++}
command -v "$cxx" >/dev/null || die "no C++ compiler ($cxx); set CXX"
python=${PYTHON:-python3}

mkdir -p "$build"
build=$(cd "$build" && pwd)
prefix=$build/_debs-prefix
rm -rf "$prefix"
mkdir -p "$prefix"

extract_python() { # a .deb is an ar archive holding data.tar.{xz,gz,bz2,zst}; python3 reads all but zst
  "$python" - "$1" "$2" <<'EOF'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
blob = open(deb, "rb").read()
assert blob[:8] == b"!<arch>\n", deb + " is not a .deb"
pos = 8
while pos + 60 <= len(blob):
    name, size = blob[pos:pos + 16].decode().strip().rstrip("/"), int(blob[pos + 48:pos + 58])
    data = blob[pos + 60:pos + 60 + size]
    pos += 60 + size + (size & 1)
    if name.startswith("data.tar"):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            tar.extractall(dest)
        sys.exit(0)
sys.exit(deb + ": no data.tar member")
EOF
}

extract_ar() {
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && ar x "$1") || { rm -rf "$tmp"; return 1; }
  tar -xf "$tmp"/data.tar.* -C "$2" || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
}

extractor=${COMCL_DEB_EXTRACT:-}  # dpkg, ar or python; default: the first that is there
if [ -z "$extractor" ]; then
  if command -v dpkg >/dev/null; then extractor=dpkg
  elif command -v ar >/dev/null && command -v tar >/dev/null; then extractor=ar
  else extractor=python
  fi
fi
echo "unpacking $(ls "$debs"/*.deb | wc -l) .deb files into $prefix ($extractor)"
for deb in "$debs"/*.deb; do
  deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
  case $extractor in
    dpkg) dpkg -x "$deb" "$prefix" ;;
    ar) extract_ar "$deb" "$prefix" || extract_python "$deb" "$prefix" ;;
    python) extract_python "$deb" "$prefix" ;;
    *) die "COMCL_DEB_EXTRACT must be dpkg, ar or python" ;;
  esac
done

# Absolute links (zlib1g-dev's libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) would leave the prefix.
while IFS= read -r link; do
  target=$(readlink "$link")
  case $target in /*) [ -e "$prefix$target" ] && ln -sfn "$prefix$target" "$link" ;; esac
done < <(find "$prefix" -type l)

usr=$prefix/usr
libdir=$(ls -d "$usr"/lib/*-linux-gnu 2>/dev/null | head -1)
[ -n "$libdir" ] || die "no usr/lib/<arch>-linux-gnu in the unpacked packages"
[ -f "$usr/include/sqlite3.h" ] && [ -f "$usr/include/zlib.h" ] || die "unpacked packages lack sqlite3.h / zlib.h"

# LibTorch --------------------------------------------------------------------------------------------------
if [ -z "$torch_dir" ]; then
  cmake_prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
    die "$python cannot import torch (set PYTHON, or give --torch-dir DIR holding TorchConfig.cmake)"
  torch_dir=$cmake_prefix/Torch
fi
[ -f "$torch_dir/TorchConfig.cmake" ] || die "no TorchConfig.cmake in $torch_dir (give --torch-dir)"
torch_dir=$(cd "$torch_dir" && pwd)
abi=$(grep -o '_GLIBCXX_USE_CXX11_ABI=[01]' "$torch_dir/TorchConfig.cmake" | head -1 | cut -d= -f2 || true)
if [ -z "$abi" ]; then
  abi=$("$python" -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))' 2>/dev/null) || abi=1
fi
abi_flag="-D_GLIBCXX_USE_CXX11_ABI=$abi"
echo "LibTorch: $torch_dir ($abi_flag)"

probe_dir=$build/_probes
rm -rf "$probe_dir"
mkdir -p "$probe_dir"

# A C library from the prefix if a program linked to it runs here (glibc), else the machine's own.
pick_c_library() { # soname (libsqlite3.so.0), dev link name (libsqlite3.so) -> prints the library to link
  local soname=$1 devname=$2 system
  echo 'int main(void) { return 0; }' >"$probe_dir/empty.c"
  if "$cxx" -x c "$probe_dir/empty.c" -x none -o "$probe_dir/probe-$devname" -Wl,--no-as-needed "$libdir/$devname" \
       >"$probe_dir/probe-$devname.log" 2>&1 &&
     LD_LIBRARY_PATH=$(dirname "$(readlink -f "$libdir/$devname")") "$probe_dir/probe-$devname" \
       >>"$probe_dir/probe-$devname.log" 2>&1; then
    readlink -f "$libdir/$devname"  # the real file: its folder goes into the build tree's RPATH
    return
  fi
  system=$(ldconfig -p 2>/dev/null | awk -v n="$soname" '$1 == n && /x86-64|x86_64/ { print $NF; exit }')
  [ -n "$system" ] || system=$(ls /usr/lib64/"$soname" /usr/lib/x86_64-linux-gnu/"$soname" 2>/dev/null | head -1)
  [ -n "$system" ] || die "neither Debian's $devname runs here nor does the machine have $soname"
  echo "$system"
}
sqlite_lib=$(pick_c_library libsqlite3.so.0 libsqlite3.so)
zlib_lib=$(pick_c_library libz.so.1 libz.so)
echo "SQLite: $sqlite_lib; zlib: $zlib_lib"

# GoogleTest --------------------------------------------------------------------------------------------------
gtest_dir=$libdir/cmake/GTest
probe_gtest() {
  cat >"$probe_dir/gtest_probe.cpp" <<'EOF'
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <string>
TEST(Probe, Strings) { EXPECT_THAT(std::string("abc"), ::testing::HasSubstr("b")); EXPECT_EQ(std::string("a"), "a"); }
EOF
  "$cxx" -std=c++17 $abi_flag -I"$usr/include" "$probe_dir/gtest_probe.cpp" -o "$probe_dir/gtest_probe" \
    "$libdir/libgmock.a" "$libdir/libgtest_main.a" "$libdir/libgtest.a" -pthread >"$probe_dir/gtest_probe.log" 2>&1 &&
    "$probe_dir/gtest_probe" >>"$probe_dir/gtest_probe.log" 2>&1
}
if [ "$gtest" = auto ]; then
  if probe_gtest; then gtest=debian; else gtest=source; fi
  echo "GoogleTest: Debian's static libraries $([ $gtest = debian ] && echo link and run with $abi_flag ||
    echo "do not link or run with $abi_flag here (see $probe_dir/gtest_probe.log): building it from source")"
fi
if [ "$gtest" = source ]; then
  [ -f "$usr/src/googletest/CMakeLists.txt" ] || die "no usr/src/googletest in the googletest package"
  cmake -S "$usr/src/googletest" -B "$build/_googletest" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS="$abi_flag" -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DINSTALL_GTEST=ON -DBUILD_GMOCK=ON \
    -DCMAKE_INSTALL_PREFIX="$build/_googletest-install" -DCMAKE_INSTALL_LIBDIR=lib >/dev/null
  cmake --build "$build/_googletest" -j "$jobs"
  cmake --install "$build/_googletest" >/dev/null
  gtest_dir=$build/_googletest-install/lib/cmake/GTest
fi
[ -f "$gtest_dir/GTestConfig.cmake" ] || die "no GTestConfig.cmake in $gtest_dir"

# CUDA helpers: nvcc on PATH; PyTorch < 2.5 asks for the legacy libnvToolsExt, which CUDA 12 no longer ships
# but the nvidia-nvtx wheel next to torch does.
extra=()
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
nvtx=$("$python" -c 'import os, glob, nvidia.nvtx as n; d = list(n.__path__)[0]; print((glob.glob(os.path.join(d, "lib", "libnvToolsExt.so*")) or [""])[0])' 2>/dev/null || true)
if [ -n "$nvtx" ] && command -v nvcc >/dev/null; then
  cuda_root=$(dirname "$(dirname "$(command -v nvcc)")")
  if ! ls "$cuda_root"/lib64/libnvToolsExt.so* "$cuda_root"/targets/*/lib/libnvToolsExt.so* >/dev/null 2>&1; then
    extra+=("-DCUDA_nvToolsExt_LIBRARY=$nvtx")
    echo "CUDA: $cuda_root has no libnvToolsExt; using the wheel's $nvtx"
  fi
fi

# Configure and build ------------------------------------------------------------------------------------------
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ -f "$build/CMakeCache.txt" ] && ! grep -q "^CMAKE_GENERATOR:INTERNAL=${generator[1]:-Unix Makefiles}\$" \
     "$build/CMakeCache.txt"; then
  rm -f "$build/CMakeCache.txt"
fi
cmake -S "$repo" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCOMCL_TRAINING_ONLY=ON -DCOMCL_BUILD_BENCHMARKS=OFF -DCOMCL_BUILD_TESTS=ON \
  -DCMAKE_CXX_FLAGS="$abi_flag" \
  -DCMAKE_PREFIX_PATH="$usr;$libdir/cmake;$usr/share/cmake" \
  -DTorch_DIR="$torch_dir" -DGTest_DIR="$gtest_dir" \
  -Dnlohmann_json_DIR="$usr/share/cmake/nlohmann_json" -DCLI11_DIR="$usr/share/cmake/CLI11" \
  -DSQLite3_INCLUDE_DIR="$usr/include" -DSQLite3_LIBRARY="$sqlite_lib" \
  -DZLIB_INCLUDE_DIR="$usr/include" -DZLIB_LIBRARY="$zlib_lib" \
  "${extra[@]}"
if [ "$configure_only" = 1 ]; then
  echo "configured $build (--configure-only): cmake --build $build --target training_tests comcl -j $jobs"
  exit 0
fi
cmake --build "$build" --target training_tests comcl -j "$jobs"

ld_dirs=""
for lib in "$sqlite_lib" "$zlib_lib"; do
  case $lib in "$prefix"/*) ld_dirs="$ld_dirs${ld_dirs:+:}$(dirname "$(readlink -f "$lib")")" ;; esac
done
cat <<EOF

built:
  $build/tests/training/training_tests        the training engine's tests (GoogleTest)
  $build/tools/comcl/comcl                    comcl pairs / pretrain / linear-eval / finetune / score
run:
  $build/tests/training/training_tests
  $build/tests/training/training_tests --gtest_filter='Moco*'      (a subset)
  $build/tools/comcl/comcl pretrain --db comcl.sqlite --run runs/moco --method moco --device cuda --epochs 1
EOF
if [ -n "$ld_dirs" ]; then
  echo "Debian's libsqlite3/libz from $prefix are linked; the build tree finds them through its RPATH, a copy"
  echo "installed elsewhere needs: export LD_LIBRARY_PATH=$ld_dirs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
fi
