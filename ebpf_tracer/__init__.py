"""ebpf-tracer: zero-instrumentation HTTP tracing with eBPF and OTLP."""

__version__ = "0.1.0"
