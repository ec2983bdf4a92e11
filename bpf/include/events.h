/* Wire structs between the eBPF programs and the agent.
 *
 * This header is the one definition; ebpf_tracer/events.py is its one Python
 * mirror (sizes checked by tests/unit/test_events.py). Every struct has
 * explicit padding so its layout is the same for clang-bpf and Python.
 */
#ifndef EBPF_TRACER_EVENTS_H
#define EBPF_TRACER_EVENTS_H

/* Event types: the first byte of every ring-buffer record. */
#define EVT_DATA 1       /* bytes read or written on a traced connection */
#define EVT_OPEN 2       /* accept/connect completed: role and addresses */
#define EVT_CLOSE 3      /* close() of a traced connection */
#define EVT_PROC_EXIT 4  /* a traced process exited */
#define EVT_PROC_EXEC 5  /* a traced process exec'd a new program */

/* Direction, from the traced process's point of view. */
#define DIR_INGRESS 0 /* read by the process */
#define DIR_EGRESS 1  /* written by the process */

/* Kinds of syscall entry the exit tracepoint finds stashed (args_t.kind). */
#define K_PLAIN 1  /* read/write/recvfrom/sendto: buf */
#define K_IOV 2    /* readv/writev: iov, iovcnt */
#define K_MSG 3    /* recvmsg/sendmsg: msghdr */
#define K_MMSG 4   /* recvmmsg/sendmmsg: mmsghdr vector */
#define K_SENDFILE 5

/* Roles (ebpf_tracer.model.Role). */
#define ROLE_UNKNOWN 0
#define ROLE_CLIENT 1
#define ROLE_SERVER 2

/* Protocols inferred from the first bytes (ebpf_tracer.events.Proto). */
#define PROTO_UNKNOWN 0
#define PROTO_HTTP1 1
#define PROTO_HTTP2 2
#define PROTO_NONE 255 /* not a protocol we trace: stop looking */

/* Event flags. */
#define EVF_NOCOPY 1   /* payload never copied (sendfile) */
#define EVF_EXISTING 2 /* connection opened before the tracer saw it */
#define EVF_HTTP2 4    /* connection inferred as HTTP/2 (else HTTP/1) */
#define EVF_TLS 8      /* plaintext from a TLS library probe */
#define EVF_SEGMENTS 16 /* payload is segments (struct seg_hdr + bytes), see below */

/* Per-CPU counters (index into the `counters` array; the agent reads them by
 * these names, lowercased without CNT_). */
#define CNT_RINGBUF_LOST 0      /* records the ring buffer had no room for */
#define CNT_DATA_EVENTS 1       /* data records submitted */
#define CNT_CONNS_OPENED 2      /* accept/connect seen on traced processes */
#define CNT_BYTES_NOT_COPIED 3  /* payload bytes beyond the copy windows */
#define CNT_NOT_HTTP 4          /* connections decided not HTTP */
#define CNT_H2_BYTES_SKIPPED 5  /* HTTP/2 DATA payload bytes the frame walk skipped */
#define CNT_H2_WALKS_LOST 6     /* HTTP/2 directions that fell back to head+tail */
#define CNT_OWN_TRAFFIC_CONNS 7 /* the agent's own exports, never traced */
#define CNT_COUNT 8

struct event_hdr {
    __u8 type;       /* EVT_* */
    __u8 direction;  /* DIR_* (EVT_DATA) */
    __u8 role;       /* ROLE_* */
    __u8 flags;      /* EVF_* */
    __u32 pid;       /* tgid */
    __u32 tid;
    __s32 fd;
    __u64 generation; /* with pid+fd, names one connection */
    __u64 ts_ns;      /* CLOCK_MONOTONIC at syscall exit */
    __u64 pos;        /* byte position of the first byte in this direction */
    __u32 len;        /* true byte count of the syscall */
    __u32 copied;     /* payload bytes that follow this header (head + tail) */
    __u32 tail;       /* of which the last `tail` are the syscall's last bytes */
    __u32 _reserved;
}; /* 56 bytes */

/* EVF_SEGMENTS (HTTP/2 connections the kernel walks frame by frame): the record
 * covers stream bytes [pos, pos + len) and its `copied` payload bytes are
 * segments, each this header then `len` bytes: `skip` stream bytes that were
 * not copied (DATA payloads), then `len` bytes that were. Stream bytes after
 * the last segment were not copied either. `tail` is 0. A syscall may give
 * several such records, in order, with consecutive positions. */
struct seg_hdr {
    __u32 skip;
    __u32 len;
}; /* 8 bytes */

/* EVT_OPEN: the header then this. Addresses in network byte order. */
struct open_info {
    __u16 family;     /* AF_INET, AF_INET6, or 0 when the syscall gave none */
    __u16 peer_port;  /* host byte order */
    __s32 listen_fd;  /* accept: the listening fd; connect: -1 */
    __u8 peer_addr[16];
    char comm[16];    /* the process's comm: its name if it exits before the agent looks */
}; /* 40 bytes */

#endif
