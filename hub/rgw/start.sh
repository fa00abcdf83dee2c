#!/usr/bin/env bash
# Start a throw-away one-node Ceph cluster with an S3 endpoint (RADOS Gateway) on loopback.
#
#   hub/rgw/start.sh DIR [PORT]
#
# One monitor, one memstore OSD (every written byte stays in RAM), pool size 1, no mgr,
# no systemd; all state (config, keyrings, logs, pid files, sockets) under DIR, which must
# be empty or absent. Radosgw's beast frontend listens on 127.0.0.1:PORT (a free port when
# PORT is not given). Needs the Debian packages ceph-mon ceph-osd radosgw (Ceph 16.2); runs as
# any user. Prints the two lines an operator needs and writes them to DIR/env:
#
#   export CEPH_CONF=DIR/ceph.conf                 # radosgw-admin, ceph: this cluster
#   export AWS_ENDPOINT_URL=http://127.0.0.1:PORT  # S3 clients (sic-share, s3fs, boto3)
#
# Stop with hub/rgw/stop.sh DIR. See docs/hub.md ("Operator: a Ceph RGW hub").
set -euo pipefail

usage() { echo "usage: $0 DIR [PORT]  (DIR: an empty or absent folder for all of the cluster's state)" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
D=$1
RGW_PORT=${2:-0}
[[ $RGW_PORT =~ ^[0-9]+$ ]] || usage
MEMSTORE_BYTES=${SIC_RGW_MEMSTORE_BYTES:-4294967296}  # logical OSD size; RAM is used only as data is written
PY=$(command -v /usr/bin/python3 || command -v python3)

t0=$(date +%s%N)
log() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '[%d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2; }
die() {
  echo "error: $*" >&2
  for f in "$D"/log/*.log "$D"/log/*.err; do [ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -5 "$f" >&2; }; done
  "$(dirname "$0")/stop.sh" "$D" >/dev/null 2>&1 || true
  exit 1
}

for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool; do
  command -v "$bin" >/dev/null || { echo "error: $bin not found: apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw" >&2; exit 1; }
done
if [ -e "$D" ] && [ -n "$(ls -A "$D")" ]; then
  echo "error: $D is not empty: give an empty folder, or stop and remove the cluster there with hub/rgw/stop.sh $D --wipe" >&2
  exit 1
fi

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_free() {
  "$PY" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
MON_PORT=$(free_port)
[ "$RGW_PORT" != 0 ] || RGW_PORT=$(free_port)
port_free "$RGW_PORT" || die "port $RGW_PORT on 127.0.0.1 is taken: give another PORT, or none for a free one"
mkdir -p "$D"
D=$(cd "$D" && pwd)
mkdir -p "$D"/{run,log,mon.a,osd.0,crash}

FSID=$(cat /proc/sys/kernel/random/uuid)
CONF=$D/ceph.conf
export CEPH_CONF=$CONF

# chooseleaf type 0 must be set before the monitor exists (one host holds every replica);
# a short paxos interval makes each pool/auth change commit in 50 ms instead of 1 s.
# The monitor refuses to start when its disk's free share is <= "mon data avail crit" percent,
# and the share is rounded down: a big disk with 2 GiB free reads 0 %. The objects live in
# memory (memstore) and the monitor's own store is a few MB, so -1 turns that check off.
cat >"$CONF" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/keyring
run dir = $D/run
crash dir = $D/crash
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
log to stderr = false
err to stderr = true
mon cluster log file = $D/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon data avail warn = 0
mon data avail crit = -1
mon warn on insecure global id reclaim allowed = false
paxos propose interval = 0.05
[mon]
mon data = $D/mon.\$id
[osd]
osd data = $D/osd.\$id
keyring = $D/osd.\$id/keyring
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd op num shards = 2
osd op num threads per shard = 1
[client.rgw.a]
keyring = $D/rgw.keyring
# without tcp_nodelay replies wait on Nagle + delayed ACK (up to about 44 ms a GET)
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $D
rgw enable usage log = false
# the lifecycle threads sleep 5 s at a time and radosgw waits for them on SIGTERM (stop took 5-9 s)
rgw enable lc threads = false
rgw thread pool size = 64
rgw dns name = localhost
# memstore keeps every byte in RAM: collect overwritten and deleted objects soon
rgw gc obj min wait = 30
rgw gc processor period = 30
CONF

# --- monitor ---------------------------------------------------------------------------------
ceph-authtool --create-keyring --gen-key --name=mon. "$D/keyring" --cap mon 'allow *' >/dev/null
ceph-authtool --gen-key --name=client.admin "$D/keyring" \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
ceph-mon -i a --mkfs --monmap "$D/monmap" --keyring "$D/keyring" 2>"$D/log/mon.a.err" || die "the monitor's mkfs failed"
ceph-mon -i a 2>>"$D/log/mon.a.err" || die "the monitor did not start"
for _ in $(seq 60); do ceph --connect-timeout 5 mon stat >/dev/null 2>&1 && break; sleep 0.2; done
ceph --connect-timeout 5 mon stat >/dev/null 2>&1 || die "the monitor does not answer on 127.0.0.1:$MON_PORT"
log "monitor up on 127.0.0.1:$MON_PORT"

# --- OSD (memstore) --------------------------------------------------------------------------
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
OSD_KEY=$(ceph-authtool --gen-print-key)
echo "{\"cephx_secret\": \"$OSD_KEY\"}" >"$D/osd.0/new.json"
OSD_ID=$(ceph osd new "$OSD_UUID" -i "$D/osd.0/new.json" 2>>"$D/log/osd.0.err") || die "ceph osd new failed"
[ "$OSD_ID" = 0 ] || die "the new OSD got id $OSD_ID, expected 0"
ceph-osd -i 0 --mkfs --key "$OSD_KEY" --osd-uuid "$OSD_UUID" >>"$D/log/osd.0.err" 2>&1 || die "the OSD's mkfs failed"
# memstore does not keep the key given to --mkfs: write the OSD's keyring by hand
ceph-authtool --create-keyring "$D/osd.0/keyring" --name osd.0 --add-key "$OSD_KEY" >/dev/null
ceph-osd -i 0 2>>"$D/log/osd.0.err" || die "the OSD did not start"
osd_up() { ceph osd stat -f json 2>/dev/null | "$PY" -c 'import json, sys; sys.exit(json.load(sys.stdin)["num_up_osds"] != 1)'; }
for _ in $(seq 100); do osd_up && break; sleep 0.2; done
osd_up || die "the OSD did not come up"
log "OSD up (memstore)"

# --- radosgw ---------------------------------------------------------------------------------
# Create every pool RGW uses in one batch (one ceph process): left to itself RGW creates them one
# by one, the bucket pools lazily on the first CreateBucket/PutObject/multipart upload, ~2 s each.
# One placement group each (fewer for the OSD to create); no 'application enable' (a commit per
# pool, ~0.1 s each, for a health warning nobody reads here).
for p in .rgw.root default.rgw.log default.rgw.control default.rgw.meta default.rgw.buckets.index \
         default.rgw.buckets.data default.rgw.buckets.non-ec; do
  echo "osd pool create $p 1 1"
done | ceph >/dev/null 2>"$D/log/pools.err" || die "creating the RGW pools failed"
log "pools created"
ceph auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' -o "$D/rgw.keyring" 2>>"$D/log/pools.err" ||
  die "creating the radosgw key failed"
radosgw -n client.rgw.a 2>"$D/log/client.rgw.a.err" || die "radosgw did not start"
rgw_ok() { "$PY" -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)' "http://127.0.0.1:$RGW_PORT/" 2>/dev/null; }
for _ in $(seq 200); do rgw_ok && break; sleep 0.1; done
rgw_ok || die "radosgw does not answer on http://127.0.0.1:$RGW_PORT"
RGW_PID=$(cat "$D/run/client.rgw.a.pid" 2>/dev/null) && kill -0 "$RGW_PID" 2>/dev/null ||
  die "radosgw exited: another server answers on port $RGW_PORT"
log "radosgw up on http://127.0.0.1:$RGW_PORT"

printf 'export CEPH_CONF=%s\nexport AWS_ENDPOINT_URL=http://127.0.0.1:%s\n' "$CONF" "$RGW_PORT" | tee "$D/env"
