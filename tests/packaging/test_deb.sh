#!/usr/bin/env bash
# The Debian package, end to end:
#   a. builds the amd64 .deb (scripts/build-deb.sh), or takes UPLINKD_DEB, and checks its contents,
#      its maintainer scripts (shellcheck) and, when lintian is installed, prints lintian's view;
#   c. installs it with its dependencies into a fresh Debian root (mmdebstrap, cached) and checks
#      there: the three commands run, /etc/config/mwan3 comes from the example and passes
#      --check-config, the unit is enabled; an upgrade keeps an edited configuration; purge;
#      then the bad input: a root with mwan3's files refuses the package, with a message naming
#      them, and nothing of uplinkd is left;
#   b. `systemd-analyze verify` of the unit inside that root (its ExecStart binaries are the
#      package's, at their installed paths), with a broken copy that must fail to show it checks;
#   d. boots that root in two VMs (vmtest/deb/run, virtme-ng, Debian's 6.12 kernel under TCG):
#      - with virtme-ng's init, the lab's failover scenario (tests/integration/test_stale_flows.sh:
#        an outage of the primary detected, the hook run, its TCP flows reset, conntrack entries
#        deleted, UDP moved to the backup) with /usr/sbin/uplinkd and /usr/sbin/uplinkctl;
#      - with systemd as init, uplinkd.service as installed: started at boot (enabled), start on a
#        real uplink (XDP attached under the bounded capabilities and the sandbox), the hook in the
#        sandbox, the watchdog, reload (good and refused), an upgrade whose postinst restarts the
#        active unit in place, stop --keep-datapath (not restarted), adoption, kill -9 (restarted),
#        stop, and dpkg -r stopping it.
#      test_stale_flows rather than test_outage_detection: the latter's detection bound (4.8 s) is
#      not stretched by UL_TIME_SCALE, and measured 4.6 s and 5.2 s under TCG here (pass, fail).
#
#   tests/packaging/test_deb.sh
#
# Environment: UPLINKD_DEB=path.deb (skip the build), UPLINKD_DEB_JOBS (build jobs, default 2),
# UPLINKD_DEB_BUILD_TIMEOUT (default 1800 s),
# UPLINKD_DEB_VM=0 (leave out d), UPLINKD_DEB_VM_KERNEL (default 6.12), UPLINKD_DEB_VM_SCRIPTS
# (default test_stale_flows.sh), UPLINKD_DEB_VM_TIMEOUT (both VMs, default 1500 s),
# UPLINKD_DEB_CACHE (default vmtest/.cache/deb: the cached base root), UPLINKD_DEB_KEEP=1 (keep the
# temporary directory). Exit status: 0 passed, 1 failed, 77 skipped (a tool or the host's Debian
# archive cannot be had; "SKIP: reason"). Needs root (mmdebstrap --mode=root, chroot, the VM).
# The host's network and root namespace are not touched: the lab runs inside the VM.
#
# Single-quoted ${...} and $(...) below are dpkg-query's and apt's formats, or for an inner sh.
# shellcheck disable=SC2016
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/../.." && pwd -P)

checks=0
timings=()
step_name=""
step_t0=0
pass() {
  checks=$((checks + 1))
  echo "test_deb: PASS: $*"
}
info() { echo "test_deb:   $*"; }
indent() { sed "s/^/test_deb:   ${1:-}| /"; }
warn() { echo "test_deb: WARN: $*"; }
fail() {
  echo "test_deb: FAIL: $*" >&2
  exit 1
}
skip() {
  echo "SKIP: $*"
  exit 77
}
step() {
  step_end
  step_name=$1
  step_t0=$SECONDS
  echo "test_deb: ==== $step_name"
}
step_end() {
  if [[ -n $step_name ]]; then
    timings+=("$(printf '%-40s %4d s' "$step_name" $((SECONDS - step_t0)))")
    step_name=""
  fi
}

((EUID == 0)) || skip "needs root (mmdebstrap --mode=root, chroot, the VM)"
[[ $(uname -m) == x86_64 && $(dpkg --print-architecture 2>/dev/null) == amd64 ]] ||
  skip "builds and installs the amd64 package: needs an amd64 Debian host"
for t in dpkg-deb sha256sum unshare chroot timeout flock; do
  command -v "$t" >/dev/null || skip "needs '$t'"
done

tmp=$(mktemp -d /tmp/uplinkd-test-deb.XXXXXX)
t_all=$SECONDS
cleanup() {
  local rc=$?
  set +e
  step_end
  if ((${#timings[@]})); then
    echo "test_deb: timings:"
    printf 'test_deb:   %s\n' "${timings[@]}"
    echo "test_deb:   $(printf '%-40s %4d s' total $((SECONDS - t_all)))"
  fi
  if [[ -n ${UPLINKD_DEB_KEEP:-} ]] || ((rc != 0 && rc != 77)); then
    echo "test_deb: kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "test_deb: interrupted"; exit 130' INT
trap 'echo "test_deb: terminated"; exit 143' TERM

# apt_install PKG...: installs host packages that are missing (a test tool, not the package).
apt_install() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "test_deb: installing ${missing[*]} on the host"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq || true
  timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# in_root ROOT CMD...: runs CMD chrooted in ROOT with /proc and /dev, in a private mount
# namespace (the mounts go with it), in a clean environment.
in_root() {
  local root=$1
  shift
  unshare --mount --fork -- sh -c '
    r=$1; shift
    mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" || exit 125
    exec chroot "$r" "$@"' sh "$root" \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

# The host's Debian mirrors, as vmtest/run finds them (apt's index targets), for the roots.
# shellcheck source=/dev/null
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[[ -n $codename ]] || skip "cannot tell the Debian release of this host (/etc/os-release)"
host_targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null | sort -u)
archive_uri=$(awk -v r="$codename" '$2 == r { print $1; exit }' <<<"$host_targets")
security_uri=$(awk -v r="$codename-security" '$2 == r { print $1; exit }' <<<"$host_targets")

# ---------------------------------------------------------------------------------------------
# a. the package
# ---------------------------------------------------------------------------------------------
step "a. build the .deb"
if [[ -n ${UPLINKD_DEB:-} ]]; then
  deb=$(realpath "$UPLINKD_DEB")
  [[ -f $deb ]] || fail "UPLINKD_DEB=$UPLINKD_DEB is no file"
  info "using $deb (UPLINKD_DEB)"
else
  rc=0
  timeout --kill-after=30 "${UPLINKD_DEB_BUILD_TIMEOUT:-1800}" \
    "$repo/scripts/build-deb.sh" --arch amd64 --out "$tmp/deb" --jobs "${UPLINKD_DEB_JOBS:-2}" >"$tmp/build-deb.out" || rc=$?
  cat "$tmp/build-deb.out"
  ((rc != 77)) || skip "scripts/build-deb.sh cannot build here (reason above)"
  ((rc != 124)) || fail "scripts/build-deb.sh --arch amd64 did not finish within ${UPLINKD_DEB_BUILD_TIMEOUT:-1800} s"
  ((rc == 0)) || fail "scripts/build-deb.sh --arch amd64 failed (exit $rc, output above)"
  deb=$(grep -m1 '/uplinkd_[^/]*_amd64\.deb$' "$tmp/build-deb.out") || fail "build-deb.sh printed no uplinkd_*_amd64.deb"
fi
version=$(dpkg-deb -f "$deb" Version)
upstream_version=${version%-*}
pass "package $(basename "$deb"): uplinkd $version, $(du -k "$deb" | cut -f1) KiB"

step "a. contents and scripts"
# "mode path" or "mode path -> target", one a line
dpkg-deb -c "$deb" | awk '{ s = $1 " " $6; if ($7 == "->") s = s " -> " $8; print s }' >"$tmp/contents"
have() { grep -qxE -e "$1" "$tmp/contents" || { cat "$tmp/contents"; fail "the package has no $2"; }; }
have '-rwxr-xr-x \./usr/sbin/uplinkd' "/usr/sbin/uplinkd (executable)"
have '-rwxr-xr-x \./usr/sbin/uplinkctl' "/usr/sbin/uplinkctl (executable)"
have 'l[rwx-]+ \./usr/sbin/mwan3 -> uplinkctl' "/usr/sbin/mwan3 -> uplinkctl"
have '-rw-r--r-- \./(usr/)?lib/systemd/system/uplinkd\.service' "uplinkd.service"
have '-rw-r--r-- \./usr/share/doc/uplinkd/examples/mwan3' "/usr/share/doc/uplinkd/examples/mwan3"
pass "contents: /usr/sbin/{uplinkd,uplinkctl}, /usr/sbin/mwan3 -> uplinkctl, the unit, the example"
unit_path=$(grep -oE '\./(usr/)?lib/systemd/system/uplinkd\.service' "$tmp/contents")
unit_path=${unit_path#.}
if grep -E '/(bpf|uplinkd)/.*\.bpf\.o$|uplinkd-test-variant|_tests$|_bench$' "$tmp/contents"; then
  fail "the package carries build or test files (above)"
fi
pass "no test binaries, benchmarks or separate BPF objects in it"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libbpf1 libxdp1 libsystemd0; do
  [[ $depends == *"$lib"* ]] || fail "Depends has no $lib (built without it?): $depends"
done
pass "Depends (from shlibs): $depends"

mkdir -p "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
for s in preinst postinst prerm postrm; do
  [[ -x $tmp/control/$s ]] || fail "the package has no $s"
  head -n 1 "$tmp/control/$s" | grep -qx '#!/bin/sh' || fail "$s is not a /bin/sh script"
done
if command -v shellcheck >/dev/null; then
  shellcheck -s sh "$tmp/control/preinst" "$tmp/control/postinst" "$tmp/control/prerm" "$tmp/control/postrm" ||
    fail "shellcheck finds fault with the maintainer scripts (above)"
  pass "preinst, postinst, prerm, postrm: POSIX sh, shellcheck clean"
else
  warn "no shellcheck: maintainer scripts not checked"
fi
if command -v lintian >/dev/null; then
  echo "test_deb: lintian (printed, not fatal):"
  timeout 300 lintian --fail-on none --display-info -i "$deb" 2>&1 | indent || true
else
  info "lintian is not installed: skipped (apt-get install lintian)"
fi

# ---------------------------------------------------------------------------------------------
# c. a Debian root to install it in (cached), and the installation
# ---------------------------------------------------------------------------------------------
step "c. base root (mmdebstrap, cached)"
apt_install mmdebstrap
[[ -n $archive_uri ]] || skip "the host's apt sources have no $codename archive to make a root from"
sources=$(
  echo "deb $archive_uri $codename main"
  echo "deb $archive_uri $codename-updates main"
  [[ -z $security_uri ]] || echo "deb $security_uri $codename-security main"
)
# What the VM's guest needs (virtme-ng's init: bash, util-linux, kmod, udev, busybox-static; the
# lab: iproute2, nftables, ping, nsenter, python3, procps...), systemd and systemd-sysv (systemctl,
# the unit's targets, deb-systemd-helper, /sbin/init for the VM booted with systemd), and the
# package's own dependencies, so that installing it needs
# no download and the cached root serves every run.
root_pkgs=(
  systemd systemd-sysv iproute2 nftables conntrack iputils-ping procps python3 bash util-linux mount kmod udev
  busybox-static mawk gawk bpftool ethtool
)
mapfile -t dep_pkgs < <(tr ',' '\n' <<<"$depends" | sed 's/|.*//; s/(.*)//; s/:any//; s/ //g' | grep .)
layout_version=1
all_pkgs=$(printf '%s\n' "${root_pkgs[@]}" "${dep_pkgs[@]}" | sort -u | paste -sd, -)
key=$({ echo "$sources"; echo "$codename"; echo "$all_pkgs"; echo "$layout_version"; } | sha256sum | cut -c1-16)
cache=${UPLINKD_DEB_CACHE:-$repo/vmtest/.cache/deb}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)
base=$cache/root-$key
exec {base_lock}>"$cache/root.lock"
flock -x "$base_lock"
if [[ -e $base/.complete ]]; then
  info "cached: $base ($(wc -w <<<"${all_pkgs//,/ }") packages)"
else
  rm -rf "$base" "$base.tmp"
  info "making $base: mmdebstrap --variant=minbase $codename, $(wc -w <<<"${all_pkgs//,/ }") packages and their dependencies"
  timeout 1800 mmdebstrap --mode=root --variant=minbase --format=directory --include="$all_pkgs" \
    --aptopt='Acquire::Retries "3"' "$codename" "$base.tmp" - <<<"$sources" >"$tmp/mmdebstrap.log" 2>&1 ||
    { tail -n 30 "$tmp/mmdebstrap.log"; skip "mmdebstrap could not make a $codename root from $archive_uri (log above)"; }
  # Mount points the VM binds (vmtest/deb/run): the repository, the run's output.
  mkdir -p "$base.tmp/uplinkd-src" "$base.tmp/vmtest/out" "$base.tmp/usr/lib/modules"
  echo "$all_pkgs" >"$base.tmp/.packages"
  touch "$base.tmp/.complete"
  mv "$base.tmp" "$base"
  for old in "$cache"/root-*; do
    [[ $old != "$base" && -d $old ]] && rm -rf "$old"
  done
  info "made in $((SECONDS - step_t0)) s, $(du -sh "$base" | cut -f1)"
fi
pass "base root $codename ($(du -sh "$base" | cut -f1)): $base"

# new_root NAME: a fresh copy of the base root.
new_root() {
  local r=$tmp/$1
  cp -a "$base" "$r"
  rm -f "$r/.complete"
  echo "$r"
}

step "c. install into a fresh root"
root=$(new_root root)
flock -u "$base_lock"
cp "$deb" "$root/tmp/uplinkd.deb"
in_root "$root" dpkg-query -W -f='${Package}\n' >"$tmp/pkgs.before"
rc=0
in_root "$root" apt-get install -y --no-install-recommends -o Debug::pkgProblemResolver=0 /tmp/uplinkd.deb \
  >"$tmp/install.out" 2>&1 || rc=$?
indent <"$tmp/install.out"
((rc == 0)) || fail "apt-get install ./$(basename "$deb") failed in a fresh $codename root (exit $rc, above)"
in_root "$root" dpkg-query -W -f='${Package}\n' >"$tmp/pkgs.after"
status=$(in_root "$root" dpkg-query -W -f='${db:Status-Abbrev}' uplinkd)
[[ $status == "ii " ]] || fail "uplinkd's status after the installation is '$status', not 'ii'"
pass "apt-get install of the .deb into a fresh root: installed (ii), with $(($(wc -l <"$tmp/pkgs.after") - $(wc -l <"$tmp/pkgs.before"))) package(s) added"

step "c. checks in the root"
out=$(in_root "$root" /usr/sbin/uplinkd --version 2>&1) || fail "uplinkd --version failed: $out"
[[ $out == *"$upstream_version"* ]] || fail "uplinkd --version says '$out', the package is $version"
pass "/usr/sbin/uplinkd --version: $out"
out=$(in_root "$root" /usr/sbin/uplinkctl --help 2>&1) || fail "uplinkctl --help failed: $out"
grep -q 'uplinkctl' <<<"$out" || fail "uplinkctl --help does not look like uplinkctl's: $out"
pass "/usr/sbin/uplinkctl --help runs ($(wc -l <<<"$out") lines)"
rc=0
out=$(in_root "$root" /usr/sbin/mwan3 2>&1) || rc=$?
grep -q 'Syntax: mwan3 \[command\]' <<<"$out" ||
  fail "/usr/sbin/mwan3 with no arguments (exit $rc) does not print mwan3's help (Syntax: mwan3 [command]): $out"
pass "/usr/sbin/mwan3 with no arguments prints mwan3's help (Syntax: mwan3 [command]; exit $rc)"
cmp -s "$root/etc/config/mwan3" "$root/usr/share/doc/uplinkd/examples/mwan3" ||
  fail "/etc/config/mwan3 is not the example $(ls -l "$root/etc/config/mwan3" 2>&1)"
[[ $(stat -c '%a %U' "$root/etc/config/mwan3") == "644 root" ]] || fail "/etc/config/mwan3 is $(stat -c '%a %U' "$root/etc/config/mwan3")"
pass "/etc/config/mwan3 installed from /usr/share/doc/uplinkd/examples/mwan3 (0644 root)"
out=$(in_root "$root" /usr/sbin/uplinkd --check-config 2>&1) || fail "uplinkd --check-config on the installed /etc/config/mwan3 failed: $out"
pass "uplinkd --check-config: $out"
out=$(systemctl --root="$root" is-enabled uplinkd.service 2>&1) || true
[[ $out == enabled ]] || fail "systemctl --root is-enabled uplinkd.service: '$out'"
[[ -L $root/etc/systemd/system/multi-user.target.wants/uplinkd.service ]] || fail "no multi-user.target.wants link"
pass "uplinkd.service is enabled (multi-user.target.wants)"
[[ ! -e $root/run/uplinkd.sock ]] || fail "something started uplinkd in the root"
grep -q 'uplinkd: installed an example /etc/config/mwan3' "$tmp/install.out" || fail "postinst did not say it installed the example"
pass "postinst said what to do with the example; nothing was started"

# ---------------------------------------------------------------------------------------------
# b. systemd-analyze verify, in the root with the package installed
# ---------------------------------------------------------------------------------------------
step "b. systemd-analyze verify"
command -v systemd-analyze >/dev/null || apt_install systemd
command -v systemd-analyze >/dev/null || skip "no systemd-analyze on the host"
# --root: units, ExecStart binaries (/usr/sbin/uplinkd, /usr/sbin/uplinkctl, /bin/sh) and the
# targets are looked up in the root. --man=no: there is no man database in the root.
rc=0
out=$(systemd-analyze verify --man=no --root="$root" uplinkd.service 2>&1) || rc=$?
[[ -z $out ]] || indent <<<"$out"
((rc == 0)) || fail "systemd-analyze verify uplinkd.service: exit $rc (above)"
! grep -q 'uplinkd' <<<"$out" || fail "systemd-analyze verify has something to say about uplinkd.service (above)"
pass "systemd-analyze verify --root uplinkd.service: clean ($unit_path, its commands from the package)"
# The checker checks: a copy whose ExecStart names a binary the root has not, and one with a
# misspelt directive, must be refused.
sed 's|^ExecStart=/usr/sbin/uplinkd |ExecStart=/usr/sbin/uplinkd-missing |' "$root$unit_path" >"$root/etc/systemd/system/uplinkd-broken.service"
sed 's|^WatchdogSec=|WatchdogSecs=|' "$root$unit_path" >"$root/etc/systemd/system/uplinkd-typo.service"
rc=0
out=$(systemd-analyze verify --man=no --root="$root" uplinkd-broken.service 2>&1) || rc=$?
if ((rc == 0)) || ! grep -q 'uplinkd-missing' <<<"$out"; then
  fail "verify did not refuse a missing ExecStart binary (exit $rc: $out)"
fi
out=$(systemd-analyze verify --man=no --root="$root" uplinkd-typo.service 2>&1) || true
grep -q 'WatchdogSecs' <<<"$out" || fail "verify said nothing of a misspelt directive: $out"
rm -f "$root/etc/systemd/system/uplinkd-broken.service" "$root/etc/systemd/system/uplinkd-typo.service"
pass "verify refuses a copy with a missing ExecStart binary and reports a misspelt directive"
if out=$(systemd-analyze security --offline=true --root="$root" uplinkd.service 2>&1); then
  info "systemd-analyze security: $(grep -m1 'Overall exposure' <<<"$out" || echo "${out##*$'\n'}")"
fi

# ---------------------------------------------------------------------------------------------
# c. upgrade, purge, and the bad input: mwan3's files present
# ---------------------------------------------------------------------------------------------
step "c. upgrade keeps an edited config"
printf '\n# edited by test_deb\n' >>"$root/etc/config/mwan3"
sum_edited=$(sha256sum <"$root/etc/config/mwan3")
rc=0
in_root "$root" dpkg -i /tmp/uplinkd.deb >"$tmp/upgrade.out" 2>&1 || rc=$?
indent <"$tmp/upgrade.out"
((rc == 0)) || fail "installing the package again (an upgrade: postinst configure $version) failed"
[[ $(sha256sum <"$root/etc/config/mwan3") == "$sum_edited" ]] || fail "the upgrade changed the edited /etc/config/mwan3"
[[ $(systemctl --root="$root" is-enabled uplinkd.service 2>&1) == enabled ]] || fail "the upgrade disabled the unit"
pass "reinstall (postinst configure with the old version): edited /etc/config/mwan3 kept, unit still enabled"

step "c. bad input: mwan3 present"
bad=$(new_root bad)
mkdir -p "$bad/etc/init.d"
for f in /usr/sbin/mwan3track /etc/init.d/mwan3 /usr/sbin/mwan3; do
  printf '#!/bin/sh\n# a stand-in for mwan3 (test_deb)\n' >"$bad$f"
  chmod 755 "$bad$f"
done
sums_before=$(cd "$bad" && sha256sum usr/sbin/mwan3track etc/init.d/mwan3 usr/sbin/mwan3)
cp "$deb" "$bad/tmp/uplinkd.deb"
in_root "$bad" dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\n' >"$tmp/bad.before"
# refused_install WHAT CMD...: CMD must fail, naming the three files, and leave nothing of uplinkd.
refused_install() {
  local what=$1 rc=0 status f audit
  shift
  in_root "$bad" "$@" >"$tmp/bad.out" 2>"$tmp/bad.err" || rc=$?
  ((rc != 0)) || { cat "$tmp/bad.out" "$tmp/bad.err"; fail "$what: the package installed although mwan3's files are present"; }
  case $what in
    dpkg*) indent "stderr" <"$tmp/bad.err" ;;
    # apt-get passes dpkg's output, the maintainer scripts' stderr too, to its standard output.
    *) cat "$tmp/bad.out" "$tmp/bad.err" >"$tmp/bad.both" && mv "$tmp/bad.both" "$tmp/bad.err" && grep -E '^uplinkd:|^E:|^dpkg' "$tmp/bad.err" | indent ;;
  esac
  grep -q 'uplinkd: refusing to install' "$tmp/bad.err" || fail "$what: no 'refusing to install'"
  for f in /usr/sbin/mwan3track /etc/init.d/mwan3 '/usr/sbin/mwan3 (not from any package)'; do
    grep -qF "uplinkd:   $f" "$tmp/bad.err" || fail "$what: the message does not name $f"
  done
  # dpkg -i leaves the selection "install" with the status "not-installed" (dpkg-query: "in ").
  status=$(in_root "$bad" dpkg-query -W -f='${db:Status-Status}' uplinkd 2>/dev/null || true)
  [[ -z $status || $status == not-installed ]] || fail "$what: uplinkd's status after the refusal is '$status'"
  for f in /usr/sbin/uplinkd /usr/sbin/uplinkctl "$unit_path" /etc/config/mwan3 /var/lib/uplinkd \
    /usr/share/doc/uplinkd /etc/systemd/system/multi-user.target.wants/uplinkd.service; do
    [[ ! -e $bad$f ]] || fail "$what: $f exists after the refused installation"
  done
  [[ $(cd "$bad" && sha256sum usr/sbin/mwan3track etc/init.d/mwan3 usr/sbin/mwan3) == "$sums_before" ]] ||
    fail "$what: the refused installation changed mwan3's files"
  in_root "$bad" dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\n' | grep -v '^uplinkd ' >"$tmp/bad.after"
  diff "$tmp/bad.before" "$tmp/bad.after" >/dev/null || fail "$what: the package database changed: $(diff "$tmp/bad.before" "$tmp/bad.after")"
  audit=$(in_root "$bad" dpkg --audit 2>&1) || true
  [[ -z $audit ]] || fail "$what: dpkg --audit after the refusal: $audit"
  pass "$what: refused (exit $rc) naming /usr/sbin/mwan3track, /etc/init.d/mwan3, /usr/sbin/mwan3; nothing of uplinkd left (not-installed, no file, no other package changed, dpkg --audit clean), mwan3's files untouched"
}
refused_install "dpkg -i (message on stderr)" dpkg -i /tmp/uplinkd.deb
refused_install "apt-get install ./uplinkd.deb" apt-get install -y --no-install-recommends /tmp/uplinkd.deb

step "c. install after mwan3 is gone; purge"
rm -f "$bad/usr/sbin/mwan3track" "$bad/etc/init.d/mwan3" "$bad/usr/sbin/mwan3"
in_root "$bad" dpkg -i /tmp/uplinkd.deb >"$tmp/bad2.out" 2>&1 || { cat "$tmp/bad2.out"; fail "install after removing mwan3's files failed"; }
in_root "$bad" dpkg --purge uplinkd >"$tmp/purge1.out" 2>&1 || { cat "$tmp/purge1.out"; fail "dpkg --purge failed"; }
for f in /usr/sbin/uplinkd /usr/sbin/uplinkctl /usr/sbin/mwan3 "$unit_path" /etc/config/mwan3 /var/lib/uplinkd \
  /etc/systemd/system/multi-user.target.wants/uplinkd.service; do
  [[ ! -e $bad$f && ! -L $bad$f ]] || fail "$f is left after the purge"
done
pass "installs once mwan3's files are gone; purge removes everything, the unchanged example config too"
in_root "$bad" dpkg -i /tmp/uplinkd.deb >/dev/null 2>&1 || fail "reinstall failed"
echo "# mine" >>"$bad/etc/config/mwan3"
in_root "$bad" dpkg --purge uplinkd >"$tmp/purge2.out" 2>&1 || { cat "$tmp/purge2.out"; fail "dpkg --purge failed"; }
grep -qx '# mine' "$bad/etc/config/mwan3" 2>/dev/null || fail "purge removed an edited /etc/config/mwan3"
grep -q 'keeping /etc/config/mwan3' "$tmp/purge2.out" || fail "purge did not say it kept the edited config"
pass "purge keeps an edited /etc/config/mwan3 and says so"
rm -rf "$bad"

# ---------------------------------------------------------------------------------------------
# d. the installed binaries run the lab's failover scenario inside a VM
# ---------------------------------------------------------------------------------------------
if [[ ${UPLINKD_DEB_VM:-1} == 0 ]]; then
  info "the VM part is left out (UPLINKD_DEB_VM=0)"
else
  step "d. VMs: lab; the unit under systemd"
  rc=0
  "$repo/vmtest/deb/run" --root "$root" --deb "$deb" --src "$repo" --kernel "${UPLINKD_DEB_VM_KERNEL:-6.12}" \
    --scripts "${UPLINKD_DEB_VM_SCRIPTS:-test_stale_flows.sh}" --out "$tmp/vm" \
    --timeout "${UPLINKD_DEB_VM_TIMEOUT:-1500}" || rc=$?
  case $rc in
    0)
      while IFS= read -r k; do
        pass "VM: $k"
      done < <(sed -n 's/^check=//p' "$tmp/vm/summary")
      ;;
    77) warn "the VM part could not run here (reason above): not counted" ;;
    *) fail "the VM part failed (exit $rc; output above, files in $tmp/vm)" ;;
  esac
fi

step_end
echo "test_deb: $checks checks passed"
