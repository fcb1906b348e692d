#!/usr/bin/env bash
# Builds uplinkd's Debian package (debian/) and prints the paths of the .deb files it made.
#
#   scripts/build-deb.sh [--arch amd64|arm64] [--out DIR] [--ref GITREF] [--jobs N]
#
# --arch   the package's architecture (default: the host's). The host's own architecture is built
#          on the host with dpkg-buildpackage; missing Build-Depends are installed first with
#          `apt-get build-dep` (as scripts/install-deps.sh does for the project). arm64 on an amd64
#          host is a Debian cross build (`dpkg-buildpackage -aarm64 -Pcross,nocheck`) inside a
#          cached amd64 build root with arm64 as a foreign architecture, made by mmdebstrap from
#          the host's own Debian mirrors: the host's apt configuration is not changed (no
#          `dpkg --add-architecture`), and the root is made once per Build-Depends and reused.
# --out    where the .deb files go (default: build-deb/<arch> in the repository; /build* is
#          ignored by git). The last lines of the output are the .deb paths, the package first.
# --ref    build the files of a git commit instead of the working tree (tracked and untracked,
#          not ignored, files); its debian/ is used, else the working tree's.
# --jobs   parallel compile jobs (default: the number of CPUs).
#
# The build runs in a temporary copy of the tree under TMPDIR (never in the repository, never in
# build/), removed at the end. Environment: UPLINKD_DEB_CACHE (default vmtest/.cache/deb: the
# cross build roots), UPLINKD_DEB_KEEP=1 (keep the temporary copy, its path is printed).
# Exit status: 0 built, 1 failed, 2 usage, 77 cannot be built here (reason printed).
# Needs root for apt-get and the cross build root (mmdebstrap --mode=root, chroot).
#
# Single-quoted $(...) and $1 below are apt's formats, or for an inner sh.
# shellcheck disable=SC2016
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo=$(cd "$here/.." && pwd -P)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
}
log() { echo "build-deb: $*" >&2; }
die() {
  echo "build-deb: $*" >&2
  exit 1
}
skip() {
  echo "build-deb: SKIP: $*" >&2
  exit 77
}

host_arch=$(dpkg --print-architecture)
arch=$host_arch
out=""
ref=""
jobs=$(nproc)
while (($#)); do
  case $1 in
    --arch) arch=${2:?}; shift 2 ;;
    --arch=*) arch=${1#*=}; shift ;;
    --out) out=${2:?}; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --ref) ref=${2:?}; shift 2 ;;
    --ref=*) ref=${1#*=}; shift ;;
    --jobs | -j) jobs=${2:?}; shift 2 ;;
    --jobs=*) jobs=${1#*=}; shift ;;
    -h | --help) usage ;;
    *) echo "build-deb: unknown argument: $1" >&2; usage ;;
  esac
done
case $arch in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
esac
case $arch in amd64 | arm64) ;; *) echo "build-deb: --arch is amd64 or arm64" >&2; exit 2 ;; esac
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "build-deb: --jobs takes a number" >&2; exit 2; }
out=${out:-$repo/build-deb/$arch}
mkdir -p "$out"
out=$(cd "$out" && pwd -P)
((EUID == 0)) || skip "needs root (apt-get build-dep; the cross build root is made with mmdebstrap --mode=root)"
command -v dpkg-buildpackage >/dev/null || skip "no dpkg-buildpackage (apt-get install dpkg-dev)"

t_all=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/uplinkd-deb.XXXXXX")
cleanup() {
  if [[ -n ${UPLINKD_DEB_KEEP:-} ]]; then
    log "kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# ---- the source tree: a copy, so nothing is written into the repository -------------------------
src_parent=$work/src
mkdir -p "$src_parent/tree"
src=$src_parent/tree
if [[ -n $ref ]]; then
  git -C "$repo" rev-parse --verify -q "$ref^{commit}" >/dev/null || die "--ref $ref is no commit of $repo"
  git -C "$repo" archive --format=tar "$ref" | tar -x -C "$src"
  if [[ ! -d $src/debian ]]; then
    log "$ref has no debian/: using the working tree's"
    cp -a "$repo/debian" "$src/debian"
  fi
  what="$ref ($(git -C "$repo" rev-parse --short "$ref"))"
elif git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  # Tracked and untracked files that git does not ignore, as they are on disk now (so the build
  # directories, vmtest's cache and virtualenv stay out).
  git -C "$repo" ls-files -z -c -o --exclude-standard |
    (cd "$repo" && while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done) |
    tar -C "$repo" --null -T - -cf - | tar -x -C "$src"
  what="the working tree ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo ', with changes'))"
else
  tar -C "$repo" --exclude='./build*' --exclude=./.cache --exclude=./vmtest/.cache --exclude=./vmtest/.venv -cf - . |
    tar -x -C "$src"
  what="the directory $repo"
fi
[[ -f $src/debian/control && -f $src/debian/changelog ]] || die "no debian/ in $what"
version=$(cd "$src" && dpkg-parsechangelog -S Version)
pkg_dir=$src_parent/uplinkd-$version
mv "$src" "$pkg_dir"
src=$pkg_dir
log "uplinkd $version for $arch from $what"

buildpackage_args=(-b -uc -us "-j$jobs")

# Prints the .deb files dpkg-buildpackage left in DIR (the package first, then its dbgsym).
collect_debs() {
  local dir=$1 f
  local -a debs=()
  for f in "$dir"/uplinkd_"$version"_"$arch".deb "$dir"/uplinkd-dbgsym_"$version"_"$arch".deb "$dir"/uplinkd-dbgsym_"$version"_"$arch".ddeb; do
    [[ -f $f ]] && debs+=("$f")
  done
  ((${#debs[@]})) || die "dpkg-buildpackage made no uplinkd_${version}_$arch.deb (files: $(ls "$dir"))"
  cp "${debs[@]}" "$out/"
  for f in "${debs[@]}"; do echo "$out/${f##*/}"; done
}

# The binaries in the package must be for its architecture (a cross build that silently built for
# the host would otherwise pass).
check_elf_arch() {
  local deb=$1 x want f desc
  case $arch in amd64) want='x86-64' ;; arm64) want='ARM aarch64' ;; esac
  x=$work/check
  rm -rf "$x"
  dpkg-deb -x "$deb" "$x"
  for f in usr/sbin/uplinkd usr/sbin/uplinkctl; do
    [[ -f $x/$f ]] || die "${deb##*/} has no /$f"
    desc=$(file -b "$x/$f")
    [[ $desc == *"$want"* ]] || die "${deb##*/}: /$f is not $want: $desc"
    log "/$f: $desc"
  done
  rm -rf "$x"
}

# ---- native: on the host -----------------------------------------------------------------------
build_native() {
  if ! (cd "$src" && dpkg-checkbuilddeps) 2>"$work/builddeps"; then
    log "$(sed 's/^dpkg-checkbuilddeps: error: //' "$work/builddeps"): installing them (apt-get build-dep)"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq || log "apt-get update failed; trying with the lists there are"
    timeout 1200 apt-get build-dep -y -qq --no-install-recommends "$src" >"$work/build-dep.log" 2>&1 ||
      { cat "$work/build-dep.log" >&2; die "apt-get build-dep failed (output above)"; }
  fi
  log "dpkg-buildpackage ${buildpackage_args[*]} (log: $work/build.log)"
  local t0=$SECONDS
  if ! (cd "$src" && dpkg-buildpackage "${buildpackage_args[@]}") >"$work/build.log" 2>&1; then
    tail -n 60 "$work/build.log" >&2
    UPLINKD_DEB_KEEP=1
    die "dpkg-buildpackage failed (the end of its log is above; all of it in $work/build.log)"
  fi
  log "built in $((SECONDS - t0)) s"
}

# ---- cross: in a cached amd64 build root with arm64 added ---------------------------------------
# The host's Debian mirrors (as vmtest/run finds them), for the build root's apt.
host_sources() {
  local codename targets archive security
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ -n $codename ]] || skip "cannot tell the Debian release of this host (/etc/os-release)"
  targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Created-By: Packages' 2>/dev/null | sort -u)
  archive=$(awk -v r="$codename" '$2 == r { print $1; exit }' <<<"$targets")
  security=$(awk -v r="$codename-security" '$2 == r { print $1; exit }' <<<"$targets")
  [[ -n $archive ]] || skip "the host's apt sources have no $codename archive to make the cross build root from"
  echo "deb $archive $codename main"
  echo "deb $archive $codename-updates main"
  [[ -z $security ]] || echo "deb $security $codename-security main"
}

# Makes (once) and prints the build root for cross-building to $arch.
cross_root() {
  local cache base key root sources codename build_deps layout_version=2
  cache=${UPLINKD_DEB_CACHE:-$repo/vmtest/.cache/deb}
  mkdir -p "$cache"
  cache=$(cd "$cache" && pwd -P)
  sources=$(host_sources)
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  # The source paragraph's Build-Depends: a change there means a new root.
  build_deps=$(sed -n '/^Build-Depends:/,/^[^ #]/p' "$src/debian/control" | sed '$d' | grep -v '^#')
  key=$({ echo "$sources"; echo "$codename $arch"; echo "$build_deps"; echo "$layout_version"; } | sha256sum | cut -c1-16)
  base=$cache/xbuild-$arch
  root=$base-$key
  exec {root_lock}>"$base.lock"
  flock -x "$root_lock"
  if [[ ! -e $root/.complete ]]; then
    command -v mmdebstrap >/dev/null || {
      log "installing mmdebstrap"
      DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
        skip "mmdebstrap is missing and could not be installed (apt-get install mmdebstrap)"
    }
    rm -rf "$root" "$root.tmp"
    mkdir -p "$work/ctl/debian"
    cp "$src/debian/control" "$work/ctl/debian/control"
    log "making the $arch cross build root $root (mmdebstrap --variant=buildd, amd64 + $arch; once per Build-Depends)"
    local t0=$SECONDS
    # build-dep -a: the Build-Depends for the host architecture $arch, the :native ones for amd64.
    # Then what sbuild adds to a cross build: the C and C++ libraries for $arch (the cross
    # compiler's own copies under /usr/aarch64-linux-gnu are not in dpkg's database, so
    # dpkg-shlibdeps could not find libstdc++.so.6).
    timeout 1800 mmdebstrap --mode=root --variant=buildd --architectures="amd64,$arch" \
      --include="crossbuild-essential-$arch,debhelper,file" \
      --aptopt='Acquire::Retries "3"' \
      --customize-hook="mkdir -p \"\$1/tmp/ctl\"" \
      --customize-hook="copy-in $work/ctl/debian /tmp/ctl" \
      --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q --no-install-recommends -a $arch -P cross,nocheck /tmp/ctl" \
      --customize-hook="chroot \"\$1\" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libc6-dev:$arch libstdc++-\$(gcc -dumpversion | cut -d. -f1)-dev:$arch'" \
      --customize-hook="rm -rf \"\$1/tmp/ctl\"" \
      "$codename" "$root.tmp" - <<<"$sources" >"$work/mmdebstrap.log" 2>&1 ||
      { tail -n 40 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed making the cross build root (end of its log above)"; }
    touch "$root.tmp/.complete"
    mv "$root.tmp" "$root"
    log "cross build root ready in $((SECONDS - t0)) s ($(du -sh "$root" | cut -f1))"
    local old
    for old in "$base"-*; do
      [[ $old != "$root" && $old != "$root".* && -d $old ]] && rm -rf "$old" "$old.build.lock"
    done
  fi
  flock -u "$root_lock"
  echo "$root"
}

build_cross() {
  [[ $host_arch == amd64 ]] || skip "cross builds are made on an amd64 host (this one is $host_arch)"
  local root bdir t0
  root=$(cross_root)
  # One build at a time per root; each in its own directory in it.
  exec {build_lock}>"$root.build.lock"
  flock -x "$build_lock"
  bdir=/build/$$
  rm -rf "${root:?}/build"
  mkdir -p "$root$bdir"
  cp -a "$src" "$root$bdir/"
  log "dpkg-buildpackage ${buildpackage_args[*]} -a$arch -Pcross,nocheck in $root (log: $work/build.log)"
  t0=$SECONDS
  # A private mount namespace: /proc and /dev for the build, gone with it.
  if ! unshare --mount --fork -- sh -c '
      root=$1; shift
      mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" || exit 1
      exec chroot "$root" "$@"' sh "$root" \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEB_BUILD_OPTIONS="nocheck parallel=$jobs" \
    sh -c "cd $bdir/${src##*/} && dpkg-buildpackage ${buildpackage_args[*]} -a$arch -Pcross,nocheck" \
    >"$work/build.log" 2>&1; then
    tail -n 60 "$work/build.log" >&2
    cp "$work/build.log" "$out/build-$arch.log"
    die "the cross build failed (the end of its log is above; all of it in $out/build-$arch.log)"
  fi
  log "cross-built in $((SECONDS - t0)) s"
  collect_debs "$root$bdir" >"$work/debs"
  rm -rf "${root:?}/build"
  flock -u "$build_lock"
}

if [[ $arch == "$host_arch" ]]; then
  build_native
  collect_debs "$src_parent" >"$work/debs"
else
  build_cross
fi
mapfile -t debs <"$work/debs"
check_elf_arch "${debs[0]}"
log "done in $((SECONDS - t_all)) s; packages in $out:"
printf '%s\n' "${debs[@]}"
