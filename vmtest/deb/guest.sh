#!/bin/bash
# Runs INSIDE the VM that vmtest/deb/run boots (a Debian root with uplinkd's package installed);
# not meant to be started by hand.
#
#   guest.sh OUT_DIR "SCRIPTS"
#
# The package's files are what dpkg installed (dpkg --verify), and the lab's integration scripts
# named in SCRIPTS run against /usr/sbin/uplinkd and /usr/sbin/uplinkctl (UL_TIME_SCALE=5: TCG).
# virtme-ng's own init is PID 1 here; the unit under systemd is guest_systemd.sh's, in a second boot.
# Results: OUT_DIR/summary (key=value; one "check=<what>" line per check passed), each script's log
# beside it, everything on stdout too. The exit status (0 = all passed) goes back to the host.
set -u

out=$1
scripts=${2-test_stale_flows.sh}
src=/uplinkd-src
summary=$out/summary
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C
status=0

put() { printf '%s=%s\n' "$1" "$2" >>"$summary"; }
ok() {
  echo "vmtest-deb: ok: $*"
  put check "$*"
}
bad() {
  echo "vmtest-deb: FAILED: $*"
  put failed "$*"
  status=1
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

read -r uptime _ </proc/uptime
echo "vmtest-deb: guest $(uname -r) up after ${uptime}s, $(nproc) CPUs, root $(findmnt -no SOURCE,FSTYPE /)"
put kernel "$(uname -r)"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
for m in veth tun sch_ingress cls_bpf nf_tables nft_ct nf_conntrack; do
  modprobe -q "$m" 2>/dev/null || echo "vmtest-deb: module $m not loaded"
done

# ---- the installed package, and the lab's scenarios with it ------------------------------------
owner=$(dpkg -S /usr/sbin/uplinkd 2>&1)
verify=$(dpkg --verify uplinkd 2>&1)
if [[ $owner == "uplinkd: /usr/sbin/uplinkd" && -z $verify ]]; then
  ok "installed uplinkd $(dpkg-query -W -f='${Version}' uplinkd): files as packaged (dpkg --verify)"
else
  bad "package files: dpkg -S: $owner; dpkg --verify: $verify"
fi

for s in $scripts; do
  name=${s%.sh}
  log=$out/lab_$name.log
  echo "vmtest-deb: ---- $name with /usr/sbin/uplinkd ----"
  t0=$(now)
  env UPLINKD=/usr/sbin/uplinkd UPLINKCTL=/usr/sbin/uplinkctl UPLINKD_SOURCE=$src \
    UPLINKD_BUILD=/nonexistent UL_TIME_SCALE=5 \
    timeout --kill-after=30 900 bash "$src/tests/integration/$name.sh" </dev/null 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  put "lab_${name}_status" "$rc"
  put "lab_${name}_seconds" "$(elapsed "$t0")"
  if ((rc == 0)); then
    ok "lab $name with /usr/sbin/uplinkd and /usr/sbin/uplinkctl passed ($(elapsed "$t0") s)"
  else
    bad "lab $name with the installed binaries: exit $rc ($(elapsed "$t0") s; log $log)"
  fi
done

put guest_status "$status"
echo "vmtest-deb: guest done, status $status"
exit "$status"
