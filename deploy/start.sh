#!/bin/sh
# Container entrypoint: make kernel headers for the *host's* kernel visible at
# /lib/modules/$(uname -r)/build (where BCC looks), then exec the agent.
#
# The DaemonSet mounts the host's /lib/modules and /usr/src read-only under
# /host; /lib/modules in the container is a writable emptyDir. Host symlinks
# (build -> /usr/src/linux-headers-...) are absolute host paths, so they are
# resolved under /host here. Without host headers, the image's packaged
# Debian headers are used, and we say so.
set -eu

HOST_ROOT="${EBPF_TRACER_HOST_ROOT:-/host}"
KREL="${EBPF_TRACER_KERNEL_RELEASE:-$(uname -r)}"
MODDIR="${EBPF_TRACER_MODULES_DIR:-/lib/modules}/$KREL"
PACKAGED="${EBPF_TRACER_PACKAGED_HEADERS:-/opt/ebpf-tracer/packaged-headers}"

log() { echo "ebpf-tracer: $*" >&2; }

# Print the host path a /host/... symlink points to, as seen from here.
host_target() {
    link="$1"
    [ -e "$link" ] || [ -L "$link" ] || return 1
    if [ -L "$link" ]; then
        t="$(readlink "$link")"
        case "$t" in
            /*) t="$HOST_ROOT$t" ;;
            *) t="$(dirname "$link")/$t" ;;
        esac
    else
        t="$link"
    fi
    [ -d "$t/include" ] || [ -d "$t/arch" ] || return 1
    echo "$t"
}

link_headers() {  # build-dir [source-dir]
    mkdir -p "$MODDIR" 2>/dev/null || true
    if ! ln -sfn "$1" "$MODDIR/build" 2>/dev/null; then
        log "cannot write $MODDIR (mount an emptyDir at /lib/modules); trying as is"
        return 0
    fi
    if [ -n "${2:-}" ]; then ln -sfn "$2" "$MODDIR/source"; fi
}

if [ -d "$MODDIR/build/include" ]; then
    log "kernel headers for $KREL: $MODDIR/build"
elif build="$(host_target "$HOST_ROOT/lib/modules/$KREL/build")"; then
    source="$(host_target "$HOST_ROOT/lib/modules/$KREL/source" || true)"
    link_headers "$build" "$source"
    log "kernel headers for $KREL: the host's ($build)"
elif [ -d "$HOST_ROOT/usr/src/linux-headers-$KREL" ]; then
    link_headers "$HOST_ROOT/usr/src/linux-headers-$KREL"
    log "kernel headers for $KREL: the host's $HOST_ROOT/usr/src/linux-headers-$KREL"
else
    arch_dir="$(grep -v -- '-common$' "$PACKAGED" 2>/dev/null | tail -1 || true)"
    common_dir="$(grep -- '-common$' "$PACKAGED" 2>/dev/null | tail -1 || true)"
    if [ -n "$arch_dir" ] && [ -d "$arch_dir" ]; then
        link_headers "$arch_dir" "$common_dir"
        log "no kernel headers for $KREL on this node (looked in $HOST_ROOT/lib/modules and" \
            "$HOST_ROOT/usr/src); falling back to the image's packaged $(basename "$arch_dir")." \
            "If loading fails, install linux-headers-$KREL on the node."
    else
        log "no kernel headers for $KREL on the node or in the image; loading will fail." \
            "Install linux-headers-$KREL on the node (see docs/kubernetes.md)."
    fi
fi

exec "${EBPF_TRACER_BIN:-ebpf-tracer}" "$@"
