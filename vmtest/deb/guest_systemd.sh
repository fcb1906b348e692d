#!/bin/bash
# Runs INSIDE the second VM of vmtest/deb/run, booted with systemd as init (vng --systemd);
# not meant to be started by hand.
#
#   guest_systemd.sh OUT_DIR
#
# uplinkd.service as the package installed it, under a real systemd, with one uplink (wan1, a
# veth whose peer in the namespace "gw" is the gateway and answers the probe target):
# start (Type=notify: active once READY=1), the uplink online with its XDP program (so the
# capability bounding set and the sandbox let uplinkd do its work), the hook /etc/mwan3.user run
# inside the sandbox (it can write /run, not /etc), the watchdog petted, `systemctl reload` (a good
# and a refused configuration), the upgrade (dpkg -i of OUT_DIR/uplinkd.deb: postinst sees the unit
# active and restarts it in place; same MainPID, new binary, no event), `uplinkctl stop
# --keep-datapath` (no restart, XDP left), a start that adopts, kill -9 (restarted), `systemctl
# stop` (XDP gone), and `dpkg -r` stopping the service. Results as guest.sh's: OUT_DIR/summary
# gets "check=" per check passed, "failed=" per failure, "systemd_status" at the end.
set -u

out=$1
summary=$out/summary
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C SYSTEMD_PAGER=cat
status=0
scale=${UL_TIME_SCALE:-5}

put() { printf '%s=%s\n' "$1" "$2" >>"$summary"; }
ok() {
  echo "vmtest-deb: ok: $*"
  put check "systemd: $*"
}
bad() {
  echo "vmtest-deb: FAILED: $*"
  put failed "systemd: $*"
  status=1
}
show() { systemctl show -p "$1" --value uplinkd.service; }
# wait_for SECONDS CMD...: until CMD succeeds (every 0.5 s); 1 on timeout.
wait_for() {
  local n=$(($1 * 2)) i
  shift
  for ((i = 0; i < n; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}
wan1_state() { uplinkctl status --json 2>/dev/null | python3 -c 'import json,sys; print([i["state"] for i in json.load(sys.stdin)["interfaces"] if i["name"]=="wan1"][0])' 2>/dev/null; }
wan1_online() { [[ $(wan1_state) == online ]]; }
# Conditions for wait_for (called through it: shellcheck cannot see that).
# shellcheck disable=SC2317
running_and_answering() { [[ $(show SubState) == running ]] && uplinkctl status; }
# shellcheck disable=SC2317
unit_inactive() { [[ $(show ActiveState) == inactive ]]; }
# shellcheck disable=SC2317
hook_saw() { grep -q "^$1 wan1" /run/uplinkd-test/hook.log 2>/dev/null; }
# shellcheck disable=SC2317
hook_last_is() { [[ $(tail -n 1 /run/uplinkd-test/hook.log 2>/dev/null | cut -d' ' -f1-2) == "$1 wan1" ]]; }
# shellcheck disable=SC2317
pet_since() { [[ $(show WatchdogTimestampMonotonic) != "$1" ]]; }
# restarted_from PID: a new main process, running.
# shellcheck disable=SC2317
restarted_from() { local p; p=$(show MainPID); [[ $p != "$1" && $p != 0 && $(show SubState) == running ]]; }
xdp_on_wan1() { ip -d link show dev wan1 | grep -q 'prog/xdp'; }
journal() { journalctl -u uplinkd.service -o cat --no-pager -n "${1:-30}" 2>/dev/null | sed 's/^/vmtest-deb:   journal| /'; }
finish() {
  put systemd_status "$status"
  echo "vmtest-deb: systemd guest done, status $status"
  exit "$status"
}

echo "vmtest-deb: guest $(uname -r) with $(ps -p 1 -o comm=) as PID 1"
[[ $(ps -p 1 -o comm=) == systemd ]] || { bad "PID 1 is not systemd"; finish; }
state=$(timeout 120 systemctl is-system-running --wait 2>&1)
echo "vmtest-deb: system state: $state ($(systemctl --failed --plain --no-legend | awk '{print $1}' | paste -sd' ' -))"
# virtme-init mounts tmpfs on /var/tmp and /var/log while systemd boots: a unit started before
# gets its PrivateTmp directory below the /var/tmp mount and then cannot find it for its next
# command (ExecReload failed with 226/NAMESPACE), and journald's files are hidden. Not something a
# real machine does: take them away first.
for d in /var/tmp /var/log; do
  if [[ $(findmnt -no FSTYPE "$d" 2>/dev/null) == tmpfs ]]; then umount "$d"; fi
done
mountpoint -q /sys/fs/bpf || bad "systemd did not mount /sys/fs/bpf"

# ---- one uplink: wan1 <-> gw (192.0.2.1, answering 203.0.113.1) --------------------------------
ip netns add gw
ip link add wan1 type veth peer name gw0 netns gw
ip addr add 192.0.2.2/24 dev wan1
ip link set wan1 up
ip -n gw link set lo up
ip -n gw addr add 192.0.2.1/24 dev gw0
ip -n gw addr add 203.0.113.1/32 dev lo
ip -n gw link set gw0 up
mkdir -p /run/uplinkd-test
cat >/etc/config/mwan3 <<'EOF'
config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan1'
	option enabled '1'
	option device 'wan1'
	option gateway '192.0.2.1'
	list track_ip '203.0.113.1'
	option interval '1'
	option timeout '1'
	option down '2'
	option up '2'

config member 'wan1_m1'
	option interface 'wan1'
	option metric '1'

config policy 'wan1_only'
	list use_member 'wan1_m1'
	option last_resort 'default'

config rule 'default_rule'
	option dest_ip '0.0.0.0/0'
	option use_policy 'wan1_only'
EOF
cp /etc/config/mwan3 /run/uplinkd-test/mwan3.good
cat >/etc/mwan3.user <<'EOF'
#!/bin/sh
# vmtest/deb/guest_systemd.sh: records each event, and whether the sandbox lets it write /etc.
if touch /etc/uplinkd-hook-probe 2>/dev/null; then w=etc-writable; else w=etc-read-only; fi
echo "$ACTION $INTERFACE $DEVICE $w" >>/run/uplinkd-test/hook.log
EOF
chmod 755 /etc/mwan3.user

# ---- boot, then start ------------------------------------------------------------------------------
# The package enabled the unit: it started at boot, on the example configuration (both uplinks
# disabled: it tracks nothing and reroutes nothing).
if [[ $(show ActiveState) == active && $(show UnitFileState) == enabled ]] && uplinkctl status >/dev/null 2>&1; then
  ok "enabled at install, started at boot on the example /etc/config/mwan3: active, '$(show StatusText)'"
else
  bad "at boot: $(show UnitFileState), $(show ActiveState)/$(show SubState)"
  journal 20
fi
timeout 60 systemctl stop uplinkd.service
t0=$SECONDS
if ! timeout 120 systemctl start uplinkd.service; then
  bad "systemctl start uplinkd failed"
  systemctl status uplinkd.service --no-pager -n 0
  journal 40
  finish
fi
pid=$(show MainPID)
if [[ $(show ActiveState)/$(show SubState) == active/running && $(show Type) == notify ]]; then
  ok "systemctl start: active (running) once READY=1 came ($((SECONDS - t0)) s, MainPID $pid, status '$(show StatusText)')"
else
  bad "after start: $(show ActiveState)/$(show SubState)"
fi
if wait_for $((20 * scale / 5 + 10)) wan1_online && xdp_on_wan1; then
  ok "under the unit's sandbox and capability set: wan1 online, its XDP program attached"
else
  bad "wan1 is '$(wan1_state)', XDP $(xdp_on_wan1 && echo attached || echo missing)"
  journal 40
fi
if [[ -S /run/uplinkd.sock ]]; then ok "control socket /run/uplinkd.sock (ReadWritePaths=/run)"; else bad "no /run/uplinkd.sock"; fi

# The hook: an outage of the gateway's answers makes wan1 disconnected, then connected again.
ip netns exec gw nft -f - <<'EOF' || bad "nft: the outage rule was refused"
table inet outage {
  chain probes {
    type filter hook input priority 0; policy accept;
    icmp type echo-request drop
  }
}
EOF
wait_for 30 hook_saw disconnected || bad "no disconnected hook within 30 s"
ip netns exec gw nft delete table inet outage
wait_for 30 hook_last_is connected || bad "no connected hook within 30 s"
if grep -q 'etc-writable' /run/uplinkd-test/hook.log 2>/dev/null || [[ -e /etc/uplinkd-hook-probe ]]; then
  bad "the hook could write /etc: $(cat /run/uplinkd-test/hook.log)"
elif grep -q '^disconnected wan1 wan1 etc-read-only' /run/uplinkd-test/hook.log; then
  ok "/etc/mwan3.user ran in the sandbox: events $(awk '{print $1}' /run/uplinkd-test/hook.log | paste -sd, -); /run writable, /etc read-only"
else
  bad "hook log: $(cat /run/uplinkd-test/hook.log 2>&1)"
fi
wait_for 20 wan1_online || bad "wan1 not back online"

# The watchdog: systemd records each WATCHDOG=1 (WatchdogSec=30s: uplinkd pets every 15 s).
w0=$(show WatchdogTimestampMonotonic)
if [[ $(show WatchdogUSec) == 30s ]] && wait_for 40 pet_since "$w0"; then
  ok "watchdog: WatchdogSec=30s, a pet seen by systemd"
else
  bad "watchdog: WatchdogUSec=$(show WatchdogUSec), timestamp $w0 -> $(show WatchdogTimestampMonotonic)"
fi

# ---- reload ---------------------------------------------------------------------------------------
if timeout 60 systemctl reload uplinkd.service && [[ $(show MainPID) == "$pid" ]]; then
  ok "systemctl reload (ExecReload=uplinkctl reload): succeeded, same MainPID"
else
  bad "systemctl reload failed ($(show ActiveState))"
  journal 20
fi
printf '\nconfig interface wan9\n\toption reliability banana\n' >>/etc/config/mwan3
if timeout 60 systemctl reload uplinkd.service 2>/dev/null; then
  bad "systemctl reload succeeded with a bad configuration"
elif [[ $(show ActiveState) == active && $(show MainPID) == "$pid" ]] && wan1_online; then
  ok "systemctl reload of a bad configuration fails; the daemon keeps running the old one"
else
  bad "after a refused reload: $(show ActiveState), MainPID $(show MainPID)"
fi
cp /run/uplinkd-test/mwan3.good /etc/config/mwan3

# ---- upgrade: postinst restarts the active unit in place ---------------------------------------
if [[ -f $out/uplinkd.deb ]]; then
  events0=$(wc -l </run/uplinkd-test/hook.log)
  t0=$SECONDS
  dpkg_out=$(timeout 300 dpkg -i "$out/uplinkd.deb" 2>&1)
  rc=$?
  printf '%s\n' "$dpkg_out" | sed 's/^/vmtest-deb:   dpkg| /'
  wait_for 30 running_and_answering
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null)
  if ((rc == 0)) && grep -q 'restarting the running uplinkd in place' <<<"$dpkg_out" &&
    [[ $(show MainPID) == "$pid" && $(show ActiveState) == active && $(show NRestarts) == 0 && $exe == /usr/sbin/uplinkd ]]; then
    ok "upgrade (dpkg -i): postinst restarted the active unit in place: MainPID $pid kept, now the new /usr/sbin/uplinkd, active, NRestarts 0 ($((SECONDS - t0)) s)"
  else
    bad "upgrade: dpkg exit $rc, MainPID $(show MainPID) (was $pid), $(show ActiveState)/$(show SubState), NRestarts $(show NRestarts), exe '$exe'"
    journal 30
  fi
  if wan1_online && xdp_on_wan1 && [[ $(wc -l </run/uplinkd-test/hook.log) == "$events0" ]]; then
    ok "across the upgrade: wan1 stayed online, XDP attached, no hook event"
  else
    bad "after the upgrade: wan1 '$(wan1_state)', hook events: $(tail -n +$((events0 + 1)) /run/uplinkd-test/hook.log | paste -sd, -)"
  fi
fi

# ---- stop --keep-datapath, adopt, crash, stop --------------------------------------------------
uplinkctl stop --keep-datapath >/dev/null
wait_for 20 unit_inactive
sleep 5
if [[ $(show ActiveState) == inactive && $(show Result) == success && $(show NRestarts) == 0 ]] && xdp_on_wan1; then
  ok "uplinkctl stop --keep-datapath: inactive, Result=success, not restarted (5 s), XDP left on wan1"
else
  bad "after stop --keep-datapath: $(show ActiveState), Result=$(show Result), NRestarts=$(show NRestarts)"
fi
timeout 120 systemctl start uplinkd.service
if [[ $(show ActiveState) == active ]] && wait_for 20 wan1_online; then
  ok "systemctl start after it: active, wan1 online ($(journalctl -u uplinkd -o cat --no-pager -n 200 | grep -i -m1 adopt || echo 'no log line on adoption'))"
else
  bad "start after --keep-datapath: $(show ActiveState), wan1 '$(wan1_state)'"
fi
pid=$(show MainPID)
kill -9 "$pid"
if wait_for 30 restarted_from "$pid" &&
  [[ $(show NRestarts) == 1 ]] && wait_for 20 wan1_online; then
  ok "kill -9: Restart=on-failure started a new daemon (MainPID $(show MainPID), NRestarts 1), wan1 online"
else
  bad "after kill -9: MainPID $(show MainPID), $(show ActiveState)/$(show SubState), NRestarts $(show NRestarts)"
fi
timeout 60 systemctl stop uplinkd.service
if [[ $(show ActiveState) == inactive && $(show Result) == success ]] && ! xdp_on_wan1 && [[ ! -e /run/uplinkd.sock ]]; then
  ok "systemctl stop: inactive, Result=success, XDP removed from wan1, socket gone"
else
  bad "after systemctl stop: $(show ActiveState), Result=$(show Result), XDP $(xdp_on_wan1 && echo attached || echo gone)"
fi

# ---- removal stops it ------------------------------------------------------------------------------
timeout 120 systemctl start uplinkd.service
wait_for 20 xdp_on_wan1
rc=0
timeout 300 dpkg -r uplinkd >/dev/null 2>&1 || rc=$?
if ((rc == 0)) && [[ $(show ActiveState) != active ]] && ! xdp_on_wan1 && [[ ! -e /usr/sbin/uplinkd ]]; then
  ok "dpkg -r while it runs: prerm stopped it (XDP removed), binaries gone"
else
  bad "dpkg -r: exit $rc, $(show ActiveState), XDP $(xdp_on_wan1 && echo attached || echo gone)"
fi
finish
