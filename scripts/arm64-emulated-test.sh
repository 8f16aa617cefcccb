#!/usr/bin/env bash
# Runs the native kernel tests on arm64 from an x86-64 Debian machine: the addon is cross-compiled
# with aarch64-linux-gnu-g++ and loaded by an arm64 Node under qemu-user, so the NEON kernels and
# (with a CPU model that has FEAT_DotProd) the sdot kernels run through the same tests as on x86.
# Not part of CI: it takes about 10 minutes, and emulation says nothing about speed.
#
#   sudo scripts/arm64-emulated-test.sh [QEMU_CPU]      (default max: NEON and dotprod;
#                                                        cortex-a57: NEON without dotprod)
#
# Needs `npx tsc -p tsconfig.json` first (it runs dist/test/). Debian's arm64 Node and its
# libraries are downloaded and unpacked into $ARM_ROOT (default /tmp/smolvlm-arm64), not installed.
set -euo pipefail
CPU=${1:-max}
ARM_ROOT=${ARM_ROOT:-/tmp/smolvlm-arm64}
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
[ -f dist/test/native-kernels.test.js ] || { echo "run npx tsc -p tsconfig.json first" >&2; exit 2; }

command -v aarch64-linux-gnu-g++ >/dev/null && command -v qemu-aarch64 >/dev/null ||
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null; }

if [ ! -x "$ARM_ROOT/usr/bin/node" ]; then
  # The arm64 package index is needed only to download; the architecture is removed afterwards.
  dpkg --add-architecture arm64
  apt-get update -qq
  mkdir -p "$ARM_ROOT/debs"
  closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances nodejs:arm64)
  arm=$(grep -E '^[a-z0-9].*:arm64$' <<<"$closure" | sort -u)
  # Node's JavaScript dependencies are architecture-independent packages (node-acorn, ...).
  js=$(grep -E '^node-[a-z0-9.-]+$' <<<"$closure" | sort -u)
  (cd "$ARM_ROOT/debs" && apt-get download $arm $js 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  dpkg --remove-architecture arm64 || true
  for deb in "$ARM_ROOT"/debs/*.deb; do dpkg -x "$deb" "$ARM_ROOT"; done
fi
qemu-aarch64 -L "$ARM_ROOT" "$ARM_ROOT/usr/bin/node" -e 'console.log(`arm64 node ${process.version}`)'

NODE_INCLUDE=$(dirname "$(dirname "$(command -v node)")")/include/node
mkdir -p build/arm64
aarch64-linux-gnu-g++ -std=gnu++17 -O3 -fno-math-errno -pthread -fPIC -shared -DNAPI_VERSION=8 -I"$NODE_INCLUDE" \
  native/addon.cc native/cpu.cc native/threadpool.cc native/matmul.cc native/quant.cc native/attention.cc \
  native/elementwise.cc native/mmap.cc native/peak.cc native/resample.cc -o build/arm64/smolvlm_native.node

# Each test file runs in this process (node --test would spawn x86-unrunnable children).
status=0
for t in native-kernels quant-kernels; do
  echo "== $t (qemu-aarch64 -cpu $CPU)"
  log="build/arm64/$t.tap"
  SMOLVLM_NATIVE_PATH=build/arm64/smolvlm_native.node qemu-aarch64 -cpu "$CPU" -L "$ARM_ROOT" "$ARM_ROOT/usr/bin/node" "dist/test/$t.test.js" >"$log" 2>&1 || status=1
  grep -E '^(not ok|# (tests|pass|fail) )|isa|dotprod' "$log" || true
done
echo "full output: build/arm64/*.tap"
exit $status
