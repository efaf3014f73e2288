#!/usr/bin/env bash
# Power cuts, measured (not run in CI: it needs root for a loop-mounted ext4).
#
# For each outbox durability policy (never, interval, always) and each of ROUNDS rounds:
#   1. a fresh ext4 filesystem (default mount options, as on a Pi's SD card: data=ordered,
#      5 s journal commits, the kernel's default writeback) on a loop device holds the agent's
#      state folder;
#   2. the agent runs two BlazeFace pipelines with the broker unreachable, so every result is
#      spilled to the outbox; a jsonl sink on another filesystem records every result made;
#   3. after a random 20-40 s the power is cut: the agent gets SIGKILL and, at once, the block
#      device's content is copied. The copy is what the disk held at that instant: anything the
#      kernel had not written to it yet (unsynced pages) is lost, as with a real cut;
#   4. "reboot": e2fsck the copy, mount it, and read the outbox the way the agent does (a
#      segment is read up to its first damaged record); the agent started on it also reports
#      how many results wait in its outbox.
# Reported per policy: results made, lost (made but not on disk after the cut), fdatasync
# calls per minute (strace) and bytes written to the device per result (the loop device's
# sector count: the flash wear, journal included).
#
#   scripts/power-cut.sh [rounds=3] [fps_per_pipeline=5]
#
# Build first: cargo build --release (or a debug build; the release binary is preferred).
set -euo pipefail
rounds=${1:-3}; fps=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin="$target/release/edge-agent"
[ -x "$bin" ] || bin="$target/debug/edge-agent"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices and mounts)" >&2; exit 1; }
command -v strace >/dev/null || { echo "needs strace" >&2; exit 1; }
work=$(mktemp -d)
mnt="$work/mnt"; mkdir -p "$mnt"
agent=""
cleanup() {
  [ -n "$agent" ] && kill -9 "$agent" 2>/dev/null || true
  mountpoint -q "$mnt" && umount "$mnt" || true
  rm -rf "$work"
}
trap cleanup EXIT
# nothing listens here: the broker is away for the whole run
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

config() { # policy state_dir truth_dir
  cat <<TOML
[agent]
device_id = "cut"
state_dir = "$2"
stats_interval_secs = 60
[mqtt]
port = $port
max_backoff_secs = 1
[outbox]
sync = "$1"
sync_interval_ms = 1000
[pipelines.a]
source = { type = "images", path = "$root/tests/fixtures/images", fps = $fps, loop = true }
stages = [{ type = "detect", model = "blazeface" }]
sinks = [{ type = "mqtt" }, { type = "jsonl", path = "$3/a.jsonl" }]
[pipelines.b]
source = { type = "images", path = "$root/tests/fixtures/images", fps = $fps, loop = true }
stages = [{ type = "detect", model = "blazeface" }]
sinks = [{ type = "mqtt" }, { type = "jsonl", path = "$3/b.jsonl" }]
TOML
}

# a process still dying may hold the mount a moment
unmount() {
  for _ in $(seq 1 20); do umount "$mnt" 2>/dev/null && return; sleep 0.5; done
  umount -l "$mnt"
}

# seqs per pipeline found in an outbox folder, read as the agent reads it
read_outbox() {
  python3 - "$1" <<'PY'
import json, os, struct, sys, zlib
d = sys.argv[1]; found = set()
for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
    if not name.endswith(".seg"): continue
    data = open(os.path.join(d, name), "rb").read(); i = 0
    while i + 9 <= len(data) and data[i] == 0xEA:
        n, crc = struct.unpack_from("<II", data, i + 1); body = data[i + 9:i + 9 + n]
        if len(body) < n or zlib.crc32(body) != crc: break
        tl = struct.unpack_from("<H", body, 1)[0]; topic = body[3:3 + tl].decode()
        if "/detections/" in topic:
            found.add((topic.rsplit("/", 1)[1], json.loads(body[3 + tl:])["seq"]))
        i += 9 + n
for p, s in sorted(found): print(p, s)
PY
}

printf '%-9s %5s %6s %6s %6s %10s %12s %14s\n' policy round made lost lost% syncs/min dev_bytes/res agent_reports
for policy in never interval always; do
  for round in $(seq 1 "$rounds"); do
    img="$work/disk.img"; truth="$work/truth"; rm -rf "$truth"; mkdir -p "$truth"
    rm -f "$img"; truncate -s 128M "$img"; mkfs.ext4 -q "$img"
    mount -o loop "$img" "$mnt"
    dev=$(findmnt -n -o SOURCE "$mnt"); blk=$(basename "$dev")
    config "$policy" "$mnt/state" "$truth" > "$work/agent.toml"
    sectors0=$(awk '{print $7}' "/sys/block/$blk/stat")
    RUST_LOG=error strace -f -qq --seccomp-bpf -e trace=fsync,fdatasync -o "$work/syncs" \
      "$bin" --models-dir "$root/models" run --config "$work/agent.toml" & agent=$!
    run_for=$(( 20 + RANDOM % 21 ))
    started=$(date +%s.%N)
    sleep "$run_for"
    # the cut: the process dies and the disk keeps what it has now
    pkill -9 -P "$agent" 2>/dev/null || true; kill -9 "$agent" 2>/dev/null || true
    cp --sparse=always "$img" "$work/after-cut.img"
    ended=$(date +%s.%N)
    wait "$agent" 2>/dev/null || true; agent=""
    # the wear: what this run writes to the disk in the end, the kernel's later writeback too
    sync -f "$mnt/"
    sectors1=$(awk '{print $7}' "/sys/block/$blk/stat")
    unmount
    # reboot
    e2fsck -fy "$work/after-cut.img" >/dev/null 2>&1 || true
    mount -o loop "$work/after-cut.img" "$mnt"
    read_outbox "$mnt/state/outbox" > "$work/recovered"
    # the agent's own count of what waits, started on the recovered disk
    config "$policy" "$mnt/state" "$work" | sed 's/loop = true/loop = false/' > "$work/check.toml"
    reported=$(RUST_LOG=info timeout 10 "$bin" --models-dir "$root/models" run --config "$work/check.toml" 2>&1 \
      | sed -n 's/.*wait in the outbox.*messages[^0-9]*\([0-9]*\).*/\1/p' | head -1 || true)
    unmount
    made=$(cat "$truth"/a.jsonl "$truth"/b.jsonl 2>/dev/null | wc -l)
    lost=$(python3 - "$truth" "$work/recovered" <<'PY'
import json, sys
made = {(p, json.loads(l)["seq"]) for p in "ab" for l in open(f"{sys.argv[1]}/{p}.jsonl")}
got = {(p, int(s)) for p, s in (l.split() for l in open(sys.argv[2]))}
print(len(made - got))
PY
)
    secs=$(python3 -c "print($ended - $started)")
    syncs=$(grep -c 'sync' "$work/syncs" || true)
    printf '%-9s %5s %6s %6s %5.1f%% %10.0f %12.0f %14s\n' "$policy" "$round" "$made" "$lost" \
      "$(python3 -c "print(100*$lost/max($made,1))")" "$(python3 -c "print($syncs*60/$secs)")" \
      "$(python3 -c "print(($sectors1-$sectors0)*512/max($made,1))")" "${reported:-0}"
  done
done
