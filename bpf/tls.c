/* TLS plaintext through OpenSSL uprobes (included at the end of tracer.c).
 *
 * SSL_read, SSL_write, SSL_read_ex and SSL_write_ex: the entry probe stashes
 * (ssl, buf, direction, out-param) per thread in `active_ssl`; a read/write/
 * send/recv syscall the library makes while the call is in progress records
 * its fd there and is not submitted (it is ciphertext; stash() in tracer.c).
 * The one return probe (attached to all four) knows the plaintext byte count,
 * finds the socket (the nested fd, else the last fd seen for this SSL object,
 * kept with the connection's generation so fd reuse is noticed), marks the
 * connection TLS (its syscalls stop being copied) and submits the plaintext
 * as an EVT_DATA record with EVF_TLS, positioned on the plaintext stream.
 */

/* struct ssl_args, active_ssl and ssl_nested() are in tracer.c: stash()
 * needs them. */

struct ssl_key {
    __u32 pid;
    __u32 _pad;
    __u64 ssl;
};

struct ssl_sock {
    __s32 fd;
    __u32 _pad;
    __u64 generation;
};

BPF_TABLE("lru_hash", struct ssl_key, struct ssl_sock, ssl_fds, MAX_CONNS);
/* SSL calls whose socket is unknowable, by process: the SSL object never did
 * a syscall of its own (memory BIOs: Python asyncio, some event loops). The
 * agent reads and clears it, and says that process's TLS is not visible. */
BPF_TABLE("lru_hash", __u32, __u64, ssl_unmapped, 1024);
/* Its own scratch: a preempted syscall program keeps its record intact. */
BPF_PERCPU_ARRAY(tls_scratch, struct data_event, 1);

static __always_inline int ssl_enter(struct pt_regs *ctx, __u8 dir, int ex) {
    __u64 id = bpf_get_current_pid_tgid();
    if (!is_traced(id >> 32))
        return 0;
    struct ssl_args a = {};
    a.ssl = PT_REGS_PARM1(ctx);
    a.buf = PT_REGS_PARM2(ctx);
    a.outp = ex ? PT_REGS_PARM4(ctx) : 0;
    a.fd = -1;
    a.direction = dir;
    active_ssl.update(&id, &a);
    return 0;
}

int ssl_read_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_INGRESS, 0); }
int ssl_read_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_INGRESS, 1); }
int ssl_write_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_EGRESS, 0); }
int ssl_write_ex_enter(struct pt_regs *ctx) { return ssl_enter(ctx, DIR_EGRESS, 1); }

/* The return probe of all four functions. */
int ssl_ret(struct pt_regs *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    struct ssl_args *ap = active_ssl.lookup(&id);
    if (!ap)
        return 0;
    struct ssl_args a = *ap;
    active_ssl.delete(&id);

    /* All four return an int: the upper half of the register is not ours. */
    int ret = (int)PT_REGS_RC(ctx);
    __u64 total = 0;
    if (a.outp) {
        if (ret != 1)
            return 0;
        bpf_probe_read_user(&total, sizeof(total), (void *)a.outp);
    } else if (ret > 0) {
        total = ret;
    }
    if (total == 0)
        return 0;

    __u32 tgid = id >> 32;
    struct ssl_key sk = {.pid = tgid, .ssl = a.ssl};
    struct conn_state *st = 0;
    if (a.fd < 0) {
        /* Buffered: no syscall this time. The last socket of this SSL
         * object, if its connection is still the one we saw. */
        struct ssl_sock *ss = ssl_fds.lookup(&sk);
        if (!ss) {
            __u64 one = 1;
            __u64 *n = ssl_unmapped.lookup(&tgid);
            if (n)
                __sync_fetch_and_add(n, 1);
            else
                ssl_unmapped.update(&tgid, &one);
            return 0;
        }
        a.fd = ss->fd;
        struct conn_key key = {.pid = tgid, .fd = a.fd};
        st = conns.lookup(&key);
        if (!st || st->generation != ss->generation)
            return 0;
    }
    struct conn_key key = {.pid = tgid, .fd = a.fd};
    if (!st)
        st = conns.lookup(&key);

    __u8 d = a.direction & 1;
    int hint = 0;
    if (!st || st->tls_proto == PROTO_UNKNOWN) {
        __u32 peeked = 0;
        hint = infer_start((void *)a.buf, total, total, !st, &peeked);
        if (!st) {
            /* A connection from before the tracer: only HTTP makes it one. */
            if (hint == 0)
                return 0;
            struct conn_state fresh = {};
            fresh.generation = bpf_ktime_get_ns();
            fresh.flags = EVF_EXISTING | EVF_TLS;
            fresh.proto = PROTO_NONE; /* the syscalls carry ciphertext */
            fresh.tls_proto = hint_proto(hint);
            fresh.role = hint_role(hint, a.direction);
            conns.update(&key, &fresh);
            st = conns.lookup(&key);
            if (!st)
                return 0;
        } else {
            st->flags |= EVF_TLS;
            if (hint >= 3) {
                st->tls_proto = PROTO_HTTP2;
            } else if (hint) {
                st->tls_proto = PROTO_HTTP1;
            } else if (++st->tls_tries >= UNKNOWN_TRIES || total >= 8) {
                st->tls_proto = PROTO_NONE;
                count(CNT_NOT_HTTP, 1);
            }
        }
    }
    /* Remember the socket even when the plaintext is not ours to copy: the
     * next buffered call on this SSL object needs it. */
    struct ssl_sock ss = {.fd = a.fd, .generation = st->generation};
    ssl_fds.update(&sk, &ss);
    st->flags |= EVF_TLS;
    if (st->tls_proto != PROTO_HTTP1 && st->tls_proto != PROTO_HTTP2) {
        st->tls_pos[d] += total;
        return 0;
    }

    send_open(id, a.fd, st);
    __u32 zero = 0;
    struct data_event *ev = tls_scratch.lookup(&zero);
    if (!ev)
        return 0;
    fill_hdr(&ev->hdr, EVT_DATA, id, a.fd);
    ev->hdr.direction = a.direction;
    ev->hdr.role = st->role;
    ev->hdr.flags = st->flags | EVF_TLS | (st->tls_proto == PROTO_HTTP2 ? EVF_HTTP2 : 0);
    ev->hdr.generation = st->generation;
    ev->hdr.pos = st->tls_pos[d];
    ev->hdr.len = total > 0xffffffff ? 0xffffffff : (__u32)total;
    st->tls_pos[d] += total;
    count(CNT_DATA_EVENTS, 1);
    if (st->tls_proto == PROTO_HTTP2 && !(st->flags & EVF_EXISTING) &&
        h2_start(st, &ev->hdr, K_PLAIN, a.buf, 0, 0, total, ev->hdr.pos, 1)) {
        tls_prog.call(ctx, 0);
        h2_failed(st, d);
    }

    __u32 head_n = total > MAX_COPY ? MAX_COPY : (__u32)total;
    __u32 tail_n = 0;
    if (total > head_n) {
        __u64 rest = total - head_n;
        tail_n = rest > TAIL_COPY ? TAIL_COPY : (__u32)rest;
    }
    __u32 head = 0, tail = 0;
    head_n &= (MAX_COPY * 2 - 1);
    if (head_n > MAX_COPY)
        head_n = MAX_COPY;
    if (head_n && bpf_probe_read_user(ev->data, head_n, (void *)a.buf) == 0)
        head = head_n;
    tail_n &= (TAIL_COPY * 2 - 1);
    if (tail_n > TAIL_COPY)
        tail_n = TAIL_COPY;
    if (head == head_n && tail_n &&
        bpf_probe_read_user(&ev->data[head_n], tail_n, (__u8 *)a.buf + total - tail_n) == 0)
        tail = tail_n;
    submit(ev, head, tail, total);
    return 0;
}

/* tls_prog[0]: the HTTP/2 frame walk (tracer.c) of a TLS connection's plaintext. */
int h2_walk_tls(struct pt_regs *ctx) {
    int r = h2_run(1);
    if (r == 1)
        tls_prog.call(ctx, 0);
    return r == 2 ? 0 : h2_finish(1);
}
