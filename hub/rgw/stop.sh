#!/usr/bin/env bash
# Stop the cluster that hub/rgw/start.sh started in DIR; --wipe also removes DIR.
#
#   hub/rgw/stop.sh DIR [--wipe]
#
# Daemons are found by their pid files under DIR only (never by name), and signalled only if
# the pid still runs one of our ceph binaries. They were re-parented to PID 1 when they
# daemonised, which may reap them late: a zombie counts as stopped.
set -uo pipefail

[ $# -ge 1 ] && [ $# -le 2 ] && { [ $# = 1 ] || [ "$2" = --wipe ]; } ||
  { echo "usage: $0 DIR [--wipe]" >&2; exit 2; }
D=$1
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qE '^[^ ]*(radosgw|ceph-osd|ceph-mon) '; }

for name in client.rgw.a osd.0 mon.a; do  # reverse start order
  f=$D/run/$name.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if [ -n "$pid" ] && alive "$pid" && ours "$pid"; then
    s=$(date +%s%N)
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 200); do alive "$pid" || break; sleep 0.05; done  # up to 10 s
    how=TERM
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; how=KILL; fi
    echo "stopped $name (pid $pid, SIG$how) in $(( ($(date +%s%N) - s) / 1000000 )) ms" >&2
  fi
  rm -f "$f"
done
[ "${2:-}" = --wipe ] && rm -rf "$D"
exit 0
