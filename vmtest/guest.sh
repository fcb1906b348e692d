#!/usr/bin/env bash
# Runs INSIDE the virtme-ng guest that vmtest/run boots; not meant to be started by hand.
#
#   guest.sh SUITE OUT_DIR [GTEST_FILTER | LAB_SCRIPTS]
#
# SUITE is bpf, netns, all or lab. OUT_DIR/bin holds the host's snapshot of the build (bpf_tests,
# netns_tests, bpf/*.bpf.o, prog_info; for lab: uplinkd, uplinkctl), taken by vmtest/run so that a
# rebuild on the host during the run changes nothing here. The lab suite runs integration scripts
# of tests/integration against that uplinkd: by default LAB_DEFAULT_SCRIPTS below (the scenarios
# this host cannot run: kernel WireGuard, nft flowtables, PPPoE), or the space-separated script names of
# the 3rd argument instead (e.g. "test_wireguard_kernel.sh test_policy"). Words of the form
# NAME=value in it go into the scripts' environment instead (e.g. "STALE_RUNS=hygiene
# test_stale_flows", or "LIBXDP_SKIP_DISPATCHER=1" alone: the default scripts with that setting). The guest sees the host's root read-only (9p), so those binaries run
# against the host's shared libraries. OUT_DIR is the one directory shared read-write: this script
# writes key=value results to OUT_DIR/summary and each suite's log beside it. Everything is
# printed to stdout as well, so a failure is visible in the host's output.
# The exit status (0 = all passed) is what virtme-ng hands back to vmtest/run.
set -u

suite=$1
out=$2
bin=$out/bin
filter=${3:-}
prog_info=$bin/prog_info  # vmtest/prog_info.c; without it, bpftool's JSON (no verified_insns)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

summary=$out/summary
put() { printf '%s=%s\n' "$1" "$2" >>"$summary"; }
kver=$(uname -r)

if [[ -z ${VMTEST_CHROOTED:-} ]]; then
  read -r uptime_at_start _ </proc/uptime
  : >"$summary"
  echo "vmtest: guest $kver up after ${uptime_at_start}s (kernel uptime), $(nproc) CPUs," \
    "$(awk '/^MemTotal/ {printf "%d MiB", $2 / 1024}' /proc/meminfo)"
  put kernel "$kver"
  put guest_uptime_at_start "$uptime_at_start"

  # bpffs for the verifier report (bpftool pins there); the tests themselves pin nothing.
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

  # Modules the tests and the later WireGuard/flow-offload tests need. The kernel autoloads most
  # of them on first use; loading them up front makes a missing one visible here. veth and
  # nf_tables are what the current suites need, the rest is reported only. ppp_generic and pppoe
  # must be loaded here: the lab's scripts run in a chroot of the host's root, whose modprobe
  # does not find this kernel's modules (test_pppoe.sh skips without them).
  loaded=() missing=()
  for m in veth tun sch_ingress cls_bpf nf_tables nft_ct nf_conntrack nf_flow_table nf_flow_table_inet wireguard \
    ppp_generic pppoe; do
    if modprobe -q "$m" 2>/dev/null; then loaded+=("$m"); else missing+=("$m"); fi
  done
  echo "vmtest: modules loaded: ${loaded[*]:-none}${missing[*]:+; NOT available: ${missing[*]}}"
  put modules_loaded "${loaded[*]:-}"
  put modules_missing "${missing[*]:-}"

  # virtme-ng mounts the host root over 9p without caching, so every exec reads the binary and
  # its libraries afresh and TCG translates their code again, and the netns tests start hundreds
  # of processes (sh, ip, sysctl): about twice as slow. vmtest/run exports the root a second time
  # (tag vmtest_root); mounted read-only with cache=loose, the page cache keeps those files, and
  # the tests run in a chroot of it. /proc, /sys (with bpffs), /dev, /run, /tmp, /var and OUT_DIR
  # are the guest's own, bound in. Modules needed later are still found: the kernel's modprobe
  # runs in the guest's real root, where virtme-ng linked this kernel's modules.
  if grep -qx vmtest_root /sys/bus/virtio/devices/*/mount_tag 2>/dev/null; then
    croot=/mnt  # an existing directory outside everything bound below
    if mount -t 9p -o ro,version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose vmtest_root "$croot"; then
      for d in proc sys dev run tmp var; do mount --rbind "/$d" "$croot/$d"; done
      mount --bind "$out" "$croot$out"
      put cached_root yes
      VMTEST_CHROOTED=1 exec chroot "$croot" /bin/bash "$0" "$@"
    fi
    echo "vmtest: the cached root did not mount; running on virtme-ng's uncached root"
  fi
  put cached_root no
fi

overall=0

# The lab suite's default scripts, and the factor its time bounds are stretched by under TCG
# (UL_TIME_SCALE, read by the scripts that support it; the others keep their host bounds).
LAB_DEFAULT_SCRIPTS="test_wireguard_kernel.sh test_stale_flows.sh test_pppoe.sh"
LAB_TIME_SCALE=5
LAB_SCRIPT_TIMEOUT=900 # seconds per script; SIGTERM lets the script's trap remove its namespaces

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# run_tests NAME BINARY: runs one gtest binary, prints its output, records counts and status.
run_tests() {
  local name=$1 bin=$2 log=$out/$1.log
  echo "vmtest: ==== $name on $kver ===="
  if [[ ! -x $bin ]]; then
    echo "vmtest: $name: $bin is missing (build it on the host first)"
    put "${name}_status" missing
    overall=1
    return
  fi
  local t0 t1 status
  t0=$(now)
  "$bin" --gtest_color=no ${filter:+"--gtest_filter=$filter"} 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  t1=$(now)
  local passed failed skipped
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" | tail -n 1)
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" | tail -n 1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9][0-9]*\) test.*/\1/p' "$log" | tail -n 1)
  passed=${passed:-0} failed=${failed:-0} skipped=${skipped:-0}
  # A crash (signal, abort) leaves no gtest summary: count it as one failure.
  if ((status != 0 && failed == 0)); then failed=1; fi
  echo "vmtest: $name on $kver: $passed passed, $failed failed, $skipped skipped" \
    "(exit $status, $(elapsed "$t0" "$t1") s)"
  put "${name}_status" "$status"
  put "${name}_passed" "$passed"
  put "${name}_failed" "$failed"
  put "${name}_skipped" "$skipped"
  put "${name}_seconds" "$(elapsed "$t0" "$t1")"
  ((status == 0)) || overall=1
}

# run_lab: runs the lab suite's integration scripts one after the other, each with its output shown
# and saved to OUT_DIR/lab_<name>.log, and records lab_tests_* like run_tests (exit 77 = skipped).
# The repository is the one this script lives in (the chroot starts in /, not in vng's --cwd);
# the scripts write only under /tmp, /run and /var/run, which are the guest's own.
run_lab() {
  local repo scripts="" s b name log t0 t1 t_all status passed=0 failed=0 skipped=0 failed_names=()
  local -a env_words=() words=()
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
  read -r -a words <<<"$filter"
  for s in "${words[@]}"; do
    if [[ $s =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then env_words+=("$s"); else scripts+=" $s"; fi
  done
  scripts=${scripts# }
  scripts=${scripts:-$LAB_DEFAULT_SCRIPTS}
  echo "vmtest: ==== lab_tests on $kver: $scripts (UL_TIME_SCALE=$LAB_TIME_SCALE${env_words[*]:+ ${env_words[*]}}) ===="
  put lab_tests_env "${env_words[*]:-}"
  for b in uplinkd uplinkctl; do
    [[ -x $bin/$b ]] || echo "vmtest: lab_tests: $bin/$b is missing (the scripts will skip)"
  done
  t_all=$(now)
  for s in $scripts; do
    name=${s##*/}
    name=${name%.sh}
    log=$out/lab_$name.log
    echo "vmtest: ---- lab $name on $kver ----"
    t0=$(now)
    if [[ ! -f $repo/tests/integration/$name.sh ]]; then
      echo "vmtest: lab: no tests/integration/$name.sh in $repo" | tee "$log"
      status=127
    else
      env UPLINKD_BUILD="$bin" UPLINKD_SOURCE="$repo" UL_TIME_SCALE="$LAB_TIME_SCALE" "${env_words[@]}" \
        timeout --kill-after=30 "$LAB_SCRIPT_TIMEOUT" bash "$repo/tests/integration/$name.sh" </dev/null 2>&1 | tee "$log"
      status=${PIPESTATUS[0]}
    fi
    t1=$(now)
    case $status in
      0) passed=$((passed + 1)) ;;
      77) skipped=$((skipped + 1)) ;;
      *) failed=$((failed + 1)) failed_names+=("$name") ;;
    esac
    echo "vmtest: lab $name on $kver: exit $status ($(elapsed "$t0" "$t1") s)"
    put "lab_${name}_status" "$status"
    put "lab_${name}_seconds" "$(elapsed "$t0" "$t1")"
  done
  status=$((failed > 0 ? 1 : 0))
  echo "vmtest: lab_tests on $kver: $passed passed, $failed failed, $skipped skipped" \
    "(exit $status, $(elapsed "$t_all" "$(now)") s)"
  # vmtest/run lists a suite's failures from OUT_DIR/<suite>.log in gtest's words.
  {
    grep -h '^lab_' "$summary"
    if ((failed)); then
      echo "[  FAILED  ] $failed tests, listed below:"
      printf '[  FAILED  ] %s\n' "${failed_names[@]}"
    fi
  } >"$out/lab_tests.log"
  put lab_tests_status "$status"
  put lab_tests_passed "$passed"
  put lab_tests_failed "$failed"
  put lab_tests_skipped "$skipped"
  put lab_tests_seconds "$(elapsed "$t_all" "$(now)")"
  ((status == 0)) || overall=1
}

# verifier_report: loads every bpf/*.bpf.o of the build with bpftool (program types come from the SEC
# names: "xdp" -> xdp, "tc" -> sched_cls), prints per program the verifier's processed-instruction
# count (verified_insns, kernel >= 5.16) and the translated length, then unpins. A program this
# kernel refuses fails the run, with bpftool's and the verifier's log printed verbatim.
verifier_report() {
  echo "vmtest: ==== verifier report on $kver ===="
  local obj name pin prog line objs=0
  for obj in "$bin"/bpf/*.bpf.o; do
    [[ -e $obj ]] || continue
    objs=$((objs + 1))
    name=$(basename "$obj" .bpf.o)
    pin=/sys/fs/bpf/vmtest_$name
    rm -rf "$pin"
    if ! bpftool prog loadall "$obj" "$pin" >"$out/load_$name.log" 2>&1; then
      echo "vmtest: verifier: $name: LOAD FAILED on $kver; bpftool and verifier output:"
      cat "$out/load_$name.log"
      put "verifier_$name" "LOAD_FAILED"
      overall=1
      rm -rf "$pin"
      continue
    fi
    for prog in "$pin"/*; do
      if [[ -x $prog_info ]]; then
        line=$("$prog_info" "$prog")
      else
        line=$(bpftool -j prog show pinned "$prog" | python3 -c '
import json, sys
p = json.load(sys.stdin)
vi = p.get("verified_insns")
print("%s %s verified_insns=%s xlated_insns=%d jited_bytes=%s" % (
    p.get("name", "?"), p.get("type", "?"),
    vi if vi is not None else "n/a",
    p.get("bytes_xlated", 0) // 8, p.get("bytes_jited", "n/a")))
')
      fi
      echo "vmtest: verifier: $kver $name/$line"
      put "verifier_$name/${line%% *}" "${line#* }"
    done
    rm -rf "$pin"
  done
  if ((objs == 0)); then
    echo "vmtest: verifier: no BPF objects in the build"
    overall=1
  fi
}

case $suite in
  bpf)
    run_tests bpf_tests "$bin/bpf_tests"
    verifier_report
    ;;
  netns)
    run_tests netns_tests "$bin/netns_tests"
    ;;
  all)
    run_tests bpf_tests "$bin/bpf_tests"
    run_tests netns_tests "$bin/netns_tests"
    verifier_report
    ;;
  lab)
    run_lab
    ;;
  *)
    echo "vmtest: unknown suite $suite"
    overall=2
    ;;
esac

put guest_status "$overall"
echo "vmtest: guest done on $kver, status $overall"
exit "$overall"
