#!/usr/bin/env bash
# Live smoke test of a banger host: boots a VM, waits until the daemon reports it ready, logs
# in, runs a command, and deletes it. One boot deadline bounds the whole run; when it passes,
# everything needed to see why is printed (VM metadata, serial and VMM logs, tap state, socket
# state, NAT rules) and the exit code is 1.
#
#   scripts/verify.sh [--image NAME] [--name NAME] [--deadline SECS] [--login ssh|exec] [--keep]
#
# Login: `ssh` (root@<vm ip> with <state_dir>/ssh/id_ed25519) on a host with KVM and real
# Firecracker; `exec` (`banger vm exec`, through the guest agent) under the simulator, whose
# guests have no sshd. The default picks `ssh` when /dev/kvm and `firecracker` are usable.
# The banger CLI is $BANGER, else `banger` on PATH, else target/debug/banger; it reaches the
# stack through its usual flags/environment (BANGER_NATS_URL, BANGER_STATE_DIR, ...).
set -euo pipefail

image="" name="verify-$(date +%s)-$$" deadline=${BANGER_VERIFY_DEADLINE:-180} login="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --deadline) deadline=$2; shift 2 ;;
    --login) login=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "verify: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -n "${BANGER:-}" ]; then banger=$BANGER
elif command -v banger >/dev/null 2>&1; then banger=banger
else banger="$(dirname "$0")/../target/debug/banger"; fi

if [ -z "$login" ]; then
  if [ -w /dev/kvm ] && command -v firecracker >/dev/null 2>&1; then login=ssh; else login=exec; fi
fi
case "$login" in ssh|exec) ;; *) echo "verify: --login is ssh or exec" >&2; exit 2 ;; esac

start=$(date +%s)
remaining() { local r=$(( deadline - ($(date +%s) - start) )); [ "$r" -gt 0 ] && echo "$r" || echo 0; }
say() { echo "verify: $*"; }

json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin); v=v.get("vm",v)
for k in sys.argv[1].split("."): v=(v or {}).get(k)
print("" if v is None else v)' "$1"; }

dump() {
  say "FAILED: $1"
  say "---- VM metadata"
  "$banger" --json vm show "$name" 2>&1 || true
  local tap id
  tap=$("$banger" --json vm show "$name" 2>/dev/null | json_field network.tap || true)
  id=$("$banger" --json vm show "$name" 2>/dev/null | json_field id || true)
  say "---- serial log (tail)"
  "$banger" vm logs "$name" --tail 4096 2>&1 || true
  say "---- VMM log (tail)"
  "$banger" vm logs "$name" --vmm --tail 4096 2>&1 || true
  say "---- tap state (${tap:-no tap recorded})"
  if [ -n "$tap" ]; then ip -d link show "$tap" 2>&1 || true; fi
  bridge link 2>&1 || true
  say "---- socket state"
  local run=${BANGER_RUNTIME_DIR:-/run/banger}
  if [ -n "$id" ]; then ls -l "$run/vm-controller/$id" 2>&1 || true; fi
  ss -xlp 2>/dev/null | grep -F "${id:-$name}" || echo "(no listening unix socket names $name)"
  say "---- NAT rules"
  nft list table ip banger 2>&1 || true
  exit 1
}

cleanup() {
  if [ "$keep" = 0 ]; then "$banger" vm delete "$name" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "creating $name (deadline ${deadline}s, login by $login)"
create=(vm create "$name" --wait --wait-timeout "$(remaining)")
[ -n "$image" ] && create+=(--image "$image")
# Readiness as the daemon observes it: the controller reports the guest agent healthy.
"$banger" "${create[@]}" || dump "$name was not ready within ${deadline}s"
ip=$("$banger" --json vm show "$name" | json_field network.ip)
say "$name is ready at $ip after $(( $(date +%s) - start ))s"

# The login phase reuses what is left of the same deadline.
case "$login" in
  ssh)
    state=${BANGER_STATE_DIR:-/var/lib/banger}
    key=("-i" "$state/ssh/id_ed25519")
    until ssh "${key[@]}" -o BatchMode=yes -o StrictHostKeyChecking=no \
              -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "root@$ip" true 2>/dev/null; do
      [ "$(remaining)" -gt 0 ] || dump "ssh root@$ip did not succeed within the deadline"
      sleep 1
    done
    out=$(ssh "${key[@]}" -o BatchMode=yes -o StrictHostKeyChecking=no \
              -o UserKnownHostsFile=/dev/null "root@$ip" uname -a)
    ;;
  exec)
    until out=$("$banger" vm exec "$name" -- uname -a 2>/dev/null); do
      [ "$(remaining)" -gt 0 ] || dump "banger vm exec did not succeed within the deadline"
      sleep 1
    done
    ;;
esac
say "inside: $out"
say "OK in $(( $(date +%s) - start ))s"
