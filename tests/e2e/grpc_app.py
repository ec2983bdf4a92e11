"""A small gRPC service and client (grpcio, raw bytes: no codegen needed).

Run as `python grpc_app.py serve PORT` or `python grpc_app.py call PORT`; the
client waits for a file named by GO (if set) before calling, so a test can
attach the tracer first.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent import futures

import grpc

SERVICE = "helloworld.Greeter"


def _say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request.startswith(b"big:"):  # big:N: a response of N bytes
        return b"r" * int(request[4:].split(b":", 1)[0])
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")
    if request == b"slow":
        time.sleep(2)
    return b"hello " + request


def _list(request: bytes, context: grpc.ServicerContext):  # noqa: ANN202
    for i in range(3):
        yield f"{request.decode()} {i}".encode()


def _collect(requests, context: grpc.ServicerContext) -> bytes:  # noqa: ANN001
    return b"got %d" % sum(1 for _ in requests)


def _chat(requests, context: grpc.ServicerContext):  # noqa: ANN001, ANN202
    for r in requests:
        yield b"echo " + r


def serve(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handlers = {
        "SayHello": grpc.unary_unary_rpc_method_handler(_say_hello),
        "ListGreetings": grpc.unary_stream_rpc_method_handler(_list),
        "CollectGreetings": grpc.stream_unary_rpc_method_handler(_collect),
        "Chat": grpc.stream_stream_rpc_method_handler(_chat),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def call(port: int) -> None:
    go = os.environ.get("GO")
    while go and not os.path.exists(go):
        time.sleep(0.01)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        m = f"/{SERVICE}/"
        assert ch.unary_unary(m + "SayHello")(b"world", timeout=10) == b"hello world"
        assert len(list(ch.unary_stream(m + "ListGreetings")(b"hi", timeout=10))) == 3
        assert ch.stream_unary(m + "CollectGreetings")(iter([b"a", b"b"]), timeout=10) == b"got 2"
        assert len(list(ch.stream_stream(m + "Chat")(iter([b"x", b"y"]), timeout=10))) == 2
        try:
            ch.unary_unary(m + "SayHello")(b"missing", timeout=10)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND
        fut = ch.unary_unary(m + "SayHello").future(b"slow", timeout=10)
        time.sleep(0.5)
        fut.cancel()
        time.sleep(0.5)
    print("done", flush=True)
    time.sleep(float(os.environ.get("LINGER", "0")))


def big(port: int) -> None:
    """Large messages (HEADERS, DATA and more frames in one syscall) and concurrent
    calls on one new channel; then small calls whose headers HPACK indexes."""
    go = os.environ.get("GO")
    while go and not os.path.exists(go):
        time.sleep(0.01)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        m = f"/{SERVICE}/"
        hello = ch.unary_unary(m + "SayHello")
        for n in (40_000, 100_000):  # request and response of n bytes
            assert len(hello(b"big:%d:" % n + b"q" * n, timeout=10)) == n
        futs = [hello.future(b"big:%d:" % (50_000 + i) + b"q" * (60_000 + i), timeout=10)
                for i in range(8)]
        assert [len(f.result()) for f in futs] == [50_000 + i for i in range(8)]
        chat = ch.stream_stream(m + "Chat")
        assert len(list(chat(iter([b"x" * 70_000, b"y" * 45_000]), timeout=10))) == 2
        for _ in range(3):
            assert hello(b"small", timeout=10) == b"hello small"
    print("done", flush=True)
    time.sleep(float(os.environ.get("LINGER", "0")))


if __name__ == "__main__":
    {"serve": serve, "call": call, "big": big}[sys.argv[1]](int(sys.argv[2]))
