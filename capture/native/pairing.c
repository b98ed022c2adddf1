/* One TCP connection's HTTP conversation: a port of capture/pairing.py (HttpConnection, the
 * Sink; Context) and of capture/exchange.py's Exchange.finalize and json_line.
 *
 * Decide who is the server (hints, SYN, first bytes), buffer what comes before that, pair
 * requests with responses (in order, with the server's ACK as evidence after a gap), and hand
 * exchanges on in index order: each as its JSON line appended to ctx->out.
 * pairing.py's internal-error handling (a Python exception in a parser) has no C equivalent.
 */
#include "native.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLASSIFY_LIMIT (64 * 1024)
#define CLASSIFY_ITEMS 4096
#define MAX_PENDING 1024

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    return p;
}

/* ---- exchanges ------------------------------------------------------------------------ */

typedef struct {
    int refs;       /* order, pending, req_open, resp_open */
    int in_pending;
    long long index;
    st_msg *req, *resp;
} xchg;

static void ex_incref(xchg *e) { e->refs++; }

static void ex_decref(xchg *e) {
    if (!e || --e->refs) return;
    if (e->req) st_msg_decref(e->req);
    if (e->resp) st_msg_decref(e->resp);
    free(e);
}

static void ex_set_req(xchg *e, st_msg *m) {
    if (m) st_msg_incref(m);
    if (e->req) st_msg_decref(e->req);
    e->req = m;
}

static void ex_set_resp(xchg *e, st_msg *m) {
    if (m) st_msg_incref(m);
    if (e->resp) st_msg_decref(e->resp);
    e->resp = m;
}

/* A deque of exchanges (a ring; each slot holds a reference). */
typedef struct {
    xchg **v;
    size_t first, n, cap; /* cap: a power of two, or 0 */
} xdeque;

static void xd_push(xdeque *q, xchg *e) {
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 8;
        xchg **nv = xmalloc(ncap * sizeof *nv);
        for (size_t i = 0; i < q->n; i++) nv[i] = q->v[(q->first + i) & (q->cap - 1)];
        free(q->v);
        q->v = nv;
        q->cap = ncap;
        q->first = 0;
    }
    q->v[(q->first + q->n) & (q->cap - 1)] = e;
    q->n++;
    ex_incref(e);
}

static xchg *xd_at(const xdeque *q, size_t i) { return q->v[(q->first + i) & (q->cap - 1)]; }

/* Removes the first; the caller gets the deque's reference. */
static xchg *xd_popleft(xdeque *q) {
    xchg *e = q->v[q->first];
    q->first = (q->first + 1) & (q->cap - 1);
    q->n--;
    return e;
}

static void xd_free(xdeque *q) {
    while (q->n) ex_decref(xd_popleft(q));
    free(q->v);
    q->v = NULL;
    q->cap = 0;
}

/* ---- the connection ------------------------------------------------------------------- */

typedef struct {
    int d;
    size_t off, len;           /* payload: pre_data[off:off+len] */
    double ts;
    long long ack_or_n;        /* ack for data, the byte count for a gap */
    const char *cause;         /* NULL for data; "gap" or "snaplen" */
} pre_item;

typedef struct {
    st_ctx *ctx;
    const st_conn *conn;
    int client_dir;            /* -1 for None */
    int midstream;
    int pre_on;                /* pre is a list (not None) */
    pre_item *pre; size_t npre, cappre;
    st_buf pre_data;
    long long pre_bytes[2];
    st_buf firsts[2];
    st_parser *parsers[2];     /* NULL until started */
    xdeque pending, order;
    xchg *req_open, *resp_open;
    long long index;
    int req_lossy, resp_lossy;
    const char *non_http;      /* NULL for None (static strings) */
    char conn_id[13];
    char client[64], server[64];
} hconn;

static const char *on_req_head(void *owner, st_msg *msg);
static void on_req_end(void *owner, st_msg *msg);
static const char *on_resp_head(void *owner, st_msg *msg);
static void on_resp_end(void *owner, st_msg *msg);
static void emit(hconn *h, int final);

static int addr_in_servers(const st_ctx *ctx, const uint8_t *a, uint8_t alen, uint16_t port) {
    for (size_t i = 0; i < ctx->nservers; i++)
        if (ctx->servers[i].alen == alen && ctx->servers[i].port == port &&
            memcmp(ctx->servers[i].addr, a, alen) == 0)
            return 1;
    return 0;
}

static int port_in(const st_ctx *ctx, uint16_t port) {
    for (size_t i = 0; i < ctx->nports; i++)
        if (ctx->ports[i] == port) return 1;
    return 0;
}

static int roles_from_hints(const st_conn *c, const st_ctx *ctx) {
    if (ctx->nservers) {
        if (addr_in_servers(ctx, c->dst, c->alen, c->dport)) return 0;
        if (addr_in_servers(ctx, c->src, c->alen, c->sport)) return 1;
    }
    if (ctx->nports) {
        int dp = port_in(ctx, c->dport), sp = port_in(ctx, c->sport);
        if (dp && !sp) return 0;
        if (sp && !dp) return 1;
    }
    return c->syn_dir;
}

void *st_sink_new(st_ctx *ctx, const st_conn *conn) {
    hconn *h = xmalloc(sizeof *h);
    memset(h, 0, sizeof *h);
    h->ctx = ctx;
    h->conn = conn;
    h->client_dir = roles_from_hints(conn, ctx);
    h->midstream = conn->syn_dir < 0;
    h->pre_on = 1;
    st_buf_init(&h->pre_data);
    st_buf_init(&h->firsts[0]);
    st_buf_init(&h->firsts[1]);
    return h;
}

static void pre_drop(hconn *h) {
    h->pre_on = 0;
    free(h->pre);
    h->pre = NULL;
    h->npre = h->cappre = 0;
    st_buf_free(&h->pre_data);
}

void st_sink_free(void *sink) {
    hconn *h = sink;
    if (!h) return;
    pre_drop(h);
    st_buf_free(&h->firsts[0]);
    st_buf_free(&h->firsts[1]);
    xd_free(&h->pending);
    xd_free(&h->order);
    ex_decref(h->req_open);
    ex_decref(h->resp_open);
    for (int i = 0; i < 2; i++)
        if (h->parsers[i]) st_parser_free(h->parsers[i]);
    free(h);
}

/* ---- the patterns pairing.py and http1.py match first bytes with ----------------------- */

static int is_upper(uint8_t c) { return c >= 'A' && c <= 'Z'; }
static int is_alpha(uint8_t c) { return is_upper(c) || (c >= 'a' && c <= 'z'); }
static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* [A-Z][A-Z0-9_-]{0,31} [!-~]+ HTTP/[0-9]\.[0-9]\r?\n at p */
static int req_line_at(const uint8_t *p, size_t n) {
    size_t i = 0;
    if (i >= n || !is_upper(p[i])) return 0;
    i++;
    size_t t = 0;
    while (i < n && (is_upper(p[i]) || is_digit(p[i]) || p[i] == '_' || p[i] == '-')) { i++; t++; }
    if (t > 31) return 0;
    if (i >= n || p[i] != ' ') return 0;
    i++;
    size_t s = i;
    while (i < n && p[i] >= '!' && p[i] <= '~') i++;
    if (i == s) return 0;
    if (n - i < 9 || memcmp(p + i, " HTTP/", 6) != 0 || !is_digit(p[i + 6]) || p[i + 7] != '.' ||
        !is_digit(p[i + 8]))
        return 0;
    i += 9;
    if (i < n && p[i] == '\r') i++;
    return i < n && p[i] == '\n';
}

/* HTTP/[0-9]\.[0-9] at p, then a space */
static int resp_start_at(const uint8_t *p, size_t n) {
    return n >= 9 && memcmp(p, "HTTP/", 5) == 0 && is_digit(p[5]) && p[6] == '.' && is_digit(p[7]) &&
           p[8] == ' ';
}

/* HTTP/[0-9]\.[0-9] [0-9]{3}[ \r\n] at p */
static int resp_line_at(const uint8_t *p, size_t n) {
    return resp_start_at(p, n) && n >= 13 && is_digit(p[9]) && is_digit(p[10]) && is_digit(p[11]) &&
           (p[12] == ' ' || p[12] == '\r' || p[12] == '\n');
}

static size_t skip_crlf(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n && (p[i] == '\r' || p[i] == '\n')) i++;
    return i;
}

static int req_at_start(const uint8_t *p, size_t n) { /* _REQ_AT_START.match */
    size_t i = skip_crlf(p, n);
    return req_line_at(p + i, n - i);
}

static int resp_at_start(const uint8_t *p, size_t n) { /* _RESP_AT_START.match */
    size_t i = skip_crlf(p, n);
    return resp_start_at(p + i, n - i);
}

/* _REQ_PREFIX.match: [\r\n]*[A-Za-z][A-Za-z0-9_-]{0,31}( |$) */
static int req_prefix(const uint8_t *p, size_t n) {
    size_t i = skip_crlf(p, n);
    if (i >= n || !is_alpha(p[i])) return 0;
    i++;
    size_t t = 0;
    while (i < n && (is_alpha(p[i]) || is_digit(p[i]) || p[i] == '_' || p[i] == '-')) { i++; t++; }
    if (t > 31) return 0;
    if (i == n) return 1;
    if (p[i] == ' ') return 1;
    return p[i] == '\n' && i + 1 == n; /* `$` also matches before a final newline */
}

/* (?:^|\n)PATTERN searched anywhere */
static int search_lines(const uint8_t *p, size_t n, int (*at)(const uint8_t *, size_t)) {
    if (at(p, n)) return 1;
    if (!n) return 0;
    const uint8_t *q = p, *end = p + n;
    while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        q++;
        if (at(q, (size_t)(end - q))) return 1;
    }
    return 0;
}

static const char *non_http_reason(const uint8_t *f, size_t n) {
    if (n >= 2 && f[0] == 0x16 && f[1] == 0x03) return "tls";
    if (n >= 4 && memcmp(f, "SSH-", 4) == 0) return "ssh";
    if (n >= 14 && memcmp(f, "PRI * HTTP/2.0", 14) == 0) return "http2-prior-knowledge";
    size_t k = n < 5 ? n : 5;
    if (k) {
        size_t i = 0;
        while (i < k && is_upper(f[i])) i++;
        if (i == k) return "not-http-text";
    }
    return "binary";
}

/* ---- roles and start-up ---------------------------------------------------------------- */

static void lost_boundaries(hconn *h, int d) {
    if (d == h->client_dir) h->req_lossy = 1;
    else h->resp_lossy = 1;
}

static void set_non_http(hconn *h, const char *reason) {
    h->non_http = reason;
    st_counter_add(&h->ctx->non_http, reason, 1);
    pre_drop(h);
    if (h->parsers[0]) {
        h->ctx->http_connections--; /* it was counted as HTTP when parsing started */
        st_parser_kill(h->parsers[0]);
        st_parser_kill(h->parsers[1]);
    }
}

static void format_addr(char *out, size_t cap, const uint8_t *ip, uint8_t alen, uint16_t port) {
    char s[INET6_ADDRSTRLEN];
    inet_ntop(alen == 4 ? AF_INET : AF_INET6, ip, s, sizeof s);
    if (alen == 16) snprintf(out, cap, "[%s]:%u", s, (unsigned)port);
    else snprintf(out, cap, "%s:%u", s, (unsigned)port);
}

static void start(hconn *h, int client_dir) {
    const st_conn *c = h->conn;
    st_ctx *ctx = h->ctx;
    h->client_dir = client_dir;
    st_parser *req = st_parser_new(1, on_req_head, on_req_end, h, ctx->max_body);
    st_parser *resp = st_parser_new(0, on_resp_head, on_resp_end, h, ctx->max_body);
    if (h->midstream) {
        st_parser_resync(req);
        *st_parser_pending_flags(req) |= STF(MIDSTREAM);
        st_parser_resync(resp);
        *st_parser_pending_flags(resp) |= STF(MIDSTREAM);
    }
    h->parsers[client_dir] = req;
    h->parsers[1 - client_dir] = resp;
    if (client_dir == 0) {
        format_addr(h->client, sizeof h->client, c->src, c->alen, c->sport);
        format_addr(h->server, sizeof h->server, c->dst, c->alen, c->dport);
    } else {
        format_addr(h->client, sizeof h->client, c->dst, c->alen, c->dport);
        format_addr(h->server, sizeof h->server, c->src, c->alen, c->sport);
    }
    st_buf key;
    st_buf_init(&key);
    st_buf_puts(&key, h->client);
    st_buf_putc(&key, '>');
    st_buf_puts(&key, h->server);
    st_buf_putc(&key, '@');
    char *ts = PyOS_double_to_string(c->first_ts, 'f', 6, 0, NULL);
    if (!ts) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    st_buf_puts(&key, ts);
    PyMem_Free(ts);
    char hex[41];
    st_sha1_hex((const uint8_t *)key.data, key.len, hex);
    st_buf_free(&key);
    memcpy(h->conn_id, hex, 12);
    h->conn_id[12] = 0;
    ctx->http_connections++;
    /* replay what came before the roles were known */
    pre_item *pre = h->pre;
    size_t npre = h->npre;
    st_buf data = h->pre_data;
    h->pre = NULL;
    h->npre = h->cappre = 0;
    st_buf_init(&h->pre_data);
    h->pre_on = 0;
    st_buf_free(&h->firsts[0]);
    st_buf_free(&h->firsts[1]);
    for (size_t i = 0; i < npre; i++) {
        pre_item *it = &pre[i];
        if (it->cause) {
            if (st_parser_gap(h->parsers[it->d], (unsigned long long)it->ack_or_n, it->ts, it->cause))
                lost_boundaries(h, it->d);
        } else {
            st_parser_feed(h->parsers[it->d], (const uint8_t *)data.data + it->off, it->len, it->ts,
                           it->ack_or_n);
        }
    }
    free(pre);
    st_buf_free(&data);
}

static void classify(hconn *h, int final) {
    st_buf *firsts = h->firsts;
    int full = h->pre_bytes[0] >= CLASSIFY_LIMIT || h->pre_bytes[1] >= CLASSIFY_LIMIT ||
               h->npre >= CLASSIFY_ITEMS;
    int cd = h->client_dir;
    if (cd >= 0 && !h->midstream) {
        const uint8_t *head = (const uint8_t *)firsts[cd].data;
        size_t hn = firsts[cd].len;
        const uint8_t *other = (const uint8_t *)firsts[1 - cd].data;
        size_t on = firsts[1 - cd].len;
        if (!hn && !final && !full) return;
        if (req_prefix(head, hn) || !hn || resp_at_start(other, on)) start(h, cd);
        else if (!on && !final && !full) return; /* odd first bytes: wait for the answer */
        else set_non_http(h, non_http_reason(head, hn));
        return;
    }
    for (int d = 0; d < 2; d++) {
        const uint8_t *f = (const uint8_t *)firsts[d].data;
        if (req_at_start(f, firsts[d].len)) { start(h, d); return; }
        if (resp_at_start(f, firsts[d].len)) { start(h, 1 - d); return; }
    }
    for (int d = 0; d < 2; d++) { /* mid-stream: a message start further in */
        const uint8_t *f = (const uint8_t *)firsts[d].data;
        if (search_lines(f, firsts[d].len, req_line_at)) { start(h, d); return; }
        if (search_lines(f, firsts[d].len, resp_line_at)) { start(h, 1 - d); return; }
    }
    if (final || full) {
        if (cd >= 0) start(h, cd); /* hinted: let the parsers count what they skip */
        else set_non_http(h, "no HTTP message found");
    }
}

static pre_item *pre_add(hconn *h) {
    if (h->npre == h->cappre) {
        h->cappre = h->cappre ? h->cappre * 2 : 8;
        pre_item *np = realloc(h->pre, h->cappre * sizeof *np);
        if (!np) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
        h->pre = np;
    }
    return &h->pre[h->npre++];
}

/* ---- Sink ------------------------------------------------------------------------------- */

void st_sink_data(void *sink, int d, const uint8_t *payload, size_t n, double ts, long long ack_rel) {
    hconn *h = sink;
    if (h->parsers[0]) {
        st_parser_feed(h->parsers[d], payload, n, ts, ack_rel);
    } else if (h->pre_on) {
        pre_item *it = pre_add(h);
        it->d = d;
        it->off = h->pre_data.len;
        it->len = n;
        it->ts = ts;
        it->ack_or_n = ack_rel;
        it->cause = NULL;
        st_buf_put(&h->pre_data, payload, n);
        h->pre_bytes[d] += (long long)n;
        size_t have = h->firsts[d].len;
        if (have < CLASSIFY_LIMIT) {
            size_t take = CLASSIFY_LIMIT - have;
            st_buf_put(&h->firsts[d], payload, n < take ? n : take);
        }
        classify(h, 0);
    }
}

void st_sink_gap(void *sink, int d, unsigned long long nbytes, double ts, const char *cause) {
    hconn *h = sink;
    const char *c = strcmp(cause, "snaplen") == 0 ? "snaplen" : "gap";
    if (h->parsers[0]) {
        if (st_parser_gap(h->parsers[d], nbytes, ts, c)) lost_boundaries(h, d);
    } else if (h->pre_on) {
        pre_item *it = pre_add(h);
        it->d = d;
        it->off = it->len = 0;
        it->ts = ts;
        it->ack_or_n = (long long)nbytes;
        it->cause = c;
        classify(h, 0);
    }
}

void st_sink_eof(void *sink, int d, double ts) {
    hconn *h = sink;
    if (h->parsers[0]) {
        st_parser_eof(h->parsers[d], ts);
        emit(h, 0);
    }
}

void st_sink_flag(void *sink, int d, const char *name) {
    hconn *h = sink;
    if (!h->parsers[0]) return;
    int bit = st_flag_bit(name);
    if (bit < 0) return;
    st_msg *target = st_parser_msg(h->parsers[d]);
    if (!target && h->order.n) {
        xchg *last = xd_at(&h->order, h->order.n - 1);
        target = d == h->client_dir ? last->req : last->resp;
    }
    if (target) target->flags |= 1u << bit;
}

void st_sink_close(void *sink, double ts) {
    hconn *h = sink;
    st_ctx *ctx = h->ctx;
    if (!h->parsers[0] && h->pre_on && h->npre) classify(h, 1);
    else if (!h->parsers[0] && !h->non_http) set_non_http(h, "no payload");
    if (h->parsers[0]) {
        st_parser_eof(h->parsers[0], ts);
        st_parser_eof(h->parsers[1], ts);
        ctx->skipped_bytes += st_parser_skipped(h->parsers[0]) + st_parser_skipped(h->parsers[1]);
        for (int i = 0; i < 2; i++)
            for (st_counter_entry *e = st_parser_errors(h->parsers[i])->head; e; e = e->next)
                st_counter_add(&ctx->parse_errors, e->key, e->count);
        if (!h->index && !h->non_http) set_non_http(h, "no HTTP message found");
    }
    emit(h, 1);
    pre_drop(h);
}

/* ---- pairing ---------------------------------------------------------------------------- */

static xchg *new_exchange(hconn *h) {
    xchg *e = xmalloc(sizeof *e);
    memset(e, 0, sizeof *e);
    e->index = h->index++;
    xd_push(&h->order, e); /* the order's reference */
    return e;
}

static void pending_push(hconn *h, xchg *e) {
    xd_push(&h->pending, e);
    e->in_pending = 1;
}

static xchg *pending_popleft(hconn *h) { /* returns the pending deque's reference */
    xchg *e = xd_popleft(&h->pending);
    e->in_pending = 0;
    return e;
}

static void set_open(xchg **slotp, xchg *e) {
    if (e) ex_incref(e);
    ex_decref(*slotp);
    *slotp = e;
}

static const char *on_req_head(void *owner, st_msg *msg) {
    hconn *h = owner;
    xchg *ex = new_exchange(h);
    ex_set_req(ex, msg);
    pending_push(h, ex);
    if (h->pending.n > MAX_PENDING) {
        ex_decref(pending_popleft(h)); /* no answer in sight (one-sided capture): let it go out */
        emit(h, 0);
    }
    set_open(&h->req_open, ex);
    if (msg->version.p && msg->version.n == 8 && memcmp(msg->version.p, "HTTP/0.9", 8) == 0 &&
        h->parsers[0])
        st_parser_expect_headless(h->parsers[1 - (h->client_dir < 0 ? 0 : h->client_dir)], msg->t_start);
    return NULL;
}

static void on_req_end(void *owner, st_msg *msg) {
    hconn *h = owner;
    xchg *ex = h->req_open;
    if (!ex || ex->req != msg) { /* failed before its head was parsed */
        ex = new_exchange(h);
        ex_set_req(ex, msg);
        pending_push(h, ex);
    }
    int answered = ex->resp != NULL;
    set_open(&h->req_open, NULL); /* (ex stays alive: the order or pending holds it, or it is done) */
    if (answered) emit(h, 0);
}

static st_msg *unparsed_request(hconn *h) {
    st_parser *rp = h->parsers[h->client_dir];
    const char *reason;
    double ts;
    long long ack;
    if (!st_parser_dropped(rp, &reason, &ts, &ack)) return NULL;
    st_msg *bad = st_msg_new(1, ts, ack);
    st_str_set(&bad->error, reason, strlen(reason));
    st_parser_clear_dropped(rp);
    bad->flags |= STF(PARSE_ERROR);
    bad->done = 1;
    return bad;
}

/* Returns the pending deque's reference to the matched exchange, or NULL. */
static xchg *match(hconn *h, st_msg *msg) {
    xdeque *pending = &h->pending;
    if (!pending->n) return NULL;
    long long ack = msg->ack;
    if ((h->req_lossy || h->resp_lossy) && ack >= 0) {
        st_msg *first = xd_at(pending, 0)->req;
        if (first && first->head_end > ack) return NULL; /* the server had not received it */
        if (h->resp_lossy) {
            while (pending->n > 1) {
                st_msg *nxt = xd_at(pending, 1)->req;
                if (!nxt || nxt->head_end < 0 || nxt->head_end > ack) break;
                ex_decref(pending_popleft(h)); /* its response was lost in the gap */
            }
        }
        h->req_lossy = h->resp_lossy = 0;
    }
    return pending_popleft(h);
}

static const char *on_resp_head(void *owner, st_msg *msg) {
    hconn *h = owner;
    if (st_msg_is_interim(msg)) {
        if (h->pending.n) {
            st_msg *req = xd_at(&h->pending, 0)->req;
            if (req) st_msg_add_interim(req, msg->status);
        }
        return NULL;
    }
    xchg *ex = match(h, msg);
    if (!ex) {
        ex = new_exchange(h);
        ex_incref(ex); /* ours, released below like the pending's */
        st_msg *bad = unparsed_request(h);
        if (bad) {
            ex_set_req(ex, bad);
            st_msg_decref(bad);
        }
    }
    ex_set_resp(ex, msg);
    set_open(&h->resp_open, ex);
    ex_decref(ex);
    return ex->req ? ex->req->method.p : NULL; /* the order or resp_open still holds ex */
}

static void on_resp_end(void *owner, st_msg *msg) {
    hconn *h = owner;
    if (st_msg_is_interim(msg)) return;
    xchg *ex = h->resp_open;
    if (!ex || ex->resp != msg) {
        ex = new_exchange(h);
        ex_set_resp(ex, msg);
    }
    ex_incref(ex);
    set_open(&h->resp_open, NULL);
    if ((msg->flags & STF(UPGRADE)) && h->parsers[0]) {
        st_parser_kill(h->parsers[0]);
        st_parser_kill(h->parsers[1]);
        if (ex->req && !ex->req->done) {
            ex->req->done = 1;
            st_parser *rp = h->parsers[h->client_dir];
            if (st_parser_msg(rp) == ex->req) st_parser_detach(rp); /* as pairing.py */
        }
    }
    ex_decref(ex);
    emit(h, 0);
}

/* ---- handing exchanges on: Exchange.finalize, json_line, Extractor._drain ---------------- */

static void put_q(st_buf *b, const st_str *s) {
    if (!s->p) st_buf_puts(b, "null");
    else st_buf_json_latin1(b, (const uint8_t *)s->p, s->n);
}

static void write_line(hconn *h, xchg *ex, uint32_t flags) {
    st_buf *b = &h->ctx->out;
    const st_msg *req = ex->req, *resp = ex->resp;
    st_buf_reserve(b, 512);
    st_buf_puts(b, "{\"id\": \"");
    st_buf_puts(b, h->conn_id);
    st_buf_putc(b, '-');
    st_buf_put_i64(b, ex->index);
    st_buf_puts(b, "\", \"conn\": \"");
    st_buf_puts(b, h->conn_id);
    st_buf_puts(b, "\", \"index\": ");
    st_buf_put_i64(b, ex->index);
    st_buf_puts(b, ", \"client\": \"");
    st_buf_puts(b, h->client);
    st_buf_puts(b, "\", \"server\": \"");
    st_buf_puts(b, h->server);
    st_buf_puts(b, "\", \"method\": ");
    if (req) {
        put_q(b, &req->method);
        st_buf_puts(b, ", \"target\": ");
        put_q(b, &req->target);
        st_buf_puts(b, ", \"version\": ");
        put_q(b, &req->version);
    } else {
        st_buf_puts(b, "null, \"target\": null, \"version\": ");
        if (resp) put_q(b, &resp->version);
        else st_buf_puts(b, "null");
    }
    st_buf_puts(b, ", \"status\": ");
    if (resp) {
        if (resp->status < 0) st_buf_puts(b, "null");
        else st_buf_put_i64(b, resp->status);
        st_buf_puts(b, ", \"reason\": ");
        put_q(b, &resp->reason);
    } else {
        st_buf_puts(b, "null, \"reason\": null");
    }
    st_buf_puts(b, ", \"req_body_len\": ");
    if (req) st_buf_put_i64(b, req->body_len);
    else st_buf_puts(b, "null");
    st_buf_puts(b, ", \"resp_body_len\": ");
    if (resp) st_buf_put_i64(b, resp->body_len);
    else st_buf_puts(b, "null");
    st_buf_puts(b, ", \"t_req_start\": ");
    if (req) {
        st_buf_put_double(b, req->t_start);
        st_buf_puts(b, ", \"t_req_end\": ");
        st_buf_put_double(b, req->t_end);
    } else {
        st_buf_puts(b, "null, \"t_req_end\": null");
    }
    st_buf_puts(b, ", \"t_resp_start\": ");
    if (resp) {
        st_buf_put_double(b, resp->t_start);
        st_buf_puts(b, ", \"t_resp_end\": ");
        st_buf_put_double(b, resp->t_end);
    } else {
        st_buf_puts(b, "null, \"t_resp_end\": null");
    }
    st_buf_puts(b, ", \"interim\": [");
    if (req) {
        for (size_t i = 0; i < req->ninterim; i++) {
            if (i) st_buf_puts(b, ", ");
            st_buf_put_i64(b, req->interim[i]);
        }
    }
    st_buf_puts(b, "], \"flags\": [");
    int first = 1;
    for (int i = 0; i < STF_COUNT; i++) {
        if (!(flags & (1u << i))) continue;
        if (!first) st_buf_puts(b, ", ");
        first = 0;
        st_buf_putc(b, '"');
        st_buf_puts(b, st_flag_names[i]);
        st_buf_putc(b, '"');
    }
    st_buf_puts(b, "], \"error\": ");
    const st_str *err = NULL;
    if (req && req->error.p && req->error.n) err = &req->error;
    else if (resp && resp->error.p && resp->error.n) err = &resp->error;
    if (err) put_q(b, err);
    else st_buf_puts(b, "null");
    st_buf_puts(b, "}\n");
}

static uint32_t finalize(const xchg *ex) {
    const st_msg *req = ex->req, *resp = ex->resp;
    if (req && resp && !req->flags && !resp->flags && !req->ninterim) return 0;
    uint32_t f = 0;
    if (req) {
        f |= req->flags;
        if (req->ninterim) f |= STF(INTERIM);
    } else {
        f |= STF(NO_REQUEST);
    }
    if (resp) f |= resp->flags;
    else f |= STF(NO_RESPONSE);
    return f;
}

static int ready(const xchg *ex) {
    const st_msg *req = ex->req, *resp = ex->resp;
    if (resp) return resp->done && (!req || req->done);
    /* No response: ready only if pairing has passed it by (its answer was lost in a gap). */
    return req && req->done && !ex->in_pending;
}

static void emit(hconn *h, int final) {
    st_ctx *ctx = h->ctx;
    while (h->order.n) {
        xchg *ex = xd_at(&h->order, 0);
        if (!final && !ready(ex)) return;
        xd_popleft(&h->order);
        if (final) {
            if (ex->req && !ex->req->done) ex->req->flags |= STF(INCOMPLETE);
            if (ex->resp && !ex->resp->done) ex->resp->flags |= STF(INCOMPLETE);
        }
        uint32_t flags = finalize(ex);
        write_line(h, ex, flags);
        ctx->exchanges++;
        for (int i = 0; i < STF_COUNT; i++)
            if (flags & (1u << i)) st_counter_add(&ctx->flags, st_flag_names[i], 1);
        ex_decref(ex);
    }
}

/* ---- Context ---------------------------------------------------------------------------- */

void st_ctx_init(st_ctx *ctx) {
    memset(ctx, 0, sizeof *ctx);
    ctx->max_body = 64LL * 1024 * 1024;
    st_buf_init(&ctx->out);
    st_counter_init(&ctx->flags);
    st_counter_init(&ctx->non_http);
    st_counter_init(&ctx->parse_errors);
}

void st_ctx_free(st_ctx *ctx) {
    st_buf_free(&ctx->out);
    st_counter_free(&ctx->flags);
    st_counter_free(&ctx->non_http);
    st_counter_free(&ctx->parse_errors);
    free(ctx->ports);
    free(ctx->servers);
    ctx->ports = NULL;
    ctx->servers = NULL;
    ctx->nports = ctx->nservers = 0;
}
