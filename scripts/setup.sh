#!/usr/bin/env bash
# Idempotent setup for a fresh Debian machine: system packages, kernel headers,
# tracefs, and a .venv with ebpf-tracer installed in editable mode.
# Safe to run again: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "setup: run as root (or install sudo): system packages and kernel mounts need it" >&2
        exit 1
    fi
fi

# System packages: BCC and its Python module, kernel headers, and the real
# servers/clients the end-to-end tests and the demo drive (iproute2: `ip netns`).
PKGS="bpfcc-tools python3-bpfcc linux-headers-amd64 nginx-light wrk curl nghttp2-client nghttp2-server nodejs openssl iproute2"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# nodejs may come from elsewhere (e.g. a preinstalled /usr/bin/node): accept it.
if command -v node >/dev/null; then missing="${missing/ nodejs/}"; fi
if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Kernel headers: BCC looks in /lib/modules/$(uname -r)/build. When the running
# kernel has no packaged headers, point it at Debian's generic ones (the eBPF
# programs read only tracepoint arguments, whose layout comes from tracefs).
KREL="$(uname -r)"
if [ ! -e "/lib/modules/$KREL/build/include" ]; then
    H="$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1 || true)"
    C="$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1 || true)"
    if [ -z "$H" ] || [ -z "$C" ]; then
        echo "setup: no kernel headers under /usr/src; install linux-headers-amd64" >&2
        exit 1
    fi
    echo "setup: no headers for kernel $KREL; using $H (see DEVELOPERS.md)"
    $SUDO mkdir -p "/lib/modules/$KREL"
    $SUDO ln -sfn "$H" "/lib/modules/$KREL/build"
    $SUDO ln -sfn "$C" "/lib/modules/$KREL/source"
fi

# tracefs and debugfs: BCC attaches tracepoints through them.
mountpoint -q /sys/kernel/tracing || $SUDO mount -t tracefs nodev /sys/kernel/tracing || true
mountpoint -q /sys/kernel/debug || $SUDO mount -t debugfs nodev /sys/kernel/debug || true

# Python: a 3.11+ interpreter for the venv (pyenv's or the system's).
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            PY="$(command -v "$cand")"; break
        fi
    done
fi
[ -n "$PY" ] || { echo "setup: need Python 3.11+ (apt-get install python3)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
SITE="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# BCC's Python module is pure Python over libbcc.so: link just that package in.
BCC_SRC=""
for d in /usr/lib/python3/dist-packages/bcc /usr/lib/python3*/site-packages/bcc; do
    [ -d "$d" ] && { BCC_SRC="$d"; break; }
done
[ -n "$BCC_SRC" ] || { echo "setup: BCC's Python module not found; apt-get install python3-bpfcc" >&2; exit 1; }
ln -sfn "$BCC_SRC" "$SITE/bcc"

STAMP=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -e "$STAMP" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$STAMP"
fi
.venv/bin/python -c 'import bcc, ebpf_tracer' || { echo "setup: the venv cannot import bcc" >&2; exit 1; }
# Arize Phoenix, the real OTLP backend of the export tests, in its own venv.
bash scripts/setup-phoenix.sh
echo "setup: ok (.venv/bin/ebpf-tracer)"
