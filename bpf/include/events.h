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
#define EVT_H1_RESP 6    /* an HTTP/1 response the kernel framed itself: h1_resp_info */

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
#define EVF_H1_REQ 32   /* exactly one whole HTTP/1 GET/HEAD request head: see h1_resp_info */

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
#define CNT_H1_EXCHANGES 8      /* HTTP/1 responses framed in the kernel (EVT_H1_RESP) */
#define CNT_COUNT 9

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

/* HTTP/1 exchanges the kernel frames itself (server side of connections it
 * saw accepted, plain sockets). A request read that is exactly one GET or HEAD
 * head goes out whole with EVF_H1_REQ. If the response's first write holds its
 * whole head, with a status >= 200 and a Content-Length (or none needed: 204,
 * 304, HEAD), no response bytes are sent at all: its body writes are counted,
 * and when the last body byte is written one EVT_H1_RESP record says what the
 * agent's parser would have found. Anything else (another method, a split or
 * pipelined request, chunked or close-delimited responses, 1xx, a write beyond
 * the body) and the connection goes back to a record per syscall for good,
 * at a message boundary, so the agent's parser takes over in step.
 *
 * A held-back request comes with its response in the same record: one record
 * per simple exchange.
 *
 * EVT_H1_RESP: the header (ts_ns: the last response byte written; pos, len:
 * the response's stream bytes in the egress direction) then this. */
struct h1_resp_info {
    __u64 start_ns;  /* the response's first write */
    __u64 body;      /* body bytes written (the Content-Length, unless partial) */
    __u32 head_len;  /* response head bytes, blank line included */
    __u16 status;
    __u8 minor;      /* HTTP/1.minor */
    __u8 partial;    /* body ended early: 1 closed, 2 framing broke (more bytes, a request) */
    /* The request, when the kernel held it back to send with its response (a
     * head of at most H1_HOLD bytes): its read's time, stream position and
     * length; its req_copied bytes follow this struct. 0 copied: the request
     * came before as an EVF_H1_REQ record. */
    __u64 req_ts;
    __u64 req_pos;
    __u32 req_len;
    __u32 req_copied;
}; /* 48 bytes */

#endif
