"""Finding TLS libraries in /proc/PID/maps, naming static TLS, hooking each
library file once, and saying once per process what is visible."""

from __future__ import annotations

import os
from pathlib import Path

from ebpf_tracer.tls import TlsWatcher, classify
from ebpf_tracer.tls.libs import embedded_tls, host_path, parse_maps

ELF = b"\x7fELF" + bytes(60)


def fake_proc(tmp: Path, pid: int, files: list[str], root: str = "/") -> Path:
    proc = tmp / "proc"
    d = proc / str(pid)
    d.mkdir(parents=True)
    lines = []
    for i, f in enumerate(files):
        lines.append(f"7f{i:04x}000-7f{i:04x}fff r--p 00000000 fe:00 {i} {f}")
        lines.append(f"7f{i:04x}f00-7f{i:04x}fff r-xp 00001000 fe:00 {i} {f}")
    lines.append("7fff0000-7fff1000 rw-p 00000000 00:00 0 [stack]")
    (d / "maps").write_text("\n".join(lines) + "\n")
    (d / "comm").write_text("app\n")
    os.symlink(root, d / "root")
    return proc


def test_parse_maps_keeps_files_and_executable_ones() -> None:
    text = ("55-56 r--p 0 fe:00 1 /usr/bin/x\n55-56 r-xp 0 fe:00 1 /usr/bin/x\n"
            "57-58 r--p 0 fe:00 2 /lib/libssl.so.3 (deleted)\n59-5a rw-p 0 00:00 0 [heap]\n"
            "5b-5c rw-p 0 00:00 0\n")
    files, execs = parse_maps(text)
    assert files == ["/usr/bin/x", "/lib/libssl.so.3"]
    assert execs == ["/usr/bin/x"]


def test_libssl_found_and_static_tls_named(tmp_path: Path) -> None:
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(ELF)
    grpc = tmp_path / "cygrpc.cpython-311-x86_64-linux-gnu.so"
    grpc.write_bytes(ELF + b"...BoringSSL..." + bytes(100))
    plain = tmp_path / "libfoo.so"
    plain.write_bytes(ELF + b"nothing here")
    proc = fake_proc(tmp_path, 42, [str(lib), str(grpc), str(plain)])
    st = classify(42, str(proc))
    assert st is not None
    assert [x.path for x in st.visible] == [str(lib)]
    assert [(x.path, x.kind) for x in st.invisible] == [
        (str(grpc), "grpcio's statically linked BoringSSL")]
    text = st.describe()
    assert "TLS visible through OpenSSL libssl.so.3" in text
    assert "NOT visible through grpcio's statically linked BoringSSL" in text


def test_embedded_tls_kinds(tmp_path: Path) -> None:
    cases = {
        "go": (ELF + b"\xff Go buildinf:" + b"crypto/tls.(*Conn).Read", "Go crypto/tls"),
        "gonotls": (ELF + b"\xff Go buildinf:", None),
        "rust": (ELF + b"rustls::conn", "rustls"),
        "node": (ELF + b"OpenSSL 3.0.13 ... SSL_CTX_new", "statically linked OpenSSL"),
        "text": (b"#!/bin/sh\nBoringSSL", None),  # not ELF
    }
    for name, (content, want) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        assert embedded_tls(str(p)) == want, name


def test_dynamic_openssl_user_is_not_called_static(tmp_path: Path) -> None:
    """nginx names OpenSSL's version strings but calls the shared libssl."""
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(ELF)
    exe = tmp_path / "nginx"
    exe.write_bytes(ELF + b"built with OpenSSL 3.0.2 SSL_CTX_new")
    st = classify(7, str(fake_proc(tmp_path, 7, [str(exe), str(lib)])))
    assert st is not None and st.invisible == [] and len(st.visible) == 1


def test_container_paths_go_through_proc_root(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "libssl.so.1.1").write_bytes(ELF)
    proc = fake_proc(tmp_path, 9, ["/lib/libssl.so.1.1"], root=str(root))
    assert host_path(9, "/lib/libssl.so.1.1", str(proc)) == f"{proc}/9/root/lib/libssl.so.1.1"
    st = classify(9, str(proc))
    assert st is not None and st.visible[0].host_path == f"{proc}/9/root/lib/libssl.so.1.1"
    assert os.path.exists(st.visible[0].host_path)


def test_gone_process() -> None:
    assert classify(2**22 + 77) is None


def test_watcher_hooks_each_file_once_and_reports_once(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(ELF)
    proc = tmp_path / "proc"
    for pid in (1, 2):
        fake_proc(tmp_path / str(pid), pid, [str(lib)])
        os.makedirs(proc, exist_ok=True)
        os.symlink(tmp_path / str(pid) / "proc" / str(pid), proc / str(pid))
    calls: list[str] = []
    w = TlsWatcher(attach=lambda p: calls.append(p) or 4, proc=str(proc))
    caplog.set_level("INFO", logger="ebpf_tracer.tls.watcher")
    w.scan(1)
    w.scan(2)
    w.scan(1)
    assert calls == [str(lib)]
    said = [r.getMessage() for r in caplog.records if "TLS visible" in r.getMessage()]
    assert len(said) == 2 and said[0].startswith("pid 1 (app)")


def test_watcher_rescans_after_exec(tmp_path: Path) -> None:
    """After exec the loader maps libssl a moment later: rescans catch it."""
    proc = fake_proc(tmp_path, 5, [])
    lib = tmp_path / "libssl.so.3"
    lib.write_bytes(ELF)
    calls: list[str] = []
    w = TlsWatcher(attach=lambda p: calls.append(p) or 4, proc=str(proc))
    w.on_exec(5, now=100.0)
    assert calls == []
    (proc / "5" / "maps").write_text(f"7f-80 r-xp 0 fe:00 1 {lib}\n")
    w.tick(now=100.01)
    assert calls == []  # not due yet
    w.tick(now=100.06)
    assert calls == [str(lib)]
    w.tick(now=200.0)
    assert not w._due


def test_other_shared_tls_libraries_are_named_not_visible(tmp_path: Path) -> None:
    libs = {"libgnutls.so.30": "GnuTLS", "libnss3.so": "NSS", "libssl3.so": "NSS",
            "libwolfssl.so.35": "wolfSSL", "libmbedtls.so.14": "mbed TLS",
            "libjvm.so": "Java's TLS (JSSE)"}
    paths = []
    for name in libs:
        p = tmp_path / name
        p.write_bytes(ELF)
        paths.append(str(p))
    proc = fake_proc(tmp_path, 43, paths)
    st = classify(43, str(proc))
    assert st is not None and not st.visible
    assert [(os.path.basename(x.path), x.kind) for x in st.invisible] == list(libs.items())
    assert "TLS NOT visible through GnuTLS in" in st.describe()
