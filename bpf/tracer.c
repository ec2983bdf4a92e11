/* ebpf-tracer kernel side: syscall tracepoints only (no kprobes).
 *
 * Capture, tag, submit. Entry tracepoints stash the syscall's arguments by
 * thread; exit tracepoints know the true byte count, find the connection by
 * (tgid, fd), infer its protocol from the first bytes, and submit one
 * ring-buffer record with a bounded copy of the payload.
 *
 * Settings arrive as -D flags from ebpf_tracer/loader.py:
 *   MAX_COPY         payload bytes copied from the start of each syscall (power of two)
 *   TAIL_COPY        and from its end, when it is longer (message ends, trailers)
 *   RINGBUF_PAGES    ring buffer size in pages
 *   MAX_CONNS        tracked connections (LRU)
 *   AGENT_PID        the agent's tgid: never traced
 *   TRACE_ALL        1: every process but the agent; 0: the traced_pids map
 *   EXPECTED_HDR_SIZE, EXPECTED_OPEN_SIZE   the Python mirror's sizes
 */
#include <uapi/linux/ptrace.h>
#include <linux/socket.h>
#include "events.h"

_Static_assert(sizeof(struct event_hdr) == EXPECTED_HDR_SIZE, "event_hdr differs from events.py");
_Static_assert(sizeof(struct open_info) == EXPECTED_OPEN_SIZE, "open_info differs from events.py");

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

struct conn_state {
    __u64 generation;
    __u64 pos[2];
    __u8 role;
    __u8 proto;
    __u8 tries;
    __u8 flags;     /* EVF_EXISTING; EVF_TLS once a TLS library probe saw it */
    __u8 tls_proto; /* inferred from the plaintext (tls.c) */
    __u8 tls_tries;
    __u16 _pad;
    __u64 tls_pos[2]; /* plaintext byte positions (tls.c) */
};

/* What an entry tracepoint leaves for its exit. */
#define K_PLAIN 1  /* read/write/recvfrom/sendto: buf */
#define K_IOV 2    /* readv/writev: iov, iovcnt */
#define K_MSG 3    /* recvmsg/sendmsg: msghdr */
#define K_MMSG 4   /* recvmmsg/sendmmsg: mmsghdr vector */
#define K_SENDFILE 5
struct args_t {
    __u8 kind;
    __u8 direction;
    __u16 _pad;
    __s32 fd;
    __u64 ptr;  /* buf, iov, msghdr or mmsghdr */
    __u64 cnt;  /* iovcnt (K_IOV) */
    __s64 ret;  /* set by the exit tracepoint before the tail call */
};

struct accept_args {
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

BPF_PROG_ARRAY(data_prog, 2);
/* Counters the agent reads: 0 ringbuf drops, 1 data events, 2 conns opened,
 * 3 bytes not copied (beyond MAX_COPY), 4 inference misses. */
BPF_PERCPU_ARRAY(counters, __u64, 8);

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
 * 1, for a response 2, else 0. Accepts every method the RFCs register that
 * clients send in practice. */
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
        return 0;
    case 'H': return b[1] == 'E' && b[2] == 'A' && b[3] == 'D' && b[4] == ' ';
    case 'D': return b[1] == 'E' && b[2] == 'L' && b[3] == 'E' && b[4] == 'T' && b[5] == 'E' && b[6] == ' ';
    case 'O': return b[1] == 'P' && b[2] == 'T' && b[3] == 'I' && b[4] == 'O' && b[5] == 'N' && b[6] == 'S' && b[7] == ' ';
    case 'C': return b[1] == 'O' && b[2] == 'N' && b[3] == 'N' && b[4] == 'E' && b[5] == 'C' && b[6] == 'T' && b[7] == ' ';
    case 'T': return b[1] == 'R' && b[2] == 'A' && b[3] == 'C' && b[4] == 'E' && b[5] == ' ';
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
 * and exported again, for ever. The kernel remembers the local address and
 * port of every TCP connection the agent opens and never traces the far end
 * of it. sock:inet_sock_set_state gives addresses and ports from tracefs;
 * the connecting task is current only at SYN_SENT, before the port is
 * chosen, so the socket address links SYN_SENT to ESTABLISHED (which the
 * client reaches before the server's accept() returns). */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define IPPROTO_TCP_ 6
struct own_key {
    __u8 addr[16]; /* IPv6, or IPv4 mapped (::ffff:a.b.c.d) */
    __u16 port;
    __u16 _pad;
};
BPF_HASH(own_pending, __u64, __u8, 1024);
BPF_HASH(own_socks, __u64, struct own_key, 1024);
BPF_HASH(own_ends, struct own_key, __u8, 1024);

TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    __u64 sk = (__u64)args->skaddr;
    __u8 one = 1;
    if (args->newstate == TCP_SYN_SENT) {
        if ((bpf_get_current_pid_tgid() >> 32) == AGENT_PID)
            own_pending.update(&sk, &one);
        return 0;
    }
    if (args->newstate == TCP_ESTABLISHED) {
        if (!own_pending.lookup(&sk))
            return 0;
        own_pending.delete(&sk);
        struct own_key k = {};
        /* saddr_v6 holds the IPv4-mapped address for AF_INET sockets. */
        __builtin_memcpy(k.addr, args->saddr_v6, 16);
        k.port = args->sport;
        own_socks.update(&sk, &k);
        own_ends.update(&k, &one);
        return 0;
    }
    if (args->newstate == TCP_CLOSE) {
        own_pending.delete(&sk);
        struct own_key *k = own_socks.lookup(&sk);
        if (k) {
            struct own_key gone = *k;
            own_ends.delete(&gone);
            own_socks.delete(&sk);
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
    conns.update(&key, &st);
    count(2, 1);

    struct open_event ev = {};
    fill_hdr(&ev.hdr, EVT_OPEN, id, fd);
    ev.hdr.role = role;
    ev.hdr.generation = st.generation;
    ev.info.listen_fd = listen_fd;
    bpf_get_current_comm(ev.info.comm, sizeof(ev.info.comm));
    if (uaddr) {
        struct u_sockaddr_in6 sa = {};
        bpf_probe_read_user(&sa, sizeof(sa), (void *)uaddr);
        struct own_key peer = {};
        if (sa.family == AF_INET) {
            struct u_sockaddr_in *s4 = (struct u_sockaddr_in *)&sa;
            ev.info.family = AF_INET;
            ev.info.peer_port = bpf_ntohs(s4->port);
            __builtin_memcpy(ev.info.peer_addr, s4->addr, 4);
            peer.addr[10] = 0xff;
            peer.addr[11] = 0xff;
            __builtin_memcpy(&peer.addr[12], s4->addr, 4);
        } else if (sa.family == AF_INET6) {
            ev.info.family = AF_INET6;
            ev.info.peer_port = bpf_ntohs(sa.port);
            __builtin_memcpy(ev.info.peer_addr, sa.addr, 16);
            __builtin_memcpy(peer.addr, sa.addr, 16);
        } else {
            /* AF_UNIX and friends: not TCP, forget it. */
            conns.delete(&key);
            return;
        }
        peer.port = ev.info.peer_port;
        if (role == ROLE_SERVER && own_ends.lookup(&peer)) {
            /* The client is this agent's exporter: never traced. */
            st.proto = PROTO_NONE;
            st.tls_proto = PROTO_NONE;
            conns.update(&key, &st);
            count(5, 1);
            return;
        }
    }
    if (events.ringbuf_output(&ev, sizeof(ev), 0) != 0)
        count(0, 1);
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
    if ((st->proto != PROTO_NONE && st->proto != PROTO_UNKNOWN) ||
        (st->tls_proto != PROTO_NONE && st->tls_proto != PROTO_UNKNOWN)) {
        struct event_hdr h = {};
        fill_hdr(&h, EVT_CLOSE, id, args->fd);
        h.role = st->role;
        h.generation = st->generation;
        if (events.ringbuf_output(&h, sizeof(h), 0) != 0)
            count(0, 1);
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
        count(0, 1);
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
        count(0, 1);
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
    __u32 got;     /* bytes copied so far */
    __u32 calls;
    __u32 _pad;
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
        count(3, total - copied);
    if (events.ringbuf_output(ev, sizeof(struct event_hdr) + copied, 0) != 0)
        count(0, 1);
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
        __u8 peek[16] = {};
        void *src = (void *)a.ptr;
        __u64 avail = total;
        if (iovp) {
            struct u_iovec first = {};
            bpf_probe_read_user(&first, sizeof(first), iovp);
            src = first.base;
            avail = first.len < total ? first.len : total;
        }
        if (src && a.kind != K_SENDFILE && avail >= 9) {
            peeked = avail >= 16 ? 16 : 9;
            if (bpf_probe_read_user(peek, peeked == 16 ? 16 : 9, src) != 0)
                peeked = 0;
        }
        if (peeked >= 8)
            hint = http1_start(peek, peeked);
        if (!hint && peeked >= 9)
            hint = http2_frame_start(peek, total, !st);
    }

    if (!st) {
        /* An fd we never saw open: a connection from before the tracer, or
         * not a socket at all. Only HTTP-looking bytes make it a connection;
         * the agent checks it is a TCP socket. */
        if (hint == 0)
            return 0;
        fresh.generation = bpf_ktime_get_ns();
        fresh.flags = EVF_EXISTING;
        if (hint == 3) {
            fresh.proto = PROTO_HTTP2;
            fresh.role = a.direction == DIR_INGRESS ? ROLE_SERVER : ROLE_CLIENT;
        } else if (hint == 4) {
            /* Mid-connection HTTP/2: the agent decides the role from the
             * stream ids it sees. */
            fresh.proto = PROTO_HTTP2;
            fresh.role = ROLE_UNKNOWN;
        } else {
            fresh.proto = PROTO_HTTP1;
            /* A request read, or a response written, means we serve. */
            fresh.role = (hint == 1) == (a.direction == DIR_INGRESS) ? ROLE_SERVER : ROLE_CLIENT;
        }
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
            count(4, 1);
        }
        if (st->proto != PROTO_HTTP1 && st->proto != PROTO_HTTP2) {
            st->pos[a.direction & 1] += total;
            return 0;
        }
    } else if (st->proto == PROTO_NONE) {
        return 0;
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
    count(1, 1);

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
                job->got += m;
        }
    }
    if (job->idx < job->iovcnt && job->acc < total && job->calls < 30) {
        job->calls++;
        data_prog.call(ctx, 1);
    }
    /* Any failed read leaves a hole: then send lengths only. */
    if (job->got == head_n + tail_n)
        submit(ev, head_n, tail_n, ev->hdr.len);
    else if (job->got >= head_n && job->idx >= job->iovcnt)
        submit(ev, head_n, 0, ev->hdr.len);
    else
        submit(ev, 0, 0, ev->hdr.len);
    return 0;
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
