/*
 * fanout.c: fanout load client for the relay hub (POST /event in, WS /ws?callId= out).
 *
 * One thread, one epoll loop. It opens M WebSocket subscribers on one fresh callId (a real HTTP
 * upgrade: random Sec-WebSocket-Key, Sec-WebSocket-Accept checked) and W keep-alive HTTP/1.1
 * publisher connections that POST /event, one request in flight on each. Then:
 *
 *   phase A  single events, one at a time: each is timed from its send until all M subscribers
 *            hold it ("time-to-all");
 *   phase B  a closed loop with at most K events in flight that not all M subscribers have yet;
 *            warm-up, then a measured window of D seconds, then a drain of what is in flight.
 *
 * Every event is a relay-shaped JSON object carrying its sequence number "n" and its send time
 * "t0" (CLOCK_MONOTONIC ns since this client started, small enough to stay exact in a JavaScript
 * number). Per-delivery latency is the receive time minus t0. Frames that arrive before the
 * first publish (the backlog) are counted and skipped.
 *
 * Checks: per subscriber "n" strictly increasing (with W > 1 an inversion can also come from two
 * POSTs racing on different connections, so the authoritative check is that every subscriber saw
 * the same order: an order-sensitive hash of its phase-B "n" sequence, compared with subscriber 0's);
 * a server "seq" field, when present, strictly increasing per subscriber; and drops
 * (expected deliveries = phase-B events sent x M, against what arrived).
 *
 * Output: one JSON line on stdout; diagnostics on stderr. Exit 0 when the run completed.
 * The target must be a loopback address; the run is bounded by its phases and by alarm().
 *
 * Build: gcc -O2 -o bench/out/fanout bench/fanout/fanout.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define SUB_RBUF_BYTES (16 * 1024)
#define PUB_RBUF_BYTES (4 * 1024)
#define MAX_FRAME_BYTES (64LL * 1024 * 1024)
#define MAX_EVENTS_TOTAL (50 * 1000 * 1000)
#define MAX_LATENCIES (40 * 1000 * 1000)
#define MAX_PUB_RETRIES 3
#define EPOLL_BATCH 1024
#define SETTLE_NS (300 * NS_PER_MS)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define EVENT_TEXT "Hola, buenos d\xc3\xad" "as, quer\xc3\xad" "a consultar el estado de mi pedido y si pueden cambiar la fecha de entrega."

/* ------------------------------------------------------------------ options */

static struct {
    char host[64];
    int port;
    int m, w, k;
    double seconds, warmup_s;
    int a_events;
    char call_id[96];
    int connect_parallel;
    double setup_timeout_s, event_timeout_s, idle_reconnect_s, a_gap_s;
} opt = {
    .host = "127.0.0.1", .port = 7070, .m = 100, .w = 8, .k = 8, .seconds = 6.0, .warmup_s = 2.0,
    .a_events = 20, .connect_parallel = 64, .setup_timeout_s = 30.0, .event_timeout_s = 10.0,
    .idle_reconnect_s = 4.0, .a_gap_s = 0.01,
};

/* ------------------------------------------------------------------ time */

static int64_t g_epoch;

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec - g_epoch;
}

static int64_t realtime_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ SHA-1 and base64 (handshake) */

static uint32_t rol32(uint32_t x, int s) { return (x << s) | (x >> (32 - s)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d; d = c; c = rol32(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t full = len / 64 * 64;
    for (size_t i = 0; i < full; i += 64) sha1_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t r = len - full;
    memcpy(tail, data + full, r);
    tail[r] = 0x80;
    size_t tlen = r < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) tail[tlen - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t i = 0; i < tlen; i += 64) sha1_block(h, tail + i);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = h[i] >> 24; out[4 * i + 1] = h[i] >> 16; out[4 * i + 2] = h[i] >> 8; out[4 * i + 3] = h[i];
    }
}

static void base64(const uint8_t *in, size_t len, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = 0;
}

static void ws_accept_for(const char *key, char out[29]) {
    char buf[128];
    int n = snprintf(buf, sizeof buf, "%s%s", key, WS_GUID);
    uint8_t digest[20];
    sha1((const uint8_t *)buf, (size_t)n, digest);
    base64(digest, 20, out);
}

static void random_bytes(void *p, size_t n) {
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = getrandom(b, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("getrandom");
            exit(2);
        }
        b += r;
        n -= (size_t)r;
    }
}

/* ------------------------------------------------------------------ connections */

enum kind { SUB, PUB };
enum state { ST_IDLE_SLOT, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };

typedef struct conn {
    int fd, kind, state, idx;
    uint32_t epoll_mask;
    uint8_t *rbuf;
    size_t rlen, rcap;
    char *wbuf;
    size_t wlen, woff, wcap;
    /* subscriber */
    char key[32];
    int64_t last_n, last_seq;
    uint64_t order_hash, recv_b;
    int inverted, seq_bad;
    uint8_t *msg; /* reassembly of fragmented messages */
    size_t msglen, msgcap;
    /* publisher */
    int busy, retries;
    int64_t inflight_n, last_used;
    char *req; /* the request in flight, kept for a resend after a reconnect */
    size_t reqlen, reqcap;
} conn;

static int g_ep;
static conn *g_conns; /* M subscribers, then W publishers */
static struct sockaddr_in g_addr;

/* ------------------------------------------------------------------ run state and counters */

enum phase { PH_SETUP, PH_SETTLE, PH_A, PH_B, PH_DRAIN, PH_DONE, PH_FAILED };
static int g_phase = PH_SETUP;
static char g_error[256];
static volatile sig_atomic_t g_alarm;

static int subs_next, subs_pending, subs_open, pubs_open;
static int64_t setup_started, setup_done_at, settle_until, setup_deadline;
static int publishing;

/* events, indexed by n (1-based) */
enum { EV_B = 1, EV_DONE = 2, EV_STALLED = 4 };
static int64_t *ev_t0;
static uint32_t *ev_recv;
static uint8_t *ev_flags;
static size_t ev_cap;
static int64_t last_n;
static int64_t inflight[1024];
static int n_inflight;

/* phase A */
static int a_sent, a_done;
static int64_t a_next_at, a_cur;

/* phase B */
static int64_t b_started, win_start, win_end, drain_until, b_first_n;
static int win_open, win_closed;
static int64_t b_sent, win_deliveries, win_events;
static struct rusage ru_win_start, ru_win_end;
static int64_t win_start_mono_abs, win_end_mono_abs;

/* counters */
static int64_t backlog_frames, foreign_frames, t0_mismatch, inversions, subs_inverted;
static int64_t seq_seen, seq_violations, subs_seq_bad, late_completions, stalled_events;
static int64_t pub_requests, pub_non2xx, pub_retries, pub_reconnects_idle, pub_reconnects_close;
static int64_t subs_closed, protocol_errors, masked_frames, pings;

typedef struct { int64_t *v; size_t n, cap; } samples;
static samples lat_a, lat_b, tta_a;

static void samples_add(samples *s, int64_t x) {
    if (s->n == s->cap) {
        if (s->cap >= MAX_LATENCIES) return;
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) { perror("realloc"); exit(2); }
    }
    s->v[s->n++] = x;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* nearest-rank percentile of sorted samples, in ms */
static double pct_ms(const samples *s, double q) {
    if (s->n == 0) return -1;
    size_t rank = (size_t)(q * (double)s->n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > s->n) rank = s->n;
    return (double)s->v[rank - 1] / 1e6;
}

static void fail(const char *msg) {
    if (g_phase != PH_FAILED) {
        snprintf(g_error, sizeof g_error, "%s", msg);
        g_phase = PH_FAILED;
    }
}

/* ------------------------------------------------------------------ socket plumbing */

static void ep_set(conn *c, uint32_t mask) {
    if (c->epoll_mask == mask) return;
    struct epoll_event ev = {.events = mask, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) { perror("epoll_ctl mod"); exit(2); }
    c->epoll_mask = mask;
}

static int open_socket(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { perror("socket"); return -1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0 && errno != EINPROGRESS) {
        perror("connect");
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->rlen = 0;
    c->wlen = c->woff = 0;
    c->epoll_mask = EPOLLIN | EPOLLOUT;
    struct epoll_event ev = {.events = c->epoll_mask, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) < 0) { perror("epoll_ctl add"); exit(2); }
    return 0;
}

static void close_socket(conn *c) {
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = ST_CLOSED;
}

static void flush_out(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t r = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (r > 0) { c->woff += (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        break; /* EAGAIN, or an error the read side will report */
    }
    if (c->woff == c->wlen) c->woff = c->wlen = 0;
    ep_set(c, c->wlen ? (EPOLLIN | EPOLLOUT) : EPOLLIN);
}

static void send_bytes(conn *c, const void *data, size_t len) {
    if (c->wlen + len > c->wcap) {
        c->wcap = (c->wlen + len) * 2;
        c->wbuf = realloc(c->wbuf, c->wcap);
        if (!c->wbuf) { perror("realloc"); exit(2); }
    }
    memcpy(c->wbuf + c->wlen, data, len);
    c->wlen += len;
    flush_out(c);
}

/* A masked client frame (close or pong); a real random non-zero mask. */
static void send_ws_frame(conn *c, int opcode, const uint8_t *payload, size_t len) {
    uint8_t f[2 + 4 + 125];
    if (len > 125) len = 125;
    uint8_t mask[4];
    do random_bytes(mask, 4); while (!(mask[0] | mask[1] | mask[2] | mask[3]));
    f[0] = 0x80 | (uint8_t)opcode;
    f[1] = 0x80 | (uint8_t)len;
    memcpy(f + 2, mask, 4);
    for (size_t i = 0; i < len; i++) f[6 + i] = payload[i] ^ mask[i & 3];
    send_bytes(c, f, 6 + len);
}

/* ------------------------------------------------------------------ events */

static void ensure_event_capacity(int64_t n) {
    if ((size_t)n < ev_cap) return;
    size_t cap = ev_cap ? ev_cap * 2 : 65536;
    while ((size_t)n >= cap) cap *= 2;
    ev_t0 = realloc(ev_t0, cap * sizeof *ev_t0);
    ev_recv = realloc(ev_recv, cap * sizeof *ev_recv);
    ev_flags = realloc(ev_flags, cap * sizeof *ev_flags);
    if (!ev_t0 || !ev_recv || !ev_flags) { perror("realloc"); exit(2); }
    memset(ev_recv + ev_cap, 0, (cap - ev_cap) * sizeof *ev_recv);
    memset(ev_flags + ev_cap, 0, (cap - ev_cap) * sizeof *ev_flags);
    ev_cap = cap;
}

static void inflight_remove(int64_t n) {
    for (int i = 0; i < n_inflight; i++)
        if (inflight[i] == n) { inflight[i] = inflight[--n_inflight]; return; }
}

static conn *free_publisher(void) {
    static int rr;
    for (int i = 0; i < opt.w; i++) {
        conn *p = &g_conns[opt.m + (rr + i) % opt.w];
        if (p->state == ST_OPEN && !p->busy) { rr = (rr + i + 1) % opt.w; return p; }
    }
    return NULL;
}

/* Sends event n+1 on a free publisher; returns 0 when none is free. */
static int publish(int phase_b) {
    if (last_n + 1 >= MAX_EVENTS_TOTAL) return 0;
    conn *p = free_publisher();
    if (!p) return 0;
    int64_t n = ++last_n;
    ensure_event_capacity(n);
    int64_t ts = realtime_ms();
    int64_t t0 = now_ns();
    char body[512];
    int blen = snprintf(body, sizeof body,
                        "{\"type\":\"partial\",\"callId\":\"%s\",\"speaker\":\"customer\",\"turnId\":\"t-%lld\","
                        "\"text\":\"%s\",\"tsStart\":%lld,\"tsEnd\":%lld,\"n\":%lld,\"t0\":%lld}",
                        opt.call_id, (long long)n, EVENT_TEXT, (long long)ts, (long long)(ts + 1200),
                        (long long)n, (long long)t0);
    size_t need = (size_t)blen + 256;
    if (p->reqcap < need) { p->reqcap = need; p->req = realloc(p->req, need); }
    int hlen = snprintf(p->req, p->reqcap,
                        "POST /event HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\n\r\n",
                        opt.host, opt.port, blen);
    memcpy(p->req + hlen, body, (size_t)blen);
    p->reqlen = (size_t)hlen + (size_t)blen;
    ev_t0[n] = t0;
    ev_recv[n] = 0;
    ev_flags[n] = phase_b ? EV_B : 0;
    p->busy = 1;
    p->retries = 0;
    p->inflight_n = n;
    p->last_used = t0;
    pub_requests++;
    inflight[n_inflight++] = n;
    send_bytes(p, p->req, p->reqlen);
    return 1;
}

static void on_complete(int64_t n, int64_t now) {
    if (ev_flags[n] & EV_STALLED) { late_completions++; return; }
    ev_flags[n] |= EV_DONE;
    inflight_remove(n);
    if (!(ev_flags[n] & EV_B)) {
        samples_add(&tta_a, now - ev_t0[n]);
        a_done++;
        a_cur = 0;
        a_next_at = now + (int64_t)(opt.a_gap_s * NS_PER_S);
    } else if (now >= win_start && now < win_end) {
        win_events++;
    }
}

/* Finds "key" then optional spaces, ':', spaces, an integer. Keys are quoted ("\"n\"") so "turnId" never matches. */
static int json_int(const uint8_t *p, size_t len, const char *key, size_t klen, int64_t *out) {
    const uint8_t *k = memmem(p, len, key, klen);
    if (!k) return 0;
    const uint8_t *e = p + len, *q = k + klen;
    while (q < e && (*q == ' ' || *q == '\t')) q++;
    if (q >= e || *q != ':') return 0;
    q++;
    while (q < e && (*q == ' ' || *q == '\t')) q++;
    int neg = 0;
    if (q < e && *q == '-') { neg = 1; q++; }
    if (q >= e || *q < '0' || *q > '9') return 0;
    int64_t v = 0;
    while (q < e && *q >= '0' && *q <= '9') v = v * 10 + (*q++ - '0');
    *out = neg ? -v : v;
    return 1;
}

static void deliver(conn *c, const uint8_t *p, size_t len, int64_t now) {
    if (!publishing) { backlog_frames++; return; }
    int64_t n, t0, seq;
    if (!json_int(p, len, "\"n\"", 3, &n) || n < 1 || n > last_n) { foreign_frames++; return; }
    if (json_int(p, len, "\"t0\"", 4, &t0) && t0 != ev_t0[n]) t0_mismatch++;
    if (n <= c->last_n) {
        inversions++;
        if (!c->inverted) { c->inverted = 1; subs_inverted++; }
    } else {
        c->last_n = n;
    }
    if (json_int(p, len, "\"seq\"", 5, &seq)) {
        seq_seen++;
        if (c->last_seq != INT64_MIN && seq <= c->last_seq) {
            seq_violations++;
            if (!c->seq_bad) { c->seq_bad = 1; subs_seq_bad++; }
        }
        c->last_seq = seq;
    }
    int64_t lat = now - ev_t0[n];
    if (ev_flags[n] & EV_B) {
        c->recv_b++;
        c->order_hash = (c->order_hash ^ (uint64_t)n) * 0x100000001B3ULL;
        if (now >= win_start && now < win_end) {
            win_deliveries++;
            samples_add(&lat_b, lat);
        }
    } else {
        samples_add(&lat_a, lat);
    }
    if (++ev_recv[n] == (uint32_t)opt.m) on_complete(n, now);
}

/* ------------------------------------------------------------------ subscribers */

static void sub_start(conn *c) {
    uint8_t raw[16];
    random_bytes(raw, sizeof raw);
    base64(raw, sizeof raw, c->key);
    if (open_socket(c) < 0) { fail("subscriber connect() failed"); return; }
    subs_pending++;
}

static void sub_connected(conn *c) {
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /ws?callId=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     opt.call_id, opt.host, opt.port, c->key);
    c->state = ST_HANDSHAKE;
    send_bytes(c, req, (size_t)n);
}

/* Case-insensitive header lookup inside [h, h+len): returns a pointer to the trimmed value. */
static const char *header_value(const char *h, size_t len, const char *name, size_t *vlen) {
    size_t nl = strlen(name);
    const char *end = h + len, *line = memchr(h, '\n', len);
    while (line && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) eol = end;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = eol < end ? eol : NULL;
    }
    return NULL;
}

/* Returns bytes consumed, 0 if the response is incomplete, -1 on a failed handshake. */
static long sub_handshake(conn *c) {
    const uint8_t *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
    if (!end) return c->rlen > 16384 ? -1 : 0;
    size_t hlen = (size_t)(end - c->rbuf) + 4;
    const char *h = (const char *)c->rbuf;
    if (hlen < 12 || strncmp(h, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "fanout: handshake refused: %.*s\n", (int)(memchr(h, '\r', hlen) ? (const char *)memchr(h, '\r', hlen) - h : 40), h);
        return -1;
    }
    char want[29];
    ws_accept_for(c->key, want);
    size_t vl;
    const char *v = header_value(h, hlen, "Sec-WebSocket-Accept", &vl);
    if (!v || vl != strlen(want) || memcmp(v, want, vl) != 0) {
        fprintf(stderr, "fanout: bad Sec-WebSocket-Accept\n");
        return -1;
    }
    return (long)hlen;
}

/* Parses as many whole frames as the buffer holds; returns bytes consumed or -1 to drop the connection. */
static long sub_frames(conn *c, size_t off, int64_t now) {
    uint8_t *b = c->rbuf;
    while (c->rlen - off >= 2) {
        size_t avail = c->rlen - off;
        uint8_t b0 = b[off], b1 = b[off + 1];
        int fin = b0 & 0x80, op = b0 & 0x0f, masked = b1 & 0x80;
        uint64_t plen = b1 & 0x7f;
        size_t hdr = 2;
        if (plen == 126) {
            if (avail < 4) break;
            plen = (uint64_t)b[off + 2] << 8 | b[off + 3];
            hdr = 4;
        } else if (plen == 127) {
            if (avail < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen << 8 | b[off + 2 + i];
            hdr = 10;
        }
        if (plen > (uint64_t)MAX_FRAME_BYTES) { protocol_errors++; return -1; }
        if (masked) hdr += 4;
        if (avail < hdr + plen) {
            size_t need = off + hdr + plen;
            if (need > c->rcap) { /* a frame larger than the buffer: grow it */
                c->rcap = need;
                c->rbuf = realloc(c->rbuf, c->rcap);
                if (!c->rbuf) { perror("realloc"); exit(2); }
            }
            break;
        }
        uint8_t *pl = b + off + hdr;
        if (masked) { /* servers must not mask; count it and unmask anyway */
            masked_frames++;
            const uint8_t *mk = b + off + hdr - 4;
            for (uint64_t i = 0; i < plen; i++) pl[i] ^= mk[i & 3];
        }
        switch (op) {
        case 0x1: case 0x2:
            if (fin) deliver(c, pl, plen, now);
            else { c->msglen = 0; goto append; }
            break;
        case 0x0:
        append:
            if (c->msglen + plen > c->msgcap) {
                c->msgcap = (c->msglen + plen) * 2;
                c->msg = realloc(c->msg, c->msgcap);
                if (!c->msg) { perror("realloc"); exit(2); }
            }
            memcpy(c->msg + c->msglen, pl, plen);
            c->msglen += plen;
            if (fin && op == 0x0) { deliver(c, c->msg, c->msglen, now); c->msglen = 0; }
            break;
        case 0x8:
            send_ws_frame(c, 0x8, pl, plen >= 2 ? 2 : 0);
            return -1;
        case 0x9:
            pings++;
            send_ws_frame(c, 0xA, pl, plen);
            break;
        case 0xA:
            break;
        default:
            protocol_errors++;
            return -1;
        }
        off += hdr + plen;
        b = c->rbuf;
    }
    return (long)off;
}

static void sub_lost(conn *c) {
    int was_open = c->state == ST_OPEN;
    int was_pending = c->state == ST_CONNECTING || c->state == ST_HANDSHAKE;
    close_socket(c);
    if (was_pending) subs_pending--;
    if (was_open) subs_open--;
    subs_closed++;
    if (g_phase == PH_SETUP || g_phase == PH_SETTLE) fail("a subscriber was closed or refused during set-up");
}

/* ------------------------------------------------------------------ publishers */

static void pub_start(conn *c) {
    if (open_socket(c) < 0) fail("publisher connect() failed");
}

static void pub_connected(conn *c) {
    c->state = ST_OPEN;
    pubs_open++;
    c->last_used = now_ns();
    if (c->busy) send_bytes(c, c->req, c->reqlen); /* resend what was in flight when the server closed */
}

static void pub_lost(conn *c, int counted_close) {
    if (c->state == ST_OPEN) pubs_open--;
    close_socket(c);
    if (c->busy) {
        if (++c->retries > MAX_PUB_RETRIES) {
            c->busy = 0;
            fprintf(stderr, "fanout: event %lld given up after %d resends\n", (long long)c->inflight_n, MAX_PUB_RETRIES);
        } else {
            pub_retries++;
        }
    }
    if (counted_close) pub_reconnects_close++;
    if (g_phase != PH_FAILED && g_phase != PH_DONE) pub_start(c);
}

/* Parses one HTTP/1.1 response; returns bytes consumed, 0 if incomplete, -1 if malformed. */
static long http_response(const uint8_t *buf, size_t len, int *status, int *close_after) {
    const uint8_t *end = memmem(buf, len, "\r\n\r\n", 4);
    if (!end) return len > 65536 ? -1 : 0;
    size_t hlen = (size_t)(end - buf) + 4;
    const char *h = (const char *)buf;
    if (hlen < 12 || strncmp(h, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(h + 9);
    size_t vl;
    const char *v = header_value(h, hlen, "Connection", &vl);
    *close_after = v && vl >= 5 && strncasecmp(v, "close", 5) == 0;
    if (strncmp(h, "HTTP/1.0", 8) == 0 && !(v && strncasecmp(v, "keep-alive", 10) == 0)) *close_after = 1;
    v = header_value(h, hlen, "Transfer-Encoding", &vl);
    if (v && vl >= 7 && strncasecmp(v + vl - 7, "chunked", 7) == 0) {
        size_t off = hlen;
        for (;;) {
            const uint8_t *crlf = memmem(buf + off, len - off, "\r\n", 2);
            if (!crlf) return 0;
            size_t sz = strtoul((const char *)buf + off, NULL, 16);
            off = (size_t)(crlf - buf) + 2;
            if (sz == 0) { /* no trailers expected: the last CRLF */
                if (len - off < 2) return 0;
                return (long)(off + 2);
            }
            if (len - off < sz + 2) return 0;
            off += sz + 2;
        }
    }
    v = header_value(h, hlen, "Content-Length", &vl);
    size_t body = v ? strtoul(v, NULL, 10) : 0;
    if (!v && *status != 204 && *status != 304) *close_after = 1; /* body delimited by close: treat as empty */
    if (len - hlen < body) return 0;
    return (long)(hlen + body);
}

/* ------------------------------------------------------------------ I/O dispatch */

static void on_readable(conn *c) {
    for (;;) {
        if (c->rcap - c->rlen < 2048) {
            c->rcap *= 2;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (!c->rbuf) { perror("realloc"); exit(2); }
        }
        size_t space = c->rcap - c->rlen;
        ssize_t r = read(c->fd, c->rbuf + c->rlen, space);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) return;
        if (r <= 0) {
            if (c->kind == SUB) sub_lost(c);
            else pub_lost(c, 1);
            return;
        }
        c->rlen += (size_t)r;
        int64_t now = now_ns();
        long off = 0;
        if (c->kind == SUB) {
            if (c->state == ST_HANDSHAKE) {
                off = sub_handshake(c);
                if (off < 0) { sub_lost(c); fail("WebSocket handshake failed"); return; }
                if (off > 0) {
                    c->state = ST_OPEN;
                    subs_pending--;
                    subs_open++;
                }
            }
            if (c->state == ST_OPEN) {
                off = sub_frames(c, (size_t)off, now);
                if (off < 0) { sub_lost(c); return; }
            }
        } else {
            for (;;) {
                int status = 0, close_after = 0;
                long used = http_response(c->rbuf + off, c->rlen - (size_t)off, &status, &close_after);
                if (used < 0) { protocol_errors++; pub_lost(c, 0); return; }
                if (used == 0) break;
                off += used;
                if (status < 200 || status > 299) pub_non2xx++;
                c->busy = 0;
                c->last_used = now;
                if (close_after) {
                    c->rlen = 0;
                    pub_lost(c, 1);
                    return;
                }
            }
        }
        if (off > 0) {
            memmove(c->rbuf, c->rbuf + off, c->rlen - (size_t)off);
            c->rlen -= (size_t)off;
        }
        if ((size_t)r < space) return; /* drained; level-triggered epoll reports more */
    }
}

static void on_io(conn *c, uint32_t events) {
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            fprintf(stderr, "fanout: connect failed: %s\n", strerror(err ? err : ECONNREFUSED));
            if (c->kind == SUB) sub_lost(c);
            else { close_socket(c); fail("publisher connect failed"); }
            return;
        }
        if (!(events & EPOLLOUT)) return;
        ep_set(c, EPOLLIN);
        if (c->kind == SUB) sub_connected(c);
        else pub_connected(c);
        return;
    }
    if (events & EPOLLOUT) flush_out(c);
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(c);
}

/* ------------------------------------------------------------------ phases */

static void check_stalls(int64_t now) {
    int64_t limit = (int64_t)(opt.event_timeout_s * NS_PER_S);
    for (int i = 0; i < n_inflight;) {
        int64_t n = inflight[i];
        if (now - ev_t0[n] > limit) {
            ev_flags[n] |= EV_STALLED;
            stalled_events++;
            inflight[i] = inflight[--n_inflight];
            if (!(ev_flags[n] & EV_B)) { a_cur = 0; a_next_at = now; }
        } else {
            i++;
        }
    }
}

static void reconnect_idle_publishers(int64_t now) {
    int64_t idle = (int64_t)(opt.idle_reconnect_s * NS_PER_S);
    for (int i = 0; i < opt.w; i++) {
        conn *p = &g_conns[opt.m + i];
        if (p->state == ST_OPEN && !p->busy && p->wlen == 0 && now - p->last_used > idle) {
            /* servers close idle keep-alive connections (hypercorn and Node after 5 s): renew before they do */
            pubs_open--;
            close_socket(p);
            pub_reconnects_idle++;
            pub_start(p);
        }
    }
}

static void tick(int64_t now) {
    if (g_phase != PH_SETUP && g_phase != PH_FAILED && g_phase != PH_DONE) {
        reconnect_idle_publishers(now);
        check_stalls(now);
    }
    switch (g_phase) {
    case PH_SETUP:
        while (subs_next < opt.m && subs_pending < opt.connect_parallel && g_phase == PH_SETUP)
            sub_start(&g_conns[subs_next++]);
        if (subs_open == opt.m && pubs_open == opt.w) {
            setup_done_at = now;
            settle_until = now + SETTLE_NS;
            g_phase = PH_SETTLE;
        } else if (now > setup_deadline) {
            char msg[160];
            snprintf(msg, sizeof msg, "set-up timed out: %d/%d subscribers, %d/%d publishers open", subs_open,
                     opt.m, pubs_open, opt.w);
            fail(msg);
        }
        break;
    case PH_SETTLE:
        if (now >= settle_until && pubs_open == opt.w) {
            publishing = 1;
            g_phase = PH_A;
            a_next_at = now;
        }
        break;
    case PH_A:
        if (a_cur == 0 && a_sent < opt.a_events && now >= a_next_at) {
            if (publish(0)) { a_cur = last_n; a_sent++; }
        }
        if (a_sent >= opt.a_events && a_cur == 0) {
            g_phase = PH_B;
            b_started = now;
            b_first_n = last_n + 1;
            win_start = now + (int64_t)(opt.warmup_s * NS_PER_S);
            win_end = win_start + (int64_t)(opt.seconds * NS_PER_S);
        }
        break;
    case PH_B:
        if (!win_open && now >= win_start) {
            win_open = 1;
            getrusage(RUSAGE_SELF, &ru_win_start);
            win_start_mono_abs = win_start + g_epoch;
        }
        if (now >= win_end) {
            win_closed = 1;
            getrusage(RUSAGE_SELF, &ru_win_end);
            win_end_mono_abs = win_end + g_epoch;
            g_phase = PH_DRAIN;
            drain_until = now + (int64_t)(opt.event_timeout_s * NS_PER_S);
            break;
        }
        while (n_inflight < opt.k && publish(1)) b_sent++;
        break;
    case PH_DRAIN:
        if (n_inflight == 0 || now >= drain_until) g_phase = PH_DONE;
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ report */

static double tv_s(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

static void report(void) {
    qsort(lat_a.v, lat_a.n, sizeof *lat_a.v, cmp_i64);
    qsort(lat_b.v, lat_b.n, sizeof *lat_b.v, cmp_i64);
    qsort(tta_a.v, tta_a.n, sizeof *tta_a.v, cmp_i64);
    double win_s = opt.seconds;
    double client_cpu = -1;
    if (win_closed)
        client_cpu = (tv_s(ru_win_end.ru_utime) + tv_s(ru_win_end.ru_stime) - tv_s(ru_win_start.ru_utime) -
                      tv_s(ru_win_start.ru_stime)) / win_s * 100.0;
    int64_t recv_b = 0, expected = (int64_t)b_sent * opt.m, order_mismatch = 0;
    for (int i = 0; i < opt.m; i++) {
        recv_b += (int64_t)g_conns[i].recv_b;
        if (g_conns[i].order_hash != g_conns[0].order_hash) order_mismatch++;
    }
    printf("{\"ok\":%s,\"error\":", g_phase == PH_DONE ? "true" : "false");
    if (g_phase == PH_DONE) printf("null");
    else printf("\"%s\"", g_error[0] ? g_error : "unfinished");
    printf(",\"host\":\"%s\",\"port\":%d,\"call_id\":\"%s\",\"m\":%d,\"w\":%d,\"k\":%d,\"warmup_s\":%.3f,\"seconds\":%.3f",
           opt.host, opt.port, opt.call_id, opt.m, opt.w, opt.k, opt.warmup_s, opt.seconds);
    printf(",\"setup\":{\"subs_open\":%d,\"connect_s\":%.3f,\"backlog_frames\":%lld}", subs_open,
           setup_done_at ? (double)(setup_done_at - setup_started) / 1e9 : -1.0, (long long)backlog_frames);
    printf(",\"phase_a\":{\"events\":%d,\"completed\":%d,\"time_to_all_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"max\":%.3f},"
           "\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f}}",
           a_sent, a_done, pct_ms(&tta_a, 0.5), pct_ms(&tta_a, 0.95), pct_ms(&tta_a, 1.0), pct_ms(&lat_a, 0.5),
           pct_ms(&lat_a, 0.99), pct_ms(&lat_a, 1.0));
    printf(",\"phase_b\":{\"window_start_mono_ns\":%lld,\"window_end_mono_ns\":%lld,\"events_sent\":%lld,"
           "\"window_deliveries\":%lld,\"window_events\":%lld,\"deliveries_per_s\":%.1f,\"events_per_s\":%.2f,"
           "\"latency_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"samples\":%zu},"
           "\"expected_deliveries\":%lld,\"received_deliveries\":%lld,\"missing\":%lld,\"in_flight_at_end\":%d}",
           (long long)win_start_mono_abs, (long long)win_end_mono_abs, (long long)b_sent,
           (long long)win_deliveries, (long long)win_events, (double)win_deliveries / win_s,
           (double)win_events / win_s, pct_ms(&lat_b, 0.5), pct_ms(&lat_b, 0.95), pct_ms(&lat_b, 0.99),
           pct_ms(&lat_b, 1.0), lat_b.n, (long long)expected, (long long)recv_b,
           (long long)(expected > recv_b ? expected - recv_b : 0), n_inflight);
    printf(",\"checks\":{\"n_inversions\":%lld,\"subs_with_inversions\":%lld,\"order_mismatch_subs\":%lld,"
           "\"seq_field_frames\":%lld,\"seq_violations\":%lld,\"subs_with_seq_violations\":%lld,"
           "\"t0_mismatch\":%lld,\"foreign_frames\":%lld,\"stalled_events\":%lld,\"late_completions\":%lld,"
           "\"subs_closed\":%lld,\"protocol_errors\":%lld,\"masked_frames\":%lld,\"pings\":%lld}",
           (long long)inversions, (long long)subs_inverted, (long long)order_mismatch, (long long)seq_seen,
           (long long)seq_violations, (long long)subs_seq_bad, (long long)t0_mismatch, (long long)foreign_frames,
           (long long)stalled_events, (long long)late_completions, (long long)subs_closed,
           (long long)protocol_errors, (long long)masked_frames, (long long)pings);
    printf(",\"publisher\":{\"requests\":%lld,\"non_2xx\":%lld,\"resends\":%lld,\"reconnects_idle\":%lld,"
           "\"reconnects_closed\":%lld}",
           (long long)pub_requests, (long long)pub_non2xx, (long long)pub_retries, (long long)pub_reconnects_idle,
           (long long)pub_reconnects_close);
    printf(",\"client_cpu_pct\":%.1f}\n", client_cpu);
    fflush(stdout);
}

/* ------------------------------------------------------------------ main */

static void on_alarm(int sig) { (void)sig; g_alarm = 1; }

static int selftest(void) {
    char got[29];
    ws_accept_for("dGhlIHNhbXBsZSBub25jZQ==", got); /* RFC 6455 section 1.3 */
    int ok = strcmp(got, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0;
    uint8_t d[20];
    char hex[41];
    const char *long_in = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha1((const uint8_t *)long_in, strlen(long_in), d);
    for (int i = 0; i < 20; i++) sprintf(hex + 2 * i, "%02x", d[i]);
    ok = ok && strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0;
    printf("{\"selftest\":%s}\n", ok ? "true" : "false");
    return ok ? 0 : 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: fanout --port P [--host 127.0.0.1] [--m 100] [--w 8] [--k 8] [--seconds 6] [--warmup 2]\n"
            "              [--a-events 20] [--call-id ID] [--connect-parallel 64] [--setup-timeout 30]\n"
            "              [--event-timeout 10] [--idle-reconnect 4] [--a-gap 0.01] | --selftest\n");
}

int main(int argc, char **argv) {
    static struct option lo[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"m", 1, 0, 'm'}, {"w", 1, 0, 'w'}, {"k", 1, 0, 'k'},
        {"seconds", 1, 0, 's'}, {"warmup", 1, 0, 'u'}, {"a-events", 1, 0, 'a'}, {"call-id", 1, 0, 'c'},
        {"connect-parallel", 1, 0, 'P'}, {"setup-timeout", 1, 0, 'T'}, {"event-timeout", 1, 0, 'E'},
        {"idle-reconnect", 1, 0, 'I'}, {"a-gap", 1, 0, 'G'}, {"selftest", 0, 0, 'S'}, {"help", 0, 0, '?'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': snprintf(opt.host, sizeof opt.host, "%s", optarg); break;
        case 'p': opt.port = atoi(optarg); break;
        case 'm': opt.m = atoi(optarg); break;
        case 'w': opt.w = atoi(optarg); break;
        case 'k': opt.k = atoi(optarg); break;
        case 's': opt.seconds = atof(optarg); break;
        case 'u': opt.warmup_s = atof(optarg); break;
        case 'a': opt.a_events = atoi(optarg); break;
        case 'c': snprintf(opt.call_id, sizeof opt.call_id, "%s", optarg); break;
        case 'P': opt.connect_parallel = atoi(optarg); break;
        case 'T': opt.setup_timeout_s = atof(optarg); break;
        case 'E': opt.event_timeout_s = atof(optarg); break;
        case 'I': opt.idle_reconnect_s = atof(optarg); break;
        case 'G': opt.a_gap_s = atof(optarg); break;
        case 'S': return selftest();
        default: usage(); return 2;
        }
    }
    if (opt.m < 1 || opt.m > 100000 || opt.w < 1 || opt.w > 256 || opt.k < 1 || opt.k > 1024 || opt.seconds <= 0 ||
        opt.seconds > 600 || opt.warmup_s < 0 || opt.warmup_s > 600 || opt.a_events < 0 || opt.a_events > 100000 ||
        opt.port < 1 || opt.port > 65535 || opt.connect_parallel < 1 || opt.a_gap_s < 0 || opt.a_gap_s > 60) {
        usage();
        return 2;
    }
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &g_addr.sin_addr) != 1 || ((const uint8_t *)&g_addr.sin_addr)[0] != 127) {
        fprintf(stderr, "fanout: --host must be an IPv4 loopback address (127.0.0.0/8), got %s\n", opt.host);
        return 2;
    }

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    g_epoch = (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
    if (!opt.call_id[0]) {
        uint8_t r[6];
        random_bytes(r, sizeof r);
        snprintf(opt.call_id, sizeof opt.call_id, "bench-%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4], r[5]);
    }

    /* 1000+ sockets: raise the soft descriptor limit up to the hard one if needed */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)(opt.m + opt.w + 64)) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < (rlim_t)(opt.m + opt.w + 64)) {
            fprintf(stderr, "fanout: RLIMIT_NOFILE %llu is too low for %d connections\n",
                    (unsigned long long)rl.rlim_cur, opt.m + opt.w);
            return 2;
        }
    }

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL);
    /* hard bound: set-up + phase A (each event bounded) + phase B + drain + margin */
    double bound = opt.setup_timeout_s + opt.a_events * (opt.event_timeout_s + opt.a_gap_s) + opt.warmup_s + opt.seconds +
                   opt.event_timeout_s + 10.0;
    if (bound > 3600) bound = 3600;
    alarm((unsigned)bound);

    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_ep < 0) { perror("epoll_create1"); return 2; }
    g_conns = calloc((size_t)(opt.m + opt.w), sizeof *g_conns);
    if (!g_conns) { perror("calloc"); return 2; }
    for (int i = 0; i < opt.m + opt.w; i++) {
        conn *c = &g_conns[i];
        c->fd = -1;
        c->idx = i;
        c->kind = i < opt.m ? SUB : PUB;
        c->rcap = c->kind == SUB ? SUB_RBUF_BYTES : PUB_RBUF_BYTES;
        c->rbuf = malloc(c->rcap);
        c->last_seq = INT64_MIN;
        if (!c->rbuf) { perror("malloc"); return 2; }
    }

    setup_started = now_ns();
    setup_deadline = setup_started + (int64_t)(opt.setup_timeout_s * NS_PER_S);
    for (int i = 0; i < opt.w; i++) pub_start(&g_conns[opt.m + i]);

    struct epoll_event evs[EPOLL_BATCH];
    while (g_phase != PH_DONE && g_phase != PH_FAILED) {
        if (g_alarm) { fail("hard time limit (alarm) reached"); break; }
        int n = epoll_wait(g_ep, evs, EPOLL_BATCH, 1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            fail("epoll_wait failed");
            break;
        }
        for (int i = 0; i < n; i++) on_io(evs[i].data.ptr, evs[i].events);
        tick(now_ns());
    }
    report();
    return g_phase == PH_DONE ? 0 : 1;
}
