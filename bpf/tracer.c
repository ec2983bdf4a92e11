/* ebpf-tracer kernel side: syscall tracepoints only (no kprobes).
 *
 * Capture, tag, submit. Entry tracepoints stash the syscall's arguments by
 * thread; exit tracepoints know the true byte count, find the connection by
 * (tgid, fd), infer its protocol from the first bytes, and submit one
 * ring-buffer record with a bounded copy of the payload.
 *
 * HTTP/2 connections the kernel saw open are walked frame by frame instead
 * (h2_walk): header blocks are always copied whole, DATA payloads skipped.
 *
 * Settings arrive as -D flags from ebpf_tracer/loader.py:
 *   MAX_COPY         payload bytes copied from the start of each syscall (power of two)
 *   TAIL_COPY        and from its end, when it is longer (message ends, trailers)
 *   RINGBUF_PAGES    ring buffer size in pages
 *   MAX_CONNS        tracked connections (LRU)
 *   AGENT_PID        the agent's tgid: never traced
 *   TRACE_ALL        1: every process but the agent; 0: the traced_pids map
 *   KERNEL_HTTP1     1: frame simple HTTP/1 exchanges here (h1_request, h1_response)
 *   EXPECTED_*_SIZE  the Python mirror's struct sizes
 */
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include "events.h"

_Static_assert(sizeof(struct event_hdr) == EXPECTED_HDR_SIZE, "event_hdr differs from events.py");
_Static_assert(sizeof(struct open_info) == EXPECTED_OPEN_SIZE, "open_info differs from events.py");
_Static_assert(sizeof(struct seg_hdr) == EXPECTED_SEG_SIZE, "seg_hdr differs from events.py");
_Static_assert(sizeof(struct h1_resp_info) == EXPECTED_H1_RESP_SIZE, "h1_resp_info differs from events.py");

#define GATHER_PER_CALL 4 /* iovecs walked per run of the gather program */
#define UNKNOWN_TRIES 4 /* data syscalls a new connection gets to look like HTTP */
#define EINPROGRESS 115

/* User ABI structs (stable by definition; not kernel-internal layouts). */
struct u_iovec {
    void *base;
    __u64 len;
};
struct u_msghdr {
    void *name;
    __s32 namelen;
    __u32 _pad;
    struct u_iovec *iov;
    __u64 iovlen;
    void *control;
    __u64 controllen;
    __u32 flags;
    __u32 _pad2;
};
struct u_mmsghdr {
    struct u_msghdr hdr;
    __u32 len;
    __u32 _pad;
};
struct u_sockaddr_in6 {
    __u16 family;
    __u16 port;
    __u32 flowinfo;
    __u8 addr[16];
};
struct u_sockaddr_in {
    __u16 family;
    __u16 port;
    __u8 addr[4];
};

struct conn_key {
    __u32 pid;
    __s32 fd;
};

/* Where an HTTP/2 direction's next frame header starts (new connections
 * only; see h2_walk). The payload of the current frame: `copy` bytes still
 * to copy, then `skip` bytes still to skip; when both are 0 a frame header
 * comes next, of which `hgot` bytes (in hbuf) came in earlier syscalls. */
#define H2_NEW 0  /* nothing walked yet: the direction's first byte comes next */
#define H2_WALK 1 /* in step with the frames */
#define H2_LOST 2 /* gave up (bound exceeded, implausible frame): head + tail copies */
struct h2_dir {
    __u32 copy;
    __u32 skip;
    __u8 state;
    __u8 hgot;
    __u8 busy; /* a walk started and has not written its state back yet */
    __u8 _pad[5];
    __u8 hbuf[8];
}; /* 24 bytes */

/* HTTP/1 exchanges framed in the kernel (events.h, h1_resp_info). */
#define H1F_OFF 0  /* a record per syscall: the agent's parser frames */
#define H1F_IDLE 1 /* between exchanges: a simple request may come */
#define H1F_REQ 2  /* a GET/HEAD head went out (EVF_H1_REQ); its response not begun */
#define H1F_RESP 3 /* the response head is framed: `remaining` body bytes to count */
#define H1_SCAN 2048 /* longest request, and response head, framed here */
struct h1_fast {
    __u8 state;
    __u8 head_req; /* the pending request is HEAD: no response body */
    __u8 minor;
    __u8 held;     /* the pending request waits in h1_holds for its response */
    __u16 status;
    __u16 _pad2;
    __u32 head_len;
    __u32 _pad3;
    __u64 remaining;
    __u64 body;
    __u64 start_ts;
    __u64 last_ts;
    __u64 pos; /* egress position of the response's first byte */
}; /* 56 bytes */

struct conn_state {
    __u64 generation;
    __u64 pos[2];
    __u8 role;
    __u8 proto;
    __u8 tries;
    __u8 flags;     /* EVF_EXISTING; EVF_TLS once a TLS library probe saw it */
    __u8 tls_proto; /* inferred from the plaintext (tls.c) */
    __u8 tls_tries;
    __u8 open_pending; /* `info` not sent yet: sent before the first HTTP record */
    __u8 _pad;
    __u64 tls_pos[2]; /* plaintext byte positions (tls.c) */
    struct h2_dir h2[2]; /* per direction; the plaintext's when EVF_TLS */
    struct h1_fast h1;
    /* From accept/connect. Sent (EVT_OPEN) only once the connection's first
     * bytes say HTTP: database, DNS and other connections never reach the
     * agent at all. */
    struct open_info info;
};

/* What an entry tracepoint leaves for its exit (kinds K_* in events.h). The
 * agent writes these too, for syscalls already in flight when it attached
 * (ebpf_tracer/inflight.py); it takes the layout from the compiler. */
struct args_t {
    __u8 kind;
    __u8 direction;
    __u16 _pad;
    __s32 fd;
    __u64 ptr;  /* buf, iov, msghdr or mmsghdr */
    __u64 cnt;  /* iovcnt (K_IOV) */
    __s64 ret;  /* set by the exit tracepoint before the tail call */
};

struct accept_args { /* also written by the agent (inflight.py) */
    __s32 fd;
    __u32 _pad;
    __u64 addr;
};

struct data_event {
    struct event_hdr hdr;
    /* Head at [0, MAX_COPY), tail at [MAX_COPY, MAX_COPY + TAIL_COPY); sized
     * so that masked offsets and lengths satisfy the verifier. */
    __u8 data[MAX_COPY * 2 + TAIL_COPY * 2];
};

struct open_event {
    struct event_hdr hdr;
    struct open_info info;
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_HASH(traced_pids, __u32, __u8, 65536);
/* run mode: processes the agent's selection rejected (decided per program). */
BPF_HASH(excluded_pids, __u32, __u8, 65536);
BPF_TABLE("lru_hash", struct conn_key, struct conn_state, conns, MAX_CONNS);
BPF_HASH(active_args, __u64, struct args_t, 16384);
BPF_HASH(active_accept, __u64, struct accept_args, 4096);
BPF_HASH(active_connect, __u64, struct accept_args, 4096);
BPF_PERCPU_ARRAY(scratch, struct data_event, 1);
/* An SSL_read/SSL_write in progress on this thread (tls.c): its syscall's fd
 * names the SSL object's socket; the ciphertext itself is not submitted. */
struct ssl_args {
    __u64 ssl;
    __u64 buf;
    __u64 outp;  /* SSL_*_ex: size_t *readbytes/written; else 0 */
    __s32 fd;    /* nested syscall's fd; -1 while none */
    __u8 direction;
    __u8 _pad[3];
};
BPF_HASH(active_ssl, __u64, struct ssl_args, 16384);

BPF_PROG_ARRAY(data_prog, 5);
/* Counters the agent reads: 0 ringbuf drops, 1 data events, 2 conns opened,
 * 3 bytes not copied (beyond MAX_COPY, or after a frame walk gave up),
 * 4 inference misses, 5 HTTP/2 payload bytes the frame walk skipped on
 * purpose (DATA), 6 frame walks given up (that direction: head + tail). */
BPF_PERCPU_ARRAY(counters, __u64, CNT_COUNT);

static __always_inline void count(int idx, __u64 n) {
    __u64 *c = counters.lookup(&idx);
    if (c)
        *c += n;
}

static __always_inline int is_traced(__u32 tgid) {
    if (tgid == AGENT_PID)
        return 0;
#if TRACE_ALL
    return excluded_pids.lookup(&tgid) == NULL;
#else
    return traced_pids.lookup(&tgid) != NULL;
#endif
}

/* Is this the start of an HTTP/1 message? Returns ROLE hint: for a request
 * 1, for a response 2, the HTTP/2 preface 3, else 0. Accepts the methods the
 * agent's parser resynchronises on (protocols/http1/head.py SYNC_METHODS):
 * the nine standard ones plus WebDAV, PURGE and QUERY. `b` holds 16 bytes
 * (zero beyond n), so reading up to b[9] is safe. */
static __always_inline int http1_start(const __u8 *b, __u32 n) {
    if (n < 8)
        return 0;
    if (b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && b[4] == '/' && b[5] == '1' && b[6] == '.')
        return 2;
    switch (b[0]) {
    case 'G': return b[1] == 'E' && b[2] == 'T' && b[3] == ' ';
    case 'P':
        if (b[1] == 'O' && b[2] == 'S' && b[3] == 'T' && b[4] == ' ') return 1;
        if (b[1] == 'U' && b[2] == 'T' && b[3] == ' ') return 1;
        if (b[1] == 'A' && b[2] == 'T' && b[3] == 'C' && b[4] == 'H' && b[5] == ' ') return 1;
        if (b[1] == 'R' && b[2] == 'I' && b[3] == ' ' && b[4] == '*') return 3; /* HTTP/2 preface */
        if (b[1] == 'U' && b[2] == 'R' && b[3] == 'G' && b[4] == 'E' && b[5] == ' ') return 1;
        if (b[1] == 'R' && b[2] == 'O' && b[3] == 'P') {
            if (b[4] == 'F' && b[5] == 'I' && b[6] == 'N' && b[7] == 'D' && b[8] == ' ') return 1;
            if (b[4] == 'P' && b[5] == 'A' && b[6] == 'T' && b[7] == 'C' && b[8] == 'H' && b[9] == ' ') return 1;
        }
        return 0;
    case 'H': return b[1] == 'E' && b[2] == 'A' && b[3] == 'D' && b[4] == ' ';
    case 'D': return b[1] == 'E' && b[2] == 'L' && b[3] == 'E' && b[4] == 'T' && b[5] == 'E' && b[6] == ' ';
    case 'O': return b[1] == 'P' && b[2] == 'T' && b[3] == 'I' && b[4] == 'O' && b[5] == 'N' && b[6] == 'S' && b[7] == ' ';
    case 'C':
        if (b[1] == 'O' && b[2] == 'P' && b[3] == 'Y' && b[4] == ' ') return 1;
        return b[1] == 'O' && b[2] == 'N' && b[3] == 'N' && b[4] == 'E' && b[5] == 'C' && b[6] == 'T' && b[7] == ' ';
    case 'T': return b[1] == 'R' && b[2] == 'A' && b[3] == 'C' && b[4] == 'E' && b[5] == ' ';
    case 'M':
        if (b[1] == 'O' && b[2] == 'V' && b[3] == 'E' && b[4] == ' ') return 1;
        return b[1] == 'K' && b[2] == 'C' && b[3] == 'O' && b[4] == 'L' && b[5] == ' ';
    case 'L': return b[1] == 'O' && b[2] == 'C' && b[3] == 'K' && b[4] == ' ';
    case 'U': return b[1] == 'N' && b[2] == 'L' && b[3] == 'O' && b[4] == 'C' && b[5] == 'K' && b[6] == ' ';
    case 'R': return b[1] == 'E' && b[2] == 'P' && b[3] == 'O' && b[4] == 'R' && b[5] == 'T' && b[6] == ' ';
    case 'S': return b[1] == 'E' && b[2] == 'A' && b[3] == 'R' && b[4] == 'C' && b[5] == 'H' && b[6] == ' ';
    case 'Q': return b[1] == 'U' && b[2] == 'E' && b[3] == 'R' && b[4] == 'Y' && b[5] == ' ';
    }
    return 0;
}

/* Does this start like an HTTP/2 frame? For a connection we never saw open
 * (`existing`) any plausible frame counts; for a new one only the server's
 * opening SETTINGS (it may write before reading the client's preface).
 * Returns 4 or 0. */
static __always_inline int http2_frame_start(const __u8 *b, __u64 total, int existing) {
    __u32 len = ((__u32)b[0] << 16) | ((__u32)b[1] << 8) | b[2];
    __u8 type = b[3];
    __u32 stream = (((__u32)b[5] & 0x7f) << 24) | ((__u32)b[6] << 16) | ((__u32)b[7] << 8) | b[8];
    if (b[5] & 0x80)
        return 0; /* reserved bit set */
    if (len > 16384 || (__u64)len + 9 > total)
        return 0;
    if (type == 4) /* SETTINGS: stream 0, whole settings, ACK carries none */
        return stream == 0 && len % 6 == 0 && (b[4] & ~1) == 0 && !(b[4] & 1 && len) ? 4 : 0;
    if (!existing)
        return 0;
    switch (type) {
    case 0: /* DATA */
    case 1: /* HEADERS */
        return stream != 0 ? 4 : 0;
    case 3: /* RST_STREAM */
        return stream != 0 && len == 4 ? 4 : 0;
    case 6: /* PING */
        return stream == 0 && len == 8 ? 4 : 0;
    case 7: /* GOAWAY */
        return stream == 0 && len >= 8 ? 4 : 0;
    case 8: /* WINDOW_UPDATE */
        return len == 4 ? 4 : 0;
    }
    return 0;
}

/* A stream's first bytes, peeked (16, or 9 when that is all there is) before
 * anything big is copied: the hint of http1_start or http2_frame_start (0:
 * neither); `*peeked_out` is how many bytes were read. */
static __always_inline int infer_start(const void *src, __u64 avail, __u64 total, int existing,
                                       __u32 *peeked_out) {
    __u8 peek[16] = {};
    __u32 peeked = 0;
    int hint = 0;
    if (src && avail >= 9) {
        peeked = avail >= 16 ? 16 : 9;
        if (bpf_probe_read_user(peek, peeked == 16 ? 16 : 9, src) != 0)
            peeked = 0;
    }
    if (peeked >= 8)
        hint = http1_start(peek, peeked);
    if (!hint && peeked >= 9)
        hint = http2_frame_start(peek, total, existing);
    *peeked_out = peeked;
    return hint;
}

/* A connection first seen mid-stream, from its first bytes' hint. */
static __always_inline __u8 hint_proto(int hint) {
    return hint >= 3 ? PROTO_HTTP2 : PROTO_HTTP1;
}

static __always_inline __u8 hint_role(int hint, __u8 direction) {
    if (hint == 3) /* the preface: read by servers, written by clients */
        return direction == DIR_INGRESS ? ROLE_SERVER : ROLE_CLIENT;
    if (hint == 4) /* mid-connection HTTP/2: the agent decides by stream ids */
        return ROLE_UNKNOWN;
    /* A request read, or a response written, means we serve. */
    return (hint == 1) == (direction == DIR_INGRESS) ? ROLE_SERVER : ROLE_CLIENT;
}

static __always_inline void fill_hdr(struct event_hdr *h, __u8 type, __u64 id, __s32 fd) {
    h->type = type;
    h->direction = 0;
    h->role = 0;
    h->flags = 0;
    h->pid = id >> 32;
    h->tid = (__u32)id;
    h->fd = fd;
    h->generation = 0;
    h->ts_ns = bpf_ktime_get_ns();
    h->pos = 0;
    h->len = 0;
    h->copied = 0;
    h->tail = 0;
    h->_reserved = 0;
}

/* ---- the agent's own connections ----------------------------------------
 * The agent's exporter may talk to a collector this tracer also traces
 * (attach/run on the collector): its server spans would be exported, traced
 * and exported again, for ever. The kernel remembers every TCP connection the
 * agent opens (both ends: Linux gives one local port to several connections
 * to different destinations, so a local port alone would also match a traced
 * server's ordinary clients) and never traces the far end of it.
 * sock:inet_sock_set_state gives addresses and ports from tracefs; the
 * connecting task is current only at SYN_SENT, before the port is chosen, so
 * the socket address links SYN_SENT to ESTABLISHED. The client reaches
 * ESTABLISHED before the server's end does (SYN_RECV -> ESTABLISHED), which
 * in turn comes before accept() returns: that is where the far end is
 * recognised, by its full address pair, and marked for the accept to find. */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define IPPROTO_TCP_ 6
struct own_key { /* one end of a connection */
    __u8 addr[16]; /* IPv6, or IPv4 mapped (::ffff:a.b.c.d) */
    __u16 port;
    __u16 _pad;
};
struct own_conn { /* a connection of the agent's, from its side */
    struct own_key local;
    struct own_key remote;
};
BPF_HASH(own_pending, __u64, __u8, 1024);
BPF_HASH(own_socks, __u64, struct own_conn, 1024);
BPF_HASH(own_conns, struct own_conn, __u8, 1024);
/* The agent's ends of connections a server has established but not yet
 * accepted, as that accept() will name its peer, and when (ktime ns). The
 * server may be one this tracer does not trace (whose accept never comes
 * here), and the mark names the client end only: it is good for a few seconds
 * (an accept follows within ms) lest a traced server's ordinary client that
 * shares the port later be taken for the agent. */
#define OWN_ACCEPT_WINDOW_NS 3000000000ULL
BPF_HASH(own_accepts, struct own_key, __u64, 1024);
/* Prefilters, as every TCP state change on the machine runs this program (ten
 * per short connection): the agent's sockets in SYN_SENT (own_pending's size)
 * and the local ports of its established ones (several sockets may share one).
 * Array lookups are inlined: a change that cannot be the agent's costs no hash
 * lookup. */
BPF_ARRAY(own_pending_n, __s64, 1);
BPF_ARRAY(own_ports, __u32, 65536);

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    __u64 sk = (__u64)args->skaddr;
    __u8 one = 1;
    __u32 zero = 0;
    __s64 *pending = own_pending_n.lookup(&zero);
    if (!pending)
        return 0;
    if (args->newstate == TCP_SYN_SENT) {
        if ((bpf_get_current_pid_tgid() >> 32) == AGENT_PID &&
            own_pending.insert(&sk, &one) == 0)
            __sync_fetch_and_add(pending, 1);
        return 0;
    }
    if (args->newstate == TCP_ESTABLISHED) {
        struct own_conn c = {};
        if (args->oldstate == TCP_SYN_RECV) {
            /* A server's end: is its client one of the agent's connections?
             * saddr_v6 holds the IPv4-mapped address for AF_INET sockets. */
            __u32 cport = args->dport;
            __u32 *users = own_ports.lookup(&cport);
            if (!users || !*users)
                return 0;
            __builtin_memcpy(c.local.addr, args->daddr_v6, 16);
            c.local.port = args->dport;
            __builtin_memcpy(c.remote.addr, args->saddr_v6, 16);
            c.remote.port = args->sport;
            if (own_conns.lookup(&c)) {
                __u64 now = bpf_ktime_get_ns();
                own_accepts.update(&c.local, &now);
            }
            return 0;
        }
        if (*pending <= 0 || own_pending.delete(&sk) != 0)
            return 0;
        __sync_fetch_and_add(pending, -1);
        __builtin_memcpy(c.local.addr, args->saddr_v6, 16);
        c.local.port = args->sport;
        __builtin_memcpy(c.remote.addr, args->daddr_v6, 16);
        c.remote.port = args->dport;
        if (own_socks.update(&sk, &c) != 0)
            return 0; /* full: its traffic may be traced (the maps hold 1024) */
        own_conns.update(&c, &one);
        __u32 lport = args->sport;
        __u32 *users = own_ports.lookup(&lport);
        if (users)
            __sync_fetch_and_add(users, 1);
        return 0;
    }
    if (args->newstate == TCP_CLOSE) {
        if (*pending > 0 && own_pending.delete(&sk) == 0)
            __sync_fetch_and_add(pending, -1); /* a connect that failed */
        __u32 lport = args->sport;
        __u32 *users = own_ports.lookup(&lport);
        if (!users || !*users)
            return 0;
        struct own_conn *c = own_socks.lookup(&sk);
        if (c) {
            struct own_conn gone = *c;
            own_conns.delete(&gone);
            own_accepts.delete(&gone.local);
            own_socks.delete(&sk);
            __sync_fetch_and_add(users, -1);
        }
    }
    return 0;
}

/* ---- connection lifecycle ------------------------------------------------ */

static __always_inline void open_conn(void *ctx, __u64 id, __s32 fd, __u8 role, __s32 listen_fd,
                                      __u64 uaddr) {
    struct conn_key key = {.pid = id >> 32, .fd = fd};
    struct conn_state st = {};
    st.generation = bpf_ktime_get_ns();
    st.role = role;
    st.proto = PROTO_UNKNOWN;
    st.open_pending = 1;
    st.h1.state = KERNEL_HTTP1 && role == ROLE_SERVER ? H1F_IDLE : H1F_OFF;
    st.info.listen_fd = listen_fd;
    bpf_get_current_comm(st.info.comm, sizeof(st.info.comm));
    if (uaddr) {
        struct u_sockaddr_in6 sa = {};
        bpf_probe_read_user(&sa, sizeof(sa), (void *)uaddr);
        struct own_key peer = {};
        if (sa.family == AF_INET) {
            struct u_sockaddr_in *s4 = (struct u_sockaddr_in *)&sa;
            st.info.family = AF_INET;
            st.info.peer_port = bpf_ntohs(s4->port);
            __builtin_memcpy(st.info.peer_addr, s4->addr, 4);
            peer.addr[10] = 0xff;
            peer.addr[11] = 0xff;
            __builtin_memcpy(&peer.addr[12], s4->addr, 4);
        } else if (sa.family == AF_INET6) {
            st.info.family = AF_INET6;
            st.info.peer_port = bpf_ntohs(sa.port);
            __builtin_memcpy(st.info.peer_addr, sa.addr, 16);
            __builtin_memcpy(peer.addr, sa.addr, 16);
        } else {
            /* AF_UNIX and friends: not TCP, forget it. */
            conns.delete(&key);
            return;
        }
        peer.port = st.info.peer_port;
        __u64 *marked = role == ROLE_SERVER ? own_accepts.lookup(&peer) : 0;
        __u8 own = marked && bpf_ktime_get_ns() - *marked < OWN_ACCEPT_WINDOW_NS;
        if (marked)
            own_accepts.delete(&peer);
        if (own) {
            /* The client is this agent's exporter: never traced. */
            st.proto = PROTO_NONE;
            st.tls_proto = PROTO_NONE;
            st.open_pending = 0;
            count(CNT_OWN_TRAFFIC_CONNS, 1);
        }
    }
    conns.update(&key, &st);
    count(CNT_CONNS_OPENED, 1);
}

/* The connection turned out to be HTTP: tell the agent what accept/connect
 * said about it, just before its first record. */
static __always_inline void send_open(__u64 id, __s32 fd, struct conn_state *st) {
    if (!st->open_pending)
        return;
    st->open_pending = 0;
    struct open_event *ev = events.ringbuf_reserve(sizeof(struct open_event));
    if (!ev) {
        count(CNT_RINGBUF_LOST, 1);
        return;
    }
    fill_hdr(&ev->hdr, EVT_OPEN, id, fd);
    ev->hdr.role = st->role;
    ev->hdr.generation = st->generation;
    __builtin_memcpy(&ev->info, &st->info, sizeof(ev->info));
    events.ringbuf_submit(ev, 0);
}

/* An HTTP/1 response framed here is over (or given up: `partial`): one
 * record instead of its bytes, carrying its request when that was held back.
 * A held request waits in h1_holds laid out as the record it will go out in. */
#define H1_HOLD 1024 /* request heads shorter than this are held back (a power of two) */
struct h1_held {
    struct event_hdr hdr;
    struct h1_resp_info info;
    __u8 data[H1_HOLD];
};
BPF_F_TABLE("hash", struct conn_key, struct h1_held, h1_holds, MAX_CONNS, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(h1_stage, struct h1_held, 1);

static __always_inline void h1_fill(struct event_hdr *h, struct h1_resp_info *info, __u64 id,
                                    __s32 fd, struct conn_state *st, __u8 partial) {
    fill_hdr(h, EVT_H1_RESP, id, fd);
    h->direction = DIR_EGRESS;
    h->role = st->role;
    h->generation = st->generation;
    h->ts_ns = st->h1.last_ts;
    h->pos = st->h1.pos;
    h->len = (__u32)(st->pos[DIR_EGRESS] - st->h1.pos);
    info->start_ns = st->h1.start_ts;
    info->body = st->h1.body - st->h1.remaining;
    info->head_len = st->h1.head_len;
    info->status = st->h1.status;
    info->minor = st->h1.minor;
    info->partial = partial;
}

static __always_inline void h1_emit(__u64 id, __s32 fd, struct conn_state *st, __u8 partial) {
    count(CNT_H1_EXCHANGES, 1);
    if (st->h1.held) {
        st->h1.held = 0;
        struct conn_key key = {.pid = id >> 32, .fd = fd};
        struct h1_held *h = h1_holds.lookup(&key);
        if (h && h->hdr.generation == st->generation) {
            h1_fill(&h->hdr, &h->info, id, fd, st, partial);
            __u32 n = h->info.req_copied;
            if (n > H1_HOLD)
                n = H1_HOLD;
            if (events.ringbuf_output(h, sizeof(h->hdr) + sizeof(h->info) + n, 0) != 0)
                count(CNT_RINGBUF_LOST, 1);
            h1_holds.delete(&key);
            return;
        }
        if (h)
            h1_holds.delete(&key);
    }
    struct h1_resp_event {
        struct event_hdr hdr;
        struct h1_resp_info info;
    } *ev = events.ringbuf_reserve(sizeof(struct h1_resp_event));
    if (!ev) {
        count(CNT_RINGBUF_LOST, 1);
        return;
    }
    h1_fill(&ev->hdr, &ev->info, id, fd, st, partial);
    ev->info.req_ts = 0;
    ev->info.req_pos = 0;
    ev->info.req_len = 0;
    ev->info.req_copied = 0;
    events.ringbuf_submit(ev, 0);
}

/* The connection leaves the kernel's framing (or closes) with its request
 * held: send that request as the record it would have been (EVF_H1_REQ), so
 * the agent's parser has it when the response's own records come. */
static __always_inline void h1_flush(__u64 id, __s32 fd, struct conn_state *st) {
    if (!st->h1.held)
        return;
    st->h1.held = 0;
    struct conn_key key = {.pid = id >> 32, .fd = fd};
    struct h1_held *h = h1_holds.lookup(&key);
    if (!h)
        return;
    __u32 zero = 0;
    struct data_event *ev = scratch.lookup(&zero);
    __u32 n = h->info.req_copied;
    if (n > H1_HOLD)
        n = H1_HOLD;
    if (ev && h->hdr.generation == st->generation) {
        __builtin_memcpy(&ev->hdr, &h->hdr, sizeof(ev->hdr));
        if (bpf_probe_read_kernel(ev->data, n, h->data) == 0 &&
            events.ringbuf_output(ev, sizeof(ev->hdr) + n, 0) != 0)
            count(CNT_RINGBUF_LOST, 1);
    }
    h1_holds.delete(&key);
}

static __always_inline int enter_accept(__s32 fd, __u64 addr) {
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_traced(id >> 32))
        return 0;
    struct accept_args a = {.fd = fd, .addr = addr};
    active_accept.update(&id, &a);
    return 0;
}

static __always_inline int exit_accept(void *ctx, long ret) {
    __u64 id = bpf_get_current_pid_tgid();
    struct accept_args *a = active_accept.lookup(&id);
    if (!a)
        return 0;
    struct accept_args args = *a;
    active_accept.delete(&id);
    if (ret < 0)
        return 0;
    open_conn(ctx, id, (__s32)ret, ROLE_SERVER, args.fd, args.addr);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return enter_accept(args->fd, (__u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return exit_accept(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return enter_accept(args->fd, (__u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return exit_accept(args, args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_traced(id >> 32))
        return 0;
    struct accept_args a = {.fd = args->fd, .addr = (__u64)args->uservaddr};
    active_connect.update(&id, &a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    __u64 id = bpf_get_current_pid_tgid();
    struct accept_args *a = active_connect.lookup(&id);
    if (!a)
        return 0;
    struct accept_args c = *a;
    active_connect.delete(&id);
    if (args->ret != 0 && args->ret != -EINPROGRESS)
        return 0;
    if (!c.addr)
        return 0;
    open_conn(args, id, c.fd, ROLE_CLIENT, -1, c.addr);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    __u64 id = bpf_get_current_pid_tgid();
    struct conn_key key = {.pid = id >> 32, .fd = args->fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st)
        return 0;
    if (st->h1.state == H1F_RESP)
        h1_emit(id, args->fd, st, 1); /* closed before the body's end */
    else if (st->h1.state == H1F_REQ)
        h1_flush(id, args->fd, st); /* closed before any response */
    if ((st->proto != PROTO_NONE && st->proto != PROTO_UNKNOWN) ||
        (st->tls_proto != PROTO_NONE && st->tls_proto != PROTO_UNKNOWN)) {
        struct event_hdr h = {};
        fill_hdr(&h, EVT_CLOSE, id, args->fd);
        h.role = st->role;
        h.generation = st->generation;
        if (events.ringbuf_output(&h, sizeof(h), 0) != 0)
            count(CNT_RINGBUF_LOST, 1);
    }
    conns.delete(&key);
    return 0;
}

/* Children of traced processes are traced from their first instruction. */
TRACEPOINT_PROBE(sched, sched_process_fork) {
#if !TRACE_ALL
    __u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (traced_pids.lookup(&parent)) {
        __u32 child = args->child_pid;
        __u8 one = 1;
        traced_pids.update(&child, &one);
    }
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    excluded_pids.delete(&tgid); /* a new program: the agent decides again */
    if (!is_traced(tgid))
        return 0;
    struct event_hdr h = {};
    fill_hdr(&h, EVT_PROC_EXEC, id, -1);
    if (events.ringbuf_output(&h, sizeof(h), 0) != 0)
        count(CNT_RINGBUF_LOST, 1);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    /* A thread that dies inside SSL_read never returns: forget its call,
     * or a later thread with its id would have its syscalls ignored. */
    active_ssl.delete(&id);
    if ((__u32)id != tgid) {
#if !TRACE_ALL
        /* sched_process_fork cannot tell threads from processes: a traced
         * process's threads were added by their id too. Drop it, or the map
         * fills with dead ids that later processes would inherit. */
        __u32 tid = (__u32)id;
        traced_pids.delete(&tid);
#endif
        return 0;
    }
    if (tgid == AGENT_PID)
        return 0;
    /* Excluded processes report their exit too: the agent forgets them. */
    int excluded = excluded_pids.lookup(&tgid) != NULL;
    excluded_pids.delete(&tgid);
    if (!excluded && !is_traced(tgid))
        return 0;
#if !TRACE_ALL
    traced_pids.delete(&tgid);
#endif
    struct event_hdr h = {};
    fill_hdr(&h, EVT_PROC_EXIT, id, -1);
    if (events.ringbuf_output(&h, sizeof(h), 0) != 0)
        count(CNT_RINGBUF_LOST, 1);
    return 0;
}

/* ---- data ----------------------------------------------------------------- */

static __always_inline int ssl_nested(__u64 id, __s32 fd) {
    struct ssl_args *sa = active_ssl.lookup(&id);
    if (!sa)
        return 0;
    if (sa->fd < 0)
        sa->fd = fd;
    return 1;
}

static __always_inline int stash(__u8 kind, __u8 dir, __s32 fd, __u64 ptr, __u64 cnt) {
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_traced(id >> 32))
        return 0;
    if (ssl_nested(id, fd))
        return 0;
    struct conn_key key = {.pid = id >> 32, .fd = fd};
    struct conn_state *st = conns.lookup(&key);
    /* Known not-HTTP, or TLS (its plaintext comes from tls.c): the map
     * lookup is all it costs. */
    if (st && (st->proto == PROTO_NONE || (st->flags & EVF_TLS)))
        return 0;
    struct args_t a = {.kind = kind, .direction = dir, .fd = fd, .ptr = ptr, .cnt = cnt};
    active_args.update(&id, &a);
    return 0;
}

/* An iovec gather in progress (per CPU: tail calls stay on one CPU). */
struct gather_job {
    __u64 iovp;
    __u64 iovcnt;
    __u64 total;
    __u64 acc;     /* bytes of the iovecs walked so far */
    __u32 idx;     /* next iovec */
    __u32 head_n;  /* copy [0, head_n) ... */
    __u32 tail_n;  /* ... and [total - tail_n, total) */
    __u32 got;     /* head bytes copied so far */
    __u32 calls;
    __u32 tail_got; /* tail bytes copied so far */
};
BPF_PERCPU_ARRAY(gather_jobs, struct gather_job, 1);

static __always_inline void submit(struct data_event *ev, __u32 head, __u32 tail, __u64 total) {
    if (head > MAX_COPY)
        head = MAX_COPY;
    if (tail > TAIL_COPY)
        tail = TAIL_COPY;
    __u32 copied = head + tail;
    ev->hdr.copied = copied;
    ev->hdr.tail = tail;
    if (total > copied)
        count(CNT_BYTES_NOT_COPIED, total - copied);
    if (events.ringbuf_output(ev, sizeof(struct event_hdr) + copied, 0) != 0)
        count(CNT_RINGBUF_LOST, 1);
}

/* ---- HTTP/2 frame walk ------------------------------------------------------
 *
 * On a connection the kernel saw open and inferred as HTTP/2, each direction's
 * syscalls are walked frame by frame from the direction's first byte: frame
 * headers and the payloads of every frame but DATA are copied (up to
 * H2_FRAME_COPY bytes a frame), of a DATA payload only its first H2_DATA_COPY
 * bytes (the pad length, gRPC message prefixes); the rest is skipped and
 * reported as a gap of known size (EVF_SEGMENTS records), so the agent decodes
 * every header block and its HPACK tables stay exact whatever the syscall's
 * size. Where the next frame header starts is kept per direction in the
 * connection (struct h2_dir). A walk that cannot keep step (an implausible
 * frame header, a header it could not read, more frames in one syscall than
 * the runs walk) marks the direction H2_LOST: the rest of that syscall is a
 * gap and later syscalls get the head + tail copy.
 */
#define H2_BUF 8192         /* record payload (segments and bytes) */
#define H2_CHUNK 4096       /* payload bytes copied per step at most */
/* A step adds at most a header, H2_CHUNK bytes and two segment headers: a
 * record is sent, and the next one started, before a step that might not fit. */
#define H2_ROOM (H2_CHUNK + 64)
#define H2_FRAME_COPY 16384 /* bytes of a non-DATA payload copied; the rest is skipped */
#define H2_DATA_COPY 128    /* bytes copied from the start of each DATA payload */
#define H2_STEPS 128        /* walk steps per run of h2_walk */
#define H2_RUNS 30          /* runs per syscall (tail calls; the kernel allows 33 in all) */

struct h2_event {
    struct event_hdr hdr;
    __u8 data[H2_BUF * 2]; /* H2_BUF used; sized so that masked offsets satisfy the verifier */
};

/* One walk in progress (per CPU: slot 0 syscalls, slot 1 TLS). */
struct h2_job {
    struct h2_event ev;
    __u64 src;      /* user address of the next byte */
    __u64 avail;    /* bytes from src on in the current buffer or iovec */
    __u64 iovp;     /* next iovec, while iovleft */
    __u64 iovleft;
    __u64 left;     /* bytes of the syscall not yet walked */
    __u64 pos;      /* stream position of the next byte */
    __u64 rec_pos;  /* stream position of the record's first byte */
    __u64 generation;
    __u64 skipped;  /* payload bytes skipped on purpose */
    __u64 tid;      /* pid_tgid of the walk's thread: another thread's walk on this CPU overwrote it if not */
    __u32 pid;
    __s32 fd;
    __u32 off;      /* payload bytes in ev.data, the open segment's header included */
    __u32 seg_at;   /* where the open segment's header goes */
    __u32 seg_skip;
    __u32 seg_len;
    __u32 copy;     /* struct h2_dir, while walking */
    __u32 skip;
    __u32 runs;
    __u8 state;
    __u8 hgot;
    __u8 dir;
    __u8 _pad;
    __u8 hbuf[24]; /* a frame header being read: hgot <= 8 bytes held, then up to 9 more */
};
BPF_PERCPU_ARRAY(h2_jobs, struct h2_job, 2);
/* The walk of TLS plaintext: uprobe programs tail-call programs of their type. */
BPF_PROG_ARRAY(tls_prog, 1);

/* Prepare the walk of one syscall (or SSL call) on an HTTP/2 connection,
 * whose record header `hdr` is filled; `pos0` is the direction's position
 * before it. Returns 1 if the caller should tail-call the walk (and, if that
 * fails, call h2_failed), 0 if it copies head + tail as for any connection.
 * (The tail call is the caller's: a program may only use program arrays of
 * its own type.) */
static __always_inline int h2_start(struct conn_state *st, struct event_hdr *hdr, __u8 kind,
                                    __u64 ptr, __u64 iovp, __u64 iovcnt, __u64 total, __u64 pos0,
                                    __u32 slot) {
    __u8 d = hdr->direction & 1;
    struct h2_dir *w = &st->h2[d];
    if (w->state == H2_LOST)
        return 0;
    if ((w->state == H2_NEW && pos0 != 0) || kind == K_MMSG || w->busy) {
        /* Bytes went by before the walk could start (the protocol was decided
         * late), several messages, or the last walk never finished: not walked. */
        w->state = H2_LOST;
        count(CNT_H2_WALKS_LOST, 1);
        return 0;
    }
    struct h2_job *j = h2_jobs.lookup(&slot);
    if (!j)
        return 0;
    __builtin_memcpy(&j->ev.hdr, hdr, sizeof(*hdr));
    j->ev.hdr.flags |= EVF_SEGMENTS;
    if (kind == K_IOV || kind == K_MSG) {
        j->src = 0;
        j->avail = 0;
        j->iovp = iovp;
        j->iovleft = iovcnt;
    } else {
        /* A buffer; sendfile has none (ptr 0): its bytes can only be skipped. */
        j->src = ptr;
        j->avail = total;
        j->iovp = 0;
        j->iovleft = 0;
    }
    j->left = total;
    j->pos = pos0;
    j->rec_pos = pos0;
    j->generation = st->generation;
    j->skipped = 0;
    j->tid = bpf_get_current_pid_tgid();
    j->pid = hdr->pid;
    j->fd = hdr->fd;
    j->off = sizeof(struct seg_hdr);
    j->seg_at = 0;
    j->seg_skip = 0;
    j->seg_len = 0;
    j->copy = w->copy;
    j->skip = w->skip;
    j->runs = 0;
    j->state = w->state;
    j->hgot = w->hgot;
    j->dir = d;
    __builtin_memcpy(j->hbuf, w->hbuf, 8);
    w->busy = 1;
    return 1;
}

/* The walk program is not installed: this direction is not walked. */
static __always_inline void h2_failed(struct conn_state *st, __u8 dir) {
    st->h2[dir & 1].state = H2_LOST;
    st->h2[dir & 1].busy = 0;
    count(CNT_H2_WALKS_LOST, 1);
}

/* Send the record so far ([rec_pos, pos) and its segments); start the next. */
static __always_inline void h2_emit(struct h2_job *j) {
    __u32 off = j->off;
    __u32 at = j->seg_at & (H2_BUF - 1);
    if (j->seg_len == 0) {
        off = at; /* an open segment with no bytes: its skip is the record's end */
    } else {
        struct seg_hdr *sh = (struct seg_hdr *)&j->ev.data[at];
        sh->skip = j->seg_skip;
        sh->len = j->seg_len;
    }
    off &= (H2_BUF * 2 - 1); /* it is <= H2_BUF: for the verifier */
    __u64 span = j->pos - j->rec_pos;
    if (span) {
        j->ev.hdr.pos = j->rec_pos;
        j->ev.hdr.len = span > 0xffffffff ? 0xffffffff : (__u32)span;
        j->ev.hdr.copied = off;
        j->ev.hdr.tail = 0;
        if (events.ringbuf_output(&j->ev, sizeof(struct event_hdr) + off, 0) != 0)
            count(CNT_RINGBUF_LOST, 1);
    }
    j->rec_pos = j->pos;
    j->off = sizeof(struct seg_hdr);
    j->seg_at = 0;
    j->seg_skip = 0;
    j->seg_len = 0;
}

static __always_inline void h2_advance(struct h2_job *j, __u32 n) {
    j->src += n;
    j->avail -= n;
    j->left -= n;
    j->pos += n;
}

/* Copy n (<= H2_CHUNK) bytes from src into the record (which has room:
 * H2_ROOM). 0 if done. */
static __always_inline int h2_copy(struct h2_job *j, __u32 n) {
    __u32 off = j->off & (H2_BUF - 1);
    asm volatile("" : "+r"(n)); /* keep the bounds below where the verifier sees them */
    n &= (H2_CHUNK * 2 - 1);
    if (n > H2_CHUNK)
        n = H2_CHUNK;
    if (n && bpf_probe_read_user(&j->ev.data[off], n, (void *)j->src) != 0)
        return -1;
    j->off = off + n;
    j->seg_len += n;
    h2_advance(j, n);
    return 0;
}

/* Let n bytes from src go by uncopied (within one syscall: fits a u32). */
static __always_inline void h2_skip(struct h2_job *j, __u32 n) {
    if (j->seg_len) {
        /* Close the segment; the next starts with this skip. */
        __u32 at = j->seg_at & (H2_BUF - 1);
        struct seg_hdr *sh = (struct seg_hdr *)&j->ev.data[at];
        sh->skip = j->seg_skip;
        sh->len = j->seg_len;
        j->seg_at = j->off;
        j->off += sizeof(struct seg_hdr);
        j->seg_skip = 0;
        j->seg_len = 0;
    }
    j->seg_skip += n;
    h2_advance(j, n);
}

/* One step: the next iovec if the current one is used up, then a frame
 * header if one starts here, then as much of the current payload as the
 * buffer holds. Returns 1 when the walk is over (done, or lost). */
static __always_inline int h2_step(struct h2_job *j) {
    if (j->left == 0)
        return 1;
    if (j->off > H2_BUF - H2_ROOM)
        h2_emit(j);
    if (j->avail == 0) {
        if (j->iovleft == 0)
            goto lost;
        struct u_iovec v = {};
        if (bpf_probe_read_user(&v, sizeof(v), (void *)j->iovp) != 0)
            goto lost;
        j->iovp += sizeof(v);
        j->iovleft--;
        j->src = (__u64)v.base;
        j->avail = v.len < j->left ? v.len : j->left;
        if (j->avail == 0)
            return 0;
    }
    if (j->copy == 0 && j->skip == 0) {
        if (j->state == H2_NEW) {
            /* The direction's first byte: the client's preface, else frames. */
            __u32 w = 0;
            if (j->avail < 4 || bpf_probe_read_user(&w, 4, (void *)j->src) != 0)
                goto lost;
            j->state = H2_WALK;
            if (w == 0x20495250) { /* "PRI " */
                j->copy = 24;
                goto payload;
            }
        }
        __u32 hgot = j->hgot;
        if (hgot > 8)
            goto lost;
        __u32 n = 9 - hgot;
        if (n > j->avail)
            n = j->avail;
        if (hgot == 0 && n == 9) {
            /* The whole header in view (the common case): copy, then parse it. */
            if (h2_copy(j, 9) != 0)
                goto lost;
            __u32 at = (j->off - 9) & (H2_BUF - 1);
            __builtin_memcpy(j->hbuf, &j->ev.data[at], 9);
        } else {
            /* Split across iovecs or syscalls: gather it in hbuf. */
            if (bpf_probe_read_user(&j->hbuf[hgot], n, (void *)j->src) != 0 || h2_copy(j, n) != 0)
                goto lost;
            hgot += n;
            j->hgot = hgot;
            if (hgot < 9)
                return 0;
            j->hgot = 0;
        }
        __u32 len = ((__u32)j->hbuf[0] << 16) | ((__u32)j->hbuf[1] << 8) | j->hbuf[2];
        __u8 type = j->hbuf[3];
        __u8 flags = j->hbuf[4];
        __u32 sid = (((__u32)j->hbuf[5] & 0x7f) << 24) | ((__u32)j->hbuf[6] << 16) |
                    ((__u32)j->hbuf[7] << 8) | j->hbuf[8];
        /* What the agent's parser takes for a protocol error on an exact
         * connection: the walk stops there too. */
        int ok = 1;
        switch (type) {
        case 0: /* DATA */
        case 1: /* HEADERS */
        case 5: /* PUSH_PROMISE */
        case 9: /* CONTINUATION */
            ok = sid != 0;
            break;
        case 2: /* PRIORITY */
            ok = sid != 0 && len == 5;
            break;
        case 3: /* RST_STREAM */
            ok = sid != 0 && len == 4;
            break;
        case 4: /* SETTINGS */
            ok = sid == 0 && len % 6 == 0 && !((flags & 1) && len);
            break;
        case 6: /* PING */
            ok = sid == 0 && len == 8;
            break;
        case 7: /* GOAWAY */
            ok = sid == 0 && len >= 8;
            break;
        case 8: /* WINDOW_UPDATE */
            ok = len == 4;
            break;
        }
        if (!ok)
            goto lost;
        __u32 keep = type == 0 ? H2_DATA_COPY : H2_FRAME_COPY;
        if (keep > len)
            keep = len;
        j->copy = keep;
        j->skip = len - keep;
    }
payload:
    if (j->copy) {
        __u64 n = j->copy;
        if (n > j->avail)
            n = j->avail;
        if (n > H2_CHUNK)
            n = H2_CHUNK;
        if (h2_copy(j, (__u32)n) != 0) {
            /* Unreadable: a gap inside a payload whose end is known. */
            h2_skip(j, (__u32)n);
            count(CNT_BYTES_NOT_COPIED, n);
        }
        j->copy -= n;
    } else if (j->skip) {
        __u64 n = j->skip;
        if (n > j->avail)
            n = j->avail;
        h2_skip(j, (__u32)n);
        j->skipped += n;
        j->skip -= n;
    }
    return 0;
lost:
    j->state = H2_LOST;
    return 1;
}

/* A run of the walk: H2_STEPS steps. Returns 1 if the caller should run
 * again (tail call), 2 if the job is another thread's (this thread was
 * preempted and the per-CPU job reused: its direction stays busy, so its
 * next syscall gives the walk up), else 0: the caller calls h2_finish (also
 * if the tail call fails). */
static __always_inline int h2_run(__u32 slot) {
    struct h2_job *j = h2_jobs.lookup(&slot);
    if (!j || j->tid != bpf_get_current_pid_tgid())
        return 2;
#pragma clang loop unroll(disable)
    for (int k = 0; k < H2_STEPS; k++) {
        if (h2_step(j))
            break;
    }
    if (j->left && j->state != H2_LOST && j->runs < H2_RUNS) {
        j->runs++;
        return 1;
    }
    return 0;
}

/* The walk is over: the last record, the counters, the direction's state. */
static __always_inline int h2_finish(__u32 slot) {
    struct h2_job *j = h2_jobs.lookup(&slot);
    if (!j)
        return 0;
    if (j->left) {
        /* Lost, or more frames than the runs walk: the rest is a gap, but
         * for its last TAIL_COPY bytes when they are in the current buffer
         * (message ends, as in the head + tail copy). */
        j->state = H2_LOST;
        __u32 rest = (__u32)j->left;
        __u32 t = 0;
        if (j->avail == j->left)
            t = rest < TAIL_COPY ? rest : TAIL_COPY;
        __u32 gap = rest - t;
        if (j->off > H2_BUF - H2_ROOM)
            h2_emit(j);
        if (gap)
            h2_skip(j, gap);
        if (t && h2_copy(j, t) != 0) {
            h2_skip(j, t);
            gap += t;
        }
        count(CNT_BYTES_NOT_COPIED, gap);
    }
    if (j->state == H2_LOST)
        count(CNT_H2_WALKS_LOST, 1);
    h2_emit(j);
    if (j->skipped)
        count(CNT_H2_BYTES_SKIPPED, j->skipped);
    struct conn_key key = {.pid = j->pid, .fd = j->fd};
    struct conn_state *st = conns.lookup(&key);
    if (st && st->generation == j->generation) {
        struct h2_dir *w = &st->h2[j->dir & 1];
        w->copy = j->copy;
        w->skip = j->skip;
        w->state = j->state;
        w->hgot = j->hgot;
        __builtin_memcpy(w->hbuf, j->hbuf, 8);
        w->busy = 0;
    }
    return 0;
}

/* ---- HTTP/1 exchanges framed in the kernel --------------------------------
 *
 * events.h (h1_resp_info) says what and why. The state lives in the
 * connection (struct h1_fast); h1_step runs in process_data, h1_request and
 * h1_response are tail-called (their loops are verified apart). A decline at
 * a response's first write runs process_data again with the connection off,
 * so that syscall gets its ordinary record. Loop results go to per-CPU memory,
 * not registers, so the verifier's paths through the scans merge. */
#define H1_DONE 1      /* framed here: no record for this syscall */
#define H1_CANDIDATE 2 /* a request read that may be simple: h1_request decides */
#define H1_REQ_SCAN (MAX_COPY < H1_SCAN ? MAX_COPY : H1_SCAN)
#define H1_RESP_SCAN 1024 /* response heads framed here are at most this long */
#define H1_CRLFCRLF 0x0a0d0a0d /* "\r\n\r\n" as a little-endian u32 */

struct h1_job {
    struct args_t a; /* the syscall: process_data runs again on a decline */
    __u64 id;
    __u64 total;
    __u64 cl;     /* scan results */
    __u32 found;
    __u32 cl_at;
    __u32 te;
    __u32 digits;
};
BPF_PERCPU_ARRAY(h1_jobs, struct h1_job, 1);
struct h1_buf {
    __u8 b[H1_RESP_SCAN + 64];
};
BPF_PERCPU_ARRAY(h1_bufs, struct h1_buf, 1);

static __always_inline int h1_step(void *ctx, __u64 id, struct args_t *a, struct conn_state *st,
                                   __u64 total) {
    __u8 s = st->h1.state;
    if (st->proto == PROTO_HTTP1 && st->role == ROLE_SERVER &&
        !(st->flags & (EVF_TLS | EVF_EXISTING))) {
        if (a->direction == DIR_EGRESS) {
            if (s == H1F_RESP) {
                if (total <= st->h1.remaining) {
                    /* Body bytes: counted, never copied. */
                    st->h1.remaining -= total;
                    st->pos[DIR_EGRESS] += total;
                    st->h1.last_ts = bpf_ktime_get_ns();
                    if (!st->h1.remaining) {
                        h1_emit(id, a->fd, st, 0);
                        st->h1.state = H1F_IDLE;
                    }
                    return H1_DONE;
                }
                h1_emit(id, a->fd, st, 2); /* more than the body: framing unknown */
            } else if (s == H1F_REQ && (a->kind == K_PLAIN || a->kind == K_IOV)) {
                __u32 zero = 0;
                struct h1_job *j = h1_jobs.lookup(&zero);
                if (j) {
                    j->a = *a;
                    j->id = id;
                    j->total = total;
                    data_prog.call(ctx, 3);
                }
            }
        } else if (s == H1F_IDLE && a->kind == K_PLAIN && total <= H1_REQ_SCAN) {
            return H1_CANDIDATE;
        } else if (s == H1F_RESP) {
            h1_emit(id, a->fd, st, 2); /* a request before the response's end */
        }
    }
    if (s == H1F_REQ)
        h1_flush(id, a->fd, st);
    st->h1.state = H1F_OFF;
    return 0;
}

/* Keep a simple request back, to go out with its response in one record. */
static __always_inline int h1_hold(struct data_event *ev, struct conn_state *st, __u32 len) {
    __u32 zero = 0;
    struct h1_held *stage = h1_stage.lookup(&zero);
    if (!stage || len >= H1_HOLD)
        return 0;
    __builtin_memcpy(&stage->hdr, &ev->hdr, sizeof(stage->hdr));
    stage->hdr.copied = len;
    stage->hdr.tail = 0;
    stage->info.req_ts = ev->hdr.ts_ns;
    stage->info.req_pos = ev->hdr.pos;
    stage->info.req_len = ev->hdr.len;
    stage->info.req_copied = len;
    /* Read back and masked (len < H1_HOLD, a power of two): clang would drop
     * a mask on len itself, and the verifier's range for len is wider. */
    __u32 n = *(volatile __u32 *)&stage->info.req_copied & (H1_HOLD - 1);
    if (bpf_probe_read_kernel(stage->data, n, ev->data) != 0)
        return 0;
    struct conn_key key = {.pid = ev->hdr.pid, .fd = ev->hdr.fd};
    if (h1_holds.update(&key, stage) != 0)
        return 0; /* full (exits leave entries behind until the agent clears them) */
    st->h1.held = 1;
    return 1;
}

/* data_prog[4]: is the request just read (whole, in the record being built)
 * exactly one GET or HEAD head? Marks it EVF_H1_REQ, then submits it. */
int h1_request(void *ctx) {
    __u32 zero = 0;
    struct data_event *ev = scratch.lookup(&zero);
    volatile struct h1_job *j = h1_jobs.lookup(&zero); /* see h1_response */
    if (!ev || !j)
        return 0;
    __u32 n = ev->hdr.len;
    if (n > H1_REQ_SCAN)
        n = H1_REQ_SCAN;
    __u8 *b = ev->data;
    int get = b[0] == 'G' && b[1] == 'E' && b[2] == 'T' && b[3] == ' ';
    int head = b[0] == 'H' && b[1] == 'E' && b[2] == 'A' && b[3] == 'D' && b[4] == ' ';
    j->found = 0;
    for (__u32 i = 0; i < H1_REQ_SCAN - 3; i++) {
        if (i + 4 > n)
            break;
        if (*(__u32 *)&b[i] == H1_CRLFCRLF) {
            j->found = i + 4;
            break;
        }
    }
    /* Only memory from here: per-iteration register ranges (n) would keep
     * the verifier from merging the loop's exits. */
    __u32 len = ev->hdr.len;
    int ok = (get || head) && len >= 18 && j->found == len;
    if (len > H1_REQ_SCAN)
        len = H1_REQ_SCAN; /* not ok; bounds the copy for the verifier */
    struct conn_key key = {.pid = ev->hdr.pid, .fd = ev->hdr.fd};
    struct conn_state *st = conns.lookup(&key);
    if (st && st->generation == ev->hdr.generation) {
        if (ok) {
            st->h1.state = H1F_REQ;
            st->h1.head_req = head;
            ev->hdr.flags |= EVF_H1_REQ;
            if (h1_hold(ev, st, len))
                return 0; /* goes out with its response */
        } else {
            st->h1.state = H1F_OFF;
        }
    }
    submit(ev, len, 0, len);
    return 0;
}

/* data_prog[3]: a response's first write. Frames it here if its head is all
 * in this write's first buffer, with a status >= 200 and a Content-Length
 * (or no body by rule); else the connection goes off and process_data runs
 * again for this syscall. */
int h1_response(void *ctx) {
    __u32 zero = 0;
    /* volatile: every scan result is re-read from memory, so the verifier
     * sees unknown values there, not one constant per loop exit. */
    volatile struct h1_job *j = h1_jobs.lookup(&zero);
    struct h1_buf *hb = h1_bufs.lookup(&zero);
    if (!j || !hb)
        return 0;
    struct conn_key key = {.pid = j->id >> 32, .fd = j->a.fd};
    struct conn_state *st = conns.lookup(&key);
    if (!st)
        return 0;
    void *src = (void *)j->a.ptr;
    __u64 avail = j->total;
    if (j->a.kind == K_IOV) {
        struct u_iovec first = {};
        bpf_probe_read_user(&first, sizeof(first), (void *)j->a.ptr);
        src = first.base;
        if (first.len < avail)
            avail = first.len;
    }
    __u32 n = avail > H1_RESP_SCAN ? H1_RESP_SCAN : (__u32)avail;
    __u8 *b = hb->b;
    int ok = n >= 16 && bpf_probe_read_user(b, n, src) == 0;
    ok = ok && b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && b[4] == '/' &&
         b[5] == '1' && b[6] == '.' && b[7] >= '0' && b[7] <= '9' && b[8] == ' ' &&
         b[9] >= '2' && b[9] <= '9' && b[10] >= '0' && b[10] <= '9' && b[11] >= '0' &&
         b[11] <= '9';
    j->found = 0;
    j->cl_at = 0;
    j->te = 0;
    if (ok) {
        for (__u32 i = 0; i < H1_RESP_SCAN - 3; i++) {
            if (i + 4 > n)
                break;
            if (*(__u16 *)&b[i] != 0x0a0d)
                continue;
            if (*(__u32 *)&b[i] == H1_CRLFCRLF) {
                j->found = i + 4;
                break;
            }
            /* A field line starts at i + 2: Content-Length? Transfer-Encoding? */
            __u64 w = *(__u64 *)&b[i + 2] | 0x2020202020202020ULL;
            __u64 w2 = *(__u64 *)&b[i + 10] | 0x2020202020202020ULL;
            if (w == 0x2d746e65746e6f63ULL && (w2 & 0x00ffffffffffffffULL) == 0x003a6874676e656cULL)
                j->cl_at = i + 17; /* "content-" "length:" */
            else if (w == 0x726566736e617274ULL && w2 == 0x6e69646f636e652dULL)
                j->te = 1; /* "transfer" "-encodin" */
        }
    }
    /* The Content-Length value; accumulators in memory, as above. */
    j->cl = 0;
    j->digits = 0;
    if (ok && j->cl_at) {
        for (int k = 0; k < 4; k++) {
            __u8 c = b[j->cl_at & (H1_RESP_SCAN - 1)];
            if (c != ' ' && c != '\t')
                break;
            j->cl_at++;
        }
        for (int k = 0; k < 19; k++) {
            __u8 c = b[(j->cl_at + k) & (H1_RESP_SCAN - 1)];
            if (c < '0' || c > '9')
                break;
            j->cl = j->cl * 10 + (c - '0');
            j->digits = k + 1;
        }
    }
    __u16 status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    __u64 body = j->cl;
    if (st->h1.head_req || status == 204 || status == 304)
        body = 0;
    else if (!j->digits)
        ok = 0; /* chunked, or delimited by close: the agent frames it */
    __u32 head_len = j->found;
    ok = ok && head_len && !j->te && j->total >= head_len && j->total - head_len <= body;
    if (!ok) {
        st->h1.state = H1F_OFF;
        h1_flush(j->id, j->a.fd, st);
        __u64 id = j->id;
        struct args_t a = {};
        __builtin_memcpy(&a, (void *)&j->a, sizeof(a));
        active_args.update(&id, &a);
        data_prog.call(ctx, 0);
        active_args.delete(&id);
        return 0;
    }
    __u64 now = bpf_ktime_get_ns();
    st->h1.status = status;
    st->h1.minor = b[7] - '0';
    st->h1.head_len = head_len;
    st->h1.body = body;
    st->h1.remaining = body - (j->total - head_len);
    st->h1.start_ts = now;
    st->h1.last_ts = now;
    st->h1.pos = st->pos[DIR_EGRESS];
    st->pos[DIR_EGRESS] += j->total;
    if (st->h1.remaining) {
        st->h1.state = H1F_RESP;
    } else {
        h1_emit(j->id, j->a.fd, st, 0);
        st->h1.state = H1F_IDLE;
    }
    return 0;
}

/* Every data syscall's exit tail-calls this one program, so the verifier
 * checks the copy loops once instead of once per tracepoint (load time went
 * from ~17 s to ~2 s). The loader puts it in data_prog[0]. */
int process_data(void *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    struct args_t *ap = active_args.lookup(&id);
    if (!ap)
        return 0;
    struct args_t a = *ap;
    active_args.delete(&id);
    long ret = a.ret;
    if (ret <= 0)
        return 0;

    __u32 zero = 0;
    struct data_event *ev = scratch.lookup(&zero);
    if (!ev)
        return 0;

    __u64 total = ret;
    __u32 want = total > MAX_COPY ? MAX_COPY : (__u32)total;
    __u32 copied = 0;
    __u8 flags = 0;

    /* One call site per copy routine keeps the verifier's work small. */
    struct u_iovec *iovp = 0;
    __u64 iovcnt = 0;
    if (a.kind == K_IOV) {
        iovp = (struct u_iovec *)a.ptr;
        iovcnt = a.cnt;
    } else if (a.kind == K_MSG) {
        struct u_msghdr m = {};
        bpf_probe_read_user(&m, sizeof(m), (void *)a.ptr);
        iovp = m.iov;
        iovcnt = m.iovlen;
    } else if (a.kind == K_MMSG) {
        /* ret is a message count. TCP rarely uses these: copy the first
         * message, count every message's bytes (the rest is a gap). */
        struct u_mmsghdr mm[4] = {};
        bpf_probe_read_user(&mm, sizeof(mm), (void *)a.ptr);
        total = 0;
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (i < ret)
                total += mm[i].len;
        if (total == 0)
            return 0;
        want = mm[0].len > MAX_COPY ? MAX_COPY : mm[0].len;
        iovp = mm[0].hdr.iov;
        iovcnt = mm[0].hdr.iovlen;
    } else if (a.kind == K_SENDFILE) {
        flags |= EVF_NOCOPY;
    }

    struct conn_key key = {.pid = id >> 32, .fd = a.fd};
    struct conn_state *st = conns.lookup(&key);
    struct conn_state fresh = {};
    int hint = 0;
    __u32 peeked = 0;
    if (!st || st->proto == PROTO_UNKNOWN) {
        /* Decide on a 16-byte peek before copying anything big: traffic that
         * is not HTTP (files, pipes, other protocols) costs only this. */
        void *src = (void *)a.ptr;
        __u64 avail = total;
        if (iovp) {
            struct u_iovec first = {};
            bpf_probe_read_user(&first, sizeof(first), iovp);
            src = first.base;
            avail = first.len < total ? first.len : total;
        }
        hint = infer_start(a.kind == K_SENDFILE ? 0 : src, avail, total, !st, &peeked);
    }

    if (!st) {
        /* An fd we never saw open: a connection from before the tracer, or
         * not a socket at all. Only HTTP-looking bytes make it a connection;
         * the agent checks it is a TCP socket. */
        if (hint == 0)
            return 0;
        fresh.generation = bpf_ktime_get_ns();
        fresh.flags = EVF_EXISTING;
        fresh.proto = hint_proto(hint);
        fresh.role = hint_role(hint, a.direction);
        conns.update(&key, &fresh);
        st = conns.lookup(&key);
        if (!st)
            return 0;
    } else if (st->proto == PROTO_UNKNOWN) {
        if (hint >= 3) {
            st->proto = PROTO_HTTP2;
        } else if (hint) {
            st->proto = PROTO_HTTP1;
        } else if (++st->tries >= UNKNOWN_TRIES || peeked >= 8) {
            /* The first 8+ bytes of a new connection decide. */
            st->proto = PROTO_NONE;
            count(CNT_NOT_HTTP, 1);
        }
        if (st->proto != PROTO_HTTP1 && st->proto != PROTO_HTTP2) {
            st->pos[a.direction & 1] += total;
            return 0;
        }
    } else if (st->proto == PROTO_NONE) {
        return 0;
    }

    send_open(id, a.fd, st);
    int h1_cand = 0;
    if (st->h1.state != H1F_OFF) {
        int r = h1_step(ctx, id, &a, st, total);
        if (r == H1_DONE)
            return 0;
        h1_cand = r == H1_CANDIDATE;
    }
    fill_hdr(&ev->hdr, EVT_DATA, id, a.fd);
    ev->hdr.direction = a.direction;
    ev->hdr.role = st->role;
    ev->hdr.flags = flags | st->flags | (st->proto == PROTO_HTTP2 ? EVF_HTTP2 : 0);
    ev->hdr.generation = st->generation;
    __u8 d = a.direction & 1;
    ev->hdr.pos = st->pos[d];
    ev->hdr.len = total > 0xffffffff ? 0xffffffff : (__u32)total;
    st->pos[d] += total;
    count(CNT_DATA_EVENTS, 1);
    if (st->proto == PROTO_HTTP2 && !(st->flags & EVF_EXISTING) &&
        h2_start(st, &ev->hdr, a.kind, a.ptr, (__u64)iovp, iovcnt, total, ev->hdr.pos, 0)) {
        data_prog.call(ctx, 2);
        h2_failed(st, d);
    }

    /* Copy the head [0, head_n) and, when the syscall is longer, its last
     * tail_n bytes, where message ends, chunked terminators and HTTP/2
     * trailers live; the tail follows the head directly in the record. */
    __u32 head_n = want;
    __u32 tail_n = 0;
    if (total > head_n && a.kind != K_MMSG && a.kind != K_SENDFILE) {
        __u64 rest = total - head_n;
        tail_n = rest > TAIL_COPY ? TAIL_COPY : (__u32)rest;
    }
    if (a.kind == K_PLAIN) {
        __u32 head = 0, tail = 0;
        head_n &= (MAX_COPY * 2 - 1);
        if (head_n > MAX_COPY)
            head_n = MAX_COPY;
        if (head_n && bpf_probe_read_user(ev->data, head_n, (void *)a.ptr) == 0)
            head = head_n;
        tail_n &= (TAIL_COPY * 2 - 1);
        if (tail_n > TAIL_COPY)
            tail_n = TAIL_COPY;
        if (head == head_n && tail_n &&
            bpf_probe_read_user(&ev->data[head_n], tail_n, (__u8 *)a.ptr + total - tail_n) == 0)
            tail = tail_n;
        if (h1_cand && head == total && !tail)
            data_prog.call(ctx, 4); /* h1_request submits it */
        submit(ev, head, tail, total);
        return 0;
    }
    if (iovp && (a.kind != K_MMSG || want)) {
        struct gather_job job = {.iovp = (__u64)iovp, .iovcnt = iovcnt, .total = total,
                                 .head_n = head_n, .tail_n = tail_n};
        if (a.kind == K_MMSG)
            job.total = want; /* only the first message's bytes are walked */
        gather_jobs.update(&zero, &job);
        data_prog.call(ctx, 1);
    }
    submit(ev, 0, 0, total); /* sendfile, or the gather could not run */
    return 0;
}

/* Walks GATHER_PER_CALL iovecs per run, copying what falls in the head and
 * tail windows, then tail-calls itself for the rest: any iovec count (grpcio
 * writes dozens) at a verifier cost of a few iovecs. */
int gather(void *ctx) {
    __u32 zero = 0;
    struct data_event *ev = scratch.lookup(&zero);
    struct gather_job *job = gather_jobs.lookup(&zero);
    if (!ev || !job)
        return 0;
    __u64 total = job->total;
    __u32 head_n = job->head_n;
    __u32 tail_n = job->tail_n;
    __u64 tail_at = total - tail_n;
#pragma unroll
    for (int k = 0; k < GATHER_PER_CALL; k++) {
        if (job->idx >= job->iovcnt || job->acc >= total)
            break;
        struct u_iovec iov = {};
        bpf_probe_read_user(&iov, sizeof(iov), (struct u_iovec *)job->iovp + job->idx);
        __u64 s = job->acc;
        __u64 e = s + iov.len;
        job->acc = e;
        job->idx++;
        if (e > total)
            e = total;
        if (s < head_n) {
            __u32 hs = (__u32)s & (MAX_COPY * 2 - 1);
            __u32 m = (__u32)((e < head_n ? e : head_n) - s) & (MAX_COPY * 2 - 1);
            if (hs < MAX_COPY && m <= MAX_COPY && m &&
                bpf_probe_read_user(&ev->data[hs], m, iov.base) == 0)
                job->got += m;
        }
        if (tail_n && e > tail_at) {
            __u64 cs = s > tail_at ? s : tail_at;
            __u32 d = (__u32)(cs - tail_at) & (TAIL_COPY * 2 - 1);
            __u32 m = (__u32)(e - cs) & (TAIL_COPY * 2 - 1);
            __u32 at = head_n & (MAX_COPY * 2 - 1);
            if (at <= MAX_COPY && d < TAIL_COPY && m <= TAIL_COPY && m &&
                bpf_probe_read_user(&ev->data[at + d], m, (__u8 *)iov.base + (cs - s)) == 0)
                job->tail_got += m;
        }
    }
    if (job->idx < job->iovcnt && job->acc < total && job->calls < 30) {
        job->calls++;
        data_prog.call(ctx, 1);
    }
    /* A failed read leaves a hole: send only the windows copied whole. The
     * tail is out of reach when more iovecs remain than the runs walk; the
     * head is still good. */
    if (job->got == head_n && job->tail_got == tail_n)
        submit(ev, head_n, tail_n, ev->hdr.len);
    else if (job->got == head_n)
        submit(ev, head_n, 0, ev->hdr.len);
    else
        submit(ev, 0, 0, ev->hdr.len);
    return 0;
}

/* data_prog[2]: the walk of a syscall's bytes, H2_STEPS steps a run. */
int h2_walk(void *ctx) {
    int r = h2_run(0);
    if (r == 1)
        data_prog.call(ctx, 2);
    return r == 2 ? 0 : h2_finish(0);
}

static __always_inline int finish_data(void *ctx, long ret) {
    __u64 id = bpf_get_current_pid_tgid();
    struct args_t *ap = active_args.lookup(&id);
    if (!ap)
        return 0;
    if (ret <= 0) {
        active_args.delete(&id);
        return 0;
    }
    ap->ret = ret;
    data_prog.call(ctx, 0);
    /* Only reached if the tail call failed (program not installed). */
    active_args.delete(&id);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) { return stash(K_PLAIN, DIR_INGRESS, args->fd, (__u64)args->buf, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return stash(K_PLAIN, DIR_EGRESS, args->fd, (__u64)args->buf, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return stash(K_IOV, DIR_INGRESS, args->fd, (__u64)args->vec, args->vlen); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return stash(K_IOV, DIR_EGRESS, args->fd, (__u64)args->vec, args->vlen); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { return stash(K_PLAIN, DIR_INGRESS, args->fd, (__u64)args->ubuf, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return stash(K_PLAIN, DIR_EGRESS, args->fd, (__u64)args->buff, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg) { return stash(K_MSG, DIR_INGRESS, args->fd, (__u64)args->msg, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return stash(K_MSG, DIR_EGRESS, args->fd, (__u64)args->msg, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg) { return stash(K_MMSG, DIR_INGRESS, args->fd, (__u64)args->mmsg, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg) { return stash(K_MMSG, DIR_EGRESS, args->fd, (__u64)args->mmsg, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return finish_data(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendfile64) { return stash(K_SENDFILE, DIR_EGRESS, args->out_fd, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendfile64) { return finish_data(args, args->ret); }

/* OpenSSL uprobes: plaintext of TLS connections. */
#include "tls.c"
