# Helpers shared by the hardware lab's scripts (sourced, not run).
# shellcheck shell=bash

hwlab_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
hwlab_dir="$hwlab_repo/scripts/hwlab"
hwlab_cache="${HWLAB_CACHE:-$hwlab_repo/.cache/hwlab}"
hwlab_suite="${HWLAB_SUITE:-bookworm}"
# The mirror the host's apt uses (so a host set up for a local mirror or proxy keeps using it).
hwlab_mirror="${HWLAB_MIRROR:-http://deb.debian.org/debian}"

hwlab_t0="${hwlab_t0:-$(date +%s.%N)}"
export hwlab_t0

# "[  12.34s] message" on stderr: every phase of the lab is timed from the command's start.
say() { printf '[%8.2fs] %s\n' "$(awk -v s="$hwlab_t0" -v e="$(date +%s.%N)" 'BEGIN{print e-s}')" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
# Seconds since a timestamp taken with `date +%s.%N`.
since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}'; }

# sha256 over files and strings: the cache key of a build. Any change to a listed input rebuilds.
cache_key() {
    local item
    for item in "$@"; do
        if [[ -f "$item" ]]; then sha256sum <"$item"; else printf '%s\n' "$item"; fi
    done | sha256sum | cut -c1-16
}

# debootstrap from Debian's package, unpacked under .cache (nothing installed on the host).
debootstrap_bin() {
    local dir="$hwlab_cache/debootstrap"
    mkdir -p "$hwlab_cache"
    exec 8>"$hwlab_cache/debootstrap.lock"; flock 8
    if [[ ! -x "$dir/usr/sbin/debootstrap" ]]; then
        local dl; dl="$(mktemp -d)"
        (cd "$dl" && apt-get download -q debootstrap >/dev/null 2>&1) || die "apt-get download debootstrap failed (run apt-get update?)"
        rm -rf "$dir"; mkdir -p "$dir"
        dpkg-deb -x "$dl"/debootstrap_*.deb "$dir"
        rm -rf "$dl"
    fi
    exec 8>&-
    echo "$dir/usr/sbin/debootstrap"
}

# Run a command in a chroot with /proc, /sys, /dev and /dev/pts mounted, inside a private mount
# namespace so that none of these mounts is ever visible on (or left behind on) the host.
# Usage: in_chroot ROOT COMMAND...
in_chroot() {
    local root="$1"; shift
    unshare --mount --propagation private -- /bin/sh -c '
        root="$1"; shift
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs tmpfs "$root/run"
        # HWLAB_BIND: host directories that appear at the same path inside the chroot.
        for d in ${HWLAB_BIND:-}; do mkdir -p "$root$d"; mount --bind "$d" "$root$d"; done
        exec chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
    ' in_chroot "$root" "$@"
}

# A minbase Debian tree at ROOT with PACKAGES (comma-separated) installed by apt inside it.
# Built into ROOT.tmp and renamed, so an interrupted build never looks finished.
build_debian_root() {
    local root="$1" packages="$2" debootstrap
    debootstrap="$(debootstrap_bin)"
    rm -rf "$root.tmp"; mkdir -p "$root.tmp"
    DEBOOTSTRAP_DIR="$hwlab_cache/debootstrap/usr/share/debootstrap" \
        "$debootstrap" --variant=minbase "$hwlab_suite" "$root.tmp" "$hwlab_mirror" >"$root.debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $root.debootstrap.log"
    # No service starts inside the build chroot.
    printf '#!/bin/sh\nexit 101\n' >"$root.tmp/usr/sbin/policy-rc.d"; chmod 0755 "$root.tmp/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$root.tmp/etc/resolv.conf"
    # The host's CA bundle: this machine may reach the registries through a TLS-inspecting proxy.
    cp /etc/ssl/certs/ca-certificates.crt "$root.tmp/etc/hwlab-host-ca.crt"
    in_chroot "$root.tmp" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $(tr ',' ' ' <<<"$packages")" \
        >"$root.apt.log" 2>&1 || die "apt-get install in $root.tmp failed, see $root.apt.log"
}
