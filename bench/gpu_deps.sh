#!/usr/bin/env bash
# keel's Debian 12 build dependencies for a machine that has a CUDA PyTorch but not them (a GPU
# image that cannot reach a package registry). Two steps:
#   bash bench/gpu_deps.sh download DEB_DIR          on a Debian 12 machine with apt: the .deb files
#   eval "$(bash bench/gpu_deps.sh unpack DEB_DIR ROOT)"   on the GPU machine
# `unpack` extracts DEB_DIR/core into ROOT, then those packages of DEB_DIR/opt that provide a shared
# library the unpacked ones need and the machine lacks, and prints the exports: PATH,
# LD_LIBRARY_PATH, PKG_CONFIG_PATH, KEEL_DEPS_PREFIX and KEEL_DEPS_CMAKE_FLAGS, for
#   cmake -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$KEEL_DEPS_PREFIX" $KEEL_DEPS_CMAKE_FLAGS ...
# (DEVELOPERS.md, "Building on a GPU machine"; bench/gpu_check.sh does all of it).
set -euo pipefail

# What keel links or includes, the libraries those need that a CUDA image may lack, and
# pkg-config, through which Debian's CapnProtoConfig.cmake finds its libraries.
core=(libboost-program-options-dev libboost-program-options1.74-dev libboost1.74-dev libboost-program-options1.74.0
  libzmq3-dev libzmq5 cppzmq-dev libnorm1 libpgm-5.3-0 libsodium23 libcapnp-dev libcapnp-0.9.2 capnproto
  libhdf5-dev libhdf5-103-1 libsz2 libaec0 libsentencepiece-dev libsentencepiece0 libprotobuf-dev libprotobuf32
  nlohmann-json3-dev libgtest-dev libgmock-dev googletest libgloo-dev fortunes fortunes-min
  pkgconf pkgconf-bin libpkgconf3)
# CapnProtoConfig.cmake also requires OpenSSL to be found (for kj-tls, which keel does not link):
# these go to ROOT/find_only, outside LD_LIBRARY_PATH, so that no program runs with Debian's OpenSSL.
find_only=(libssl-dev libssl3)
opt=(libcurl4 libbsd0 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libnghttp2-14 librtmp1
  libssh2-1 libpsl5 libldap-2.5-0 libsasl2-2 libsasl2-modules-db libbrotli1 libidn2-0 libunistring2 libmd0)

download() {
  mkdir -p "$1/core" "$1/opt" "$1/find_only"
  (cd "$1/core" && apt-get download "${core[@]}")
  (cd "$1/find_only" && apt-get download "${find_only[@]}")
  (cd "$1/opt" && apt-get download "${opt[@]}")
}

# deb_extract DEB DIR and deb_list DEB, with dpkg or, on an image without it, ar and tar.
deb_extract() {
  if command -v dpkg >/dev/null; then dpkg -x "$1" "$2"; else ar p "$1" data.tar.xz | tar -xJ -C "$2"; fi
}
deb_list() {
  if command -v dpkg >/dev/null; then dpkg -c "$1"; else ar p "$1" data.tar.xz | tar -tJ; fi
}

unpack() {
  local debs=$1 root=$2
  mkdir -p "$root" "$root/find_only"
  for f in "$debs"/core/*.deb; do deb_extract "$f" "$root"; done
  for f in "$debs"/find_only/*.deb; do deb_extract "$f" "$root/find_only"; done
  local lib=$root/usr/lib/x86_64-linux-gnu
  # Debian's CapnProtoConfig.cmake names the schema compiler and its import path (/capnp/c++.capnp)
  # by absolute /usr paths; point them into ROOT.
  sed -i -E "s#^(set\(CAPNP[A-Z_]* )/usr/#\1$root/usr/#" "$lib/cmake/CapnProto/CapnProtoConfig.cmake"
  missing() {
    LD_LIBRARY_PATH=$lib ldd "$lib"/*.so* "$root"/usr/bin/capnp* 2>/dev/null | awk '/not found/ {print $1}' | sort -u || true
  }
  for _ in 1 2 3; do
    local need
    need=$(missing)
    [ -z "$need" ] && break
    for so in $need; do
      for f in "$debs"/opt/*.deb; do
        if deb_list "$f" | grep "/$so" >/dev/null; then
          echo "gpu_deps: $so from $(basename "$f")" >&2
          deb_extract "$f" "$root"
        fi
      done
    done
  done
  local left
  left=$(missing)
  [ -z "$left" ] || echo "gpu_deps: still missing: $left" >&2
  # Its imported libraries are found through pkg-config, whose .pc files say prefix=/usr: name
  # them instead, or a machine that has another Cap'n Proto in /usr links that one.
  local capnp_flags=""
  for t in capnp capnpc capnp-rpc capnp-json capnp-websocket kj kj-async kj-http kj-gzip kj-tls kj-test; do
    capnp_flags+=" -DCapnProto_${t}_IMPORTED_LOCATION=$lib/lib$t-0.9.2.so"
  done
  cat <<OUT
export PATH="$root/usr/bin:\$PATH"
export LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$lib/pkgconfig:$root/usr/share/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
export KEEL_DEPS_PREFIX="$root/usr"
export KEEL_DEPS_CMAKE_FLAGS="-DCMAKE_INCLUDE_PATH=$root/usr/include/hdf5/serial -DCMAKE_LIBRARY_PATH=$lib/hdf5/serial -DHDF5_C_INCLUDE_DIR=$root/usr/include/hdf5/serial -DHDF5_hdf5_LIBRARY_RELEASE=$lib/hdf5/serial/libhdf5.so -DOPENSSL_INCLUDE_DIR=$root/find_only/usr/include -DOPENSSL_SSL_LIBRARY=$root/find_only/usr/lib/x86_64-linux-gnu/libssl.so -DOPENSSL_CRYPTO_LIBRARY=$root/find_only/usr/lib/x86_64-linux-gnu/libcrypto.so$capnp_flags"
OUT
}

case "${1:-}" in
  download) download "$2" ;;
  unpack) unpack "$2" "$3" ;;
  *) echo "usage: $0 download DEB_DIR | unpack DEB_DIR ROOT" >&2; exit 2 ;;
esac
