#!/usr/bin/env bash
# The preference stream on a buffer larger than the memory its reader may use: writes a buffer of
# PAIRS random pairs with h5py (default 4M pairs of 40+40+40 tokens, about 1.9 GB of token ids) and
# streams one shuffled epoch through `keel_bench stream` inside a memory cgroup of LIMIT_MB
# (default 512; cgroup v1 or v2, needs root), so page cache and heap together must stay under a
# quarter of the buffer. Prints the bench's JSON line (pairs/s, tokens/s, peak RSS).
#   bash bench/stream_larger_than_ram.sh [PAIRS] [LIMIT_MB]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs="${1:-4000000}" limit_mb="${2:-512}"
work="${KEEL_BENCH_DIR:-/tmp/keel-stream-bench}"
mkdir -p "$work"
buffer="$work/big.h5"
if [ ! -f "$buffer" ]; then
  /usr/bin/python3 - "$buffer" "$pairs" <<'PY'
import sys, h5py, numpy as np
path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(1)
with h5py.File(path + ".tmp", "w") as f:
    f.attrs["format"] = "keel-preferences"
    f.attrs["format_version"] = 1
    f.attrs["tokenizer"] = "bench"
    for side in ("prompt", "chosen", "rejected"):
        lengths = rng.integers(20, 61, size=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        g = f.create_group(side)
        d = g.create_dataset("tokens", shape=(int(offsets[-1]),), dtype=np.int32, chunks=(1 << 16,))
        step = 1 << 26
        for at in range(0, int(offsets[-1]), step):
            m = min(step, int(offsets[-1]) - at)
            d[at:at + m] = rng.integers(4, 32000, size=m, dtype=np.int32)
        g.create_dataset("offsets", data=offsets, chunks=(1 << 14,))
import os; os.rename(path + ".tmp", path)
PY
fi
bytes=$(stat -c %s "$buffer")
echo "buffer: $buffer, $((bytes / 1048576)) MiB; reader memory limit ${limit_mb} MiB"
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
bench=build/bench/keel_bench
if [ -d /sys/fs/cgroup/memory ]; then                       # cgroup v1
  cg=/sys/fs/cgroup/memory/keel-stream-bench
  mkdir -p "$cg"
  echo $((limit_mb * 1048576)) > "$cg/memory.limit_in_bytes"
  bash -c "echo \$\$ > $cg/tasks; exec $bench stream $buffer 64 ${BLOCK_PAIRS:-0}"
  echo "peak memory of the cgroup: $(( $(cat "$cg/memory.max_usage_in_bytes") / 1048576 )) MiB"
  rmdir "$cg" 2>/dev/null || true
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then          # cgroup v2
  cg=/sys/fs/cgroup/keel-stream-bench
  mkdir -p "$cg"
  echo $((limit_mb * 1048576)) > "$cg/memory.max"
  bash -c "echo \$\$ > $cg/cgroup.procs; exec $bench stream $buffer 64 ${BLOCK_PAIRS:-0}"
  echo "peak memory of the cgroup: $(( $(cat "$cg/memory.peak" 2>/dev/null || echo 0) / 1048576 )) MiB"
  rmdir "$cg" 2>/dev/null || true
else
  echo "no memory cgroup here: running without a limit"
  $bench stream "$buffer" 64 "${BLOCK_PAIRS:-0}"
fi
