/* replay._sender: the replayer's send loop in C, on its own thread, without the GIL.
 *
 * Why: in Python a request cost ~75 µs of CPU (asyncio callbacks, parsing, a Result object),
 * which capped replay near a third of wrk's rate. Here the loop (epoll, keep-alive pools,
 * no pipelining, one request in flight per connection: wrk's model) costs a few µs, and
 * results come back as Arrow-ready column buffers, so Python does O(1) work per batch.
 *
 * The semantics are replay/client.py's, which stays the reference (and serves https):
 *   - per target at most `concurrency` connections; a connection idle longer than 1 s is not
 *     reused; no retries; `timeout` per request from the moment it is assigned;
 *   - an id is appended to the target's journal (one write per loop turn) before its bytes
 *     leave; if the journal cannot be written the request is not sent and has no result;
 *   - responses framed as RFC 9112 says: no body for HEAD, 1xx, 204, 304; chunked;
 *     Content-Length; else until close. 1xx interim answers are listed; 101 ends the
 *     connection. Bytes beyond the answer, a `Connection: close`, HTTP/1.0 without
 *     keep-alive, or a captured request that asked to close: the connection is not reused;
 *   - error kinds: refused, timeout, reset, protocol, too_large, interrupted.
 *
 * Paced runs: a job may carry a monotonic time before which it is not sent. Jobs come in
 * schedule order, so the loop looks at the head of each target's queue and arms a timerfd
 * (microsecond wake-ups, where epoll's own timeout has milliseconds) for the earliest.
 *
 * Python side: replay/native.py (the Arrow conversion) and replay/runner.py (when it is used).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "job.h"

#define IDLE_REUSE 1.0
#define SWEEP 0.05
#define MAX_HEAD (64 * 1024)
#define MAX_EVENTS 256
#define READY_ROWS 4096
#define READY_EVERY 0.02
#define BATCH_BODY_BYTES (1u << 30)

/* ---- growable buffers and Arrow-style columns ------------------------------------------ */

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static int buf_reserve(buf_t *b, size_t extra) {
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_put(buf_t *b, const void *p, size_t n) {
    if (!n) return;
    if (buf_reserve(b, n) < 0) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void buf_free(buf_t *b) { free(b->p); b->p = NULL; b->n = b->cap = 0; }

/* Latin-1 (what the wire bytes mean to Python here) to UTF-8 (what Arrow strings hold). */
static void buf_put_latin1(buf_t *b, const uint8_t *s, size_t n) {
    if (buf_reserve(b, 2 * n) < 0) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    char *o = b->p + b->n;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c < 0x80) *o++ = (char)c;
        else { *o++ = (char)(0xC0 | (c >> 6)); *o++ = (char)(0x80 | (c & 0x3F)); }
    }
    b->n = (size_t)(o - b->p);
}

typedef struct {
    buf_t valid;   /* one byte per row here; packed into a bitmap on collect */
    buf_t offsets; /* int32 (strings, binaries, lists) */
    buf_t data;
    int32_t rows;
} col_t;

static void col_init(col_t *c) {
    memset(c, 0, sizeof *c);
    int32_t zero = 0;
    buf_put(&c->offsets, &zero, 4);
}

static void col_free(col_t *c) { buf_free(&c->valid); buf_free(&c->offsets); buf_free(&c->data); }

static void col_end_row(col_t *c, int valid) {
    uint8_t v = (uint8_t)valid;
    buf_put(&c->valid, &v, 1);
    int32_t off = (int32_t)c->data.n;
    buf_put(&c->offsets, &off, 4);
    c->rows++;
}

static void col_bytes(col_t *c, const void *p, size_t n) { buf_put(&c->data, p, n); col_end_row(c, 1); }
static void col_null(col_t *c) { col_end_row(c, 0); }
static void col_latin1(col_t *c, const uint8_t *p, size_t n) { buf_put_latin1(&c->data, p, n); col_end_row(c, 1); }

/* fixed width: data holds the values, offsets unused */
static void col_f64(col_t *c, double v) {
    int ok = !isnan(v);
    if (!ok) v = 0.0;
    buf_put(&c->data, &v, 8);
    uint8_t b = (uint8_t)ok;
    buf_put(&c->valid, &b, 1);
    c->rows++;
}

static void col_i32(col_t *c, int32_t v, int ok) {
    buf_put(&c->data, &v, 4);
    uint8_t b = (uint8_t)ok;
    buf_put(&c->valid, &b, 1);
    c->rows++;
}

static void col_i64(col_t *c, int64_t v) {
    buf_put(&c->data, &v, 8);
    uint8_t b = 1;
    buf_put(&c->valid, &b, 1);
    c->rows++;
}

/* The result columns (replay/results.py RESULT_SCHEMA, without `target`, which Python adds). */
enum { C_ID, C_HOST, C_DUE, C_SEND, C_FIRST, C_END, C_STATUS, C_REASON, C_VERSION, C_HEADERS,
       C_HNAME, C_HVALUE, C_BODY, C_BODYLEN, C_INTERIM, C_INTERIM_V, C_ERROR, C_DETAIL, NCOLS };

typedef struct {
    col_t c[NCOLS];
    size_t body_bytes;
    long long statuses_ok; /* unused; keeps the struct honest to extend */
} batch_t;

static void batch_init(batch_t *b) {
    memset(b, 0, sizeof *b);
    for (int i = 0; i < NCOLS; i++) col_init(&b->c[i]);
}

static void batch_free(batch_t *b) {
    for (int i = 0; i < NCOLS; i++) col_free(&b->c[i]);
}

/* ---- jobs, connections, targets -------------------------------------------------------- */

typedef struct {
    job_t **items;
    size_t head, n, cap;
} jobq_t;

static void jobq_push(jobq_t *q, job_t *j) {
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        job_t **items = malloc(cap * sizeof *items);
        if (!items) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
        for (size_t i = 0; i < q->n; i++) items[i] = q->items[(q->head + i) % q->cap];
        free(q->items);
        q->items = items; q->head = 0; q->cap = cap;
    }
    q->items[(q->head + q->n) % q->cap] = j;
    q->n++;
}

static job_t *jobq_pop(jobq_t *q) {
    if (!q->n) return NULL;
    job_t *j = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return j;
}

enum { CS_FREE, CS_CONNECTING, CS_BUSY, CS_IDLE };
enum { P_HEAD, P_LEN, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER, P_CLOSE, P_DONE };

struct target;

typedef struct conn {
    int fd;
    int state;
    int slot;
    struct target *t;
    job_t *job;
    size_t sent;            /* request bytes written */
    int want_out;           /* EPOLLOUT registered */
    int queued;             /* in the loop's to-send list */
    double deadline;        /* monotonic */
    double idle_since;      /* monotonic */
    double t_send, t_first;
    int keep;
    /* the answer being read */
    buf_t in;               /* bytes received and not yet consumed by the parser */
    size_t scan;            /* head: where to resume looking for its end */
    int pstate;
    long long remaining;
    buf_t head;             /* the final answer's head (status line and header lines) */
    buf_t body;             /* the body kept (at most max_body) */
    long long body_len;
    int status, vminor;
    int *interim; size_t ninterim, capinterim;
    int got_bytes;
} conn_t;

typedef struct target {
    int index;
    struct sockaddr_storage addr; socklen_t addrlen;
    int journal_fd;
    conn_t *conns;          /* concurrency slots */
    int open;               /* connections open or connecting */
    jobq_t backlog;
    long long in_flight;    /* submitted and not yet finished (backlog included) */
    long long sent;         /* journaled and written */
    batch_t batch;          /* finished, not yet collected (guarded by the sender's lock) */
    buf_t journal;          /* ids to journal this loop turn */
} target_t;

typedef struct {
    PyObject_HEAD
    int ntargets;
    target_t *targets;
    int concurrency;
    double timeout;
    long long max_body;
    int discard;
    int ep, wake_fd, ready_fd, timer_fd;
    pthread_t thread;
    int started, joined;
    pthread_mutex_t lock;
    pthread_cond_t room;
    /* guarded by lock */
    jobq_t *incoming;       /* per target */
    int closed_input;
    int stop;               /* abandon: in-flight -> interrupted, backlog dropped */
    int cancel;             /* cancel_pending: jobs not yet given a connection are dropped */
    char abandon_kind[32];
    char abandon_detail[200];
    char failure[300];      /* a journal write failed: the run must stop */
    int finished;
    int closing;            /* the object is going away: nobody will collect */
    /* loop-only */
    conn_t **to_send; size_t nsend, capsend;
    double next_sweep;
    double last_ready;
    double timer_at;        /* when the timerfd is armed for (0: disarmed) */
} Sender;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- results --------------------------------------------------------------------------- */

static void header_pairs(batch_t *b, const uint8_t *h, size_t n, int32_t *count) {
    /* capture.message.parse_header_block: lines after the status line; folded lines joined
     * with a space, lines without a colon left out, OWS (space, tab) stripped from values. */
    const uint8_t *p = h, *end = h + n;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p)); /* skip the status line */
    p = nl ? nl + 1 : end;
    col_t *names = &b->c[C_HNAME], *values = &b->c[C_HVALUE];
    int32_t k = 0;
    while (p < end) {
        const uint8_t *e = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *le = e ? e : end;
        const uint8_t *q = le;
        while (q > p && q[-1] == '\r') q--;
        if (q > p) {
            if ((*p == ' ' || *p == '\t') && k > 0) {
                /* obsolete folding: previous value + " " + this line stripped */
                const uint8_t *s = p, *t = q;
                while (s < t && (*s == ' ' || *s == '\t')) s++;
                while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
                /* the previous value is the last row of `values`: extend it in place */
                buf_put(&values->data, " ", 1);
                buf_put_latin1(&values->data, s, (size_t)(t - s));
                int32_t off = (int32_t)values->data.n;
                memcpy(values->offsets.p + values->offsets.n - 4, &off, 4);
            } else {
                const uint8_t *colon = memchr(p, ':', (size_t)(q - p));
                if (colon) {
                    col_latin1(names, p, (size_t)(colon - p));
                    const uint8_t *s = colon + 1, *t = q;
                    while (s < t && (*s == ' ' || *s == '\t')) s++;
                    while (t > s && (t[-1] == ' ' || t[-1] == '\t')) t--;
                    col_latin1(values, s, (size_t)(t - s));
                    k++;
                }
            }
        }
        p = e ? e + 1 : end;
    }
    *count = k;
}

static void emit(Sender *s, conn_t *c, const char *error, const char *detail, int with_answer) {
    target_t *t = c->t;
    job_t *j = c->job;
    double now = wall();
    pthread_mutex_lock(&s->lock);
    batch_t *b = &t->batch;
    /* Arrow's binary offsets are 32-bit: a batch holds at most BATCH_BODY_BYTES of bodies.
     * Beyond that, wait for Python to take the batch (it is told through ready_fd). */
    while (b->c[C_ID].rows && b->body_bytes + c->body.n > BATCH_BODY_BYTES && !s->closing) {
        uint64_t one = 1;
        ssize_t w = write(s->ready_fd, &one, 8);
        (void)w;
        pthread_cond_wait(&s->room, &s->lock);
    }
    col_bytes(&b->c[C_ID], j->id, j->idlen);
    if (j->has_host) col_bytes(&b->c[C_HOST], j->host, j->hostlen);
    else col_null(&b->c[C_HOST]);
    col_f64(&b->c[C_DUE], j->t_due);
    col_f64(&b->c[C_SEND], c->t_send);
    col_f64(&b->c[C_FIRST], c->t_first);
    col_f64(&b->c[C_END], now);
    if (with_answer) {
        col_i32(&b->c[C_STATUS], c->status, 1);
        const uint8_t *h = (const uint8_t *)c->head.p;
        size_t hn = c->head.n;
        const uint8_t *nl = memchr(h, '\n', hn);
        size_t line = nl ? (size_t)(nl - h) : hn;
        while (line && h[line - 1] == '\r') line--;
        /* "HTTP/1.1 200 OK": the reason is after the code and one space */
        if (line > 13) col_latin1(&b->c[C_REASON], h + 13, line - 13);
        else col_bytes(&b->c[C_REASON], "", 0);
        char v[9] = "HTTP/1.0";
        v[5] = (char)h[5];
        v[7] = (char)h[7];
        col_bytes(&b->c[C_VERSION], v, 8);
        if (s->discard) {
            col_null(&b->c[C_HEADERS]);
            col_null(&b->c[C_BODY]);
        } else {
            int32_t k = 0;
            header_pairs(b, h, hn, &k);
            /* a list column: its offsets count header pairs */
            col_t *hc = &b->c[C_HEADERS];
            int32_t prev;
            memcpy(&prev, hc->offsets.p + hc->offsets.n - 4, 4);
            uint8_t one = 1;
            buf_put(&hc->valid, &one, 1);
            int32_t off = prev + k;
            buf_put(&hc->offsets, &off, 4);
            hc->rows++;
            col_bytes(&b->c[C_BODY], c->body.p, c->body.n);
            b->body_bytes += c->body.n;
        }
        col_i64(&b->c[C_BODYLEN], c->body_len);
    } else {
        col_i32(&b->c[C_STATUS], 0, 0);
        col_null(&b->c[C_REASON]);
        col_null(&b->c[C_VERSION]);
        col_null(&b->c[C_HEADERS]);
        col_null(&b->c[C_BODY]);
        col_i64(&b->c[C_BODYLEN], with_answer ? c->body_len : 0);
    }
    /* interim statuses: a list of int32 */
    col_t *ic = &b->c[C_INTERIM];
    int32_t prev;
    memcpy(&prev, ic->offsets.p + ic->offsets.n - 4, 4);
    for (size_t i = 0; i < c->ninterim; i++) col_i32(&b->c[C_INTERIM_V], c->interim[i], 1);
    uint8_t one = 1;
    buf_put(&ic->valid, &one, 1);
    int32_t off = prev + (int32_t)c->ninterim;
    buf_put(&ic->offsets, &off, 4);
    ic->rows++;
    if (error) { col_bytes(&b->c[C_ERROR], error, strlen(error)); col_bytes(&b->c[C_DETAIL], detail, strlen(detail)); }
    else { col_null(&b->c[C_ERROR]); col_null(&b->c[C_DETAIL]); }
    t->in_flight--;
    pthread_mutex_unlock(&s->lock);
    job_decref(j);
    c->job = NULL;
}

/* ---- connections ----------------------------------------------------------------------- */

static void conn_reset_answer(conn_t *c) {
    c->in.n = 0;
    c->scan = 0;
    c->pstate = P_HEAD;
    c->remaining = 0;
    c->head.n = 0;
    c->body.n = 0;
    c->body_len = 0;
    c->status = 0;
    c->vminor = 1;
    c->ninterim = 0;
    c->got_bytes = 0;
    c->t_send = NAN;
    c->t_first = NAN;
}

static void conn_close(Sender *s, conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        c->t->open--;
    }
    c->state = CS_FREE;
    c->want_out = 0;
}

static void fail(Sender *s, conn_t *c, const char *kind, const char *detail) {
    if (c->job) emit(s, c, kind, detail, 0);
    conn_close(s, c);
}

static void queue_send(Sender *s, conn_t *c) {
    if (c->queued) return;
    if (s->nsend == s->capsend) {
        s->capsend = s->capsend ? s->capsend * 2 : 64;
        s->to_send = realloc(s->to_send, s->capsend * sizeof *s->to_send);
        if (!s->to_send) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    }
    s->to_send[s->nsend++] = c;
    c->queued = 1;
}

static void set_out(Sender *s, conn_t *c, int on) {
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

static void assign(Sender *s, conn_t *c, job_t *j, double now) {
    c->job = j;
    c->deadline = now + s->timeout;
    c->keep = !j->close;
    c->sent = 0;
    conn_reset_answer(c);
}

static const char *connect_errno_kind(int e) {
    if (e == ECONNREFUSED || e == EHOSTUNREACH || e == ENETUNREACH) return "refused";
    if (e == ETIMEDOUT) return "timeout";
    return "reset";
}

static void open_conn(Sender *s, target_t *t, conn_t *c, job_t *j, double now) {
    assign(s, c, j, now);
    t->open++;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        char d[200];
        snprintf(d, sizeof d, "connect: %s", strerror(errno));
        t->open--;
        emit(s, c, "reset", d, 0);
        c->state = CS_FREE;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev);
    c->want_out = 1;
    int r = connect(fd, (struct sockaddr *)&t->addr, t->addrlen);
    if (r == 0) {
        c->state = CS_BUSY;
        set_out(s, c, 0);
        queue_send(s, c);
    } else if (errno == EINPROGRESS) {
        c->state = CS_CONNECTING;
    } else {
        char d[200];
        int e = errno;
        snprintf(d, sizeof d, "connect: [Errno %d] %s", e, strerror(e));
        c->state = CS_BUSY;
        fail(s, c, connect_errno_kind(e), d);
    }
}

/* Hand waiting jobs to free connections: idle ones first (if fresh enough), then new ones. */
static void dispatch(Sender *s, target_t *t, double now) {
    while (t->backlog.n) {
        double at = t->backlog.items[t->backlog.head]->t_at;
        if (!isnan(at) && at > now) return; /* not due yet: the timer wakes the loop */
        conn_t *idle = NULL, *free_slot = NULL;
        for (int i = 0; i < s->concurrency; i++) {
            conn_t *c = &t->conns[i];
            if (c->state == CS_IDLE) {
                if (now - c->idle_since > IDLE_REUSE) { conn_close(s, c); if (!free_slot) free_slot = c; continue; }
                idle = c;
                break;
            }
            if (c->state == CS_FREE && !free_slot) free_slot = c;
        }
        if (idle) {
            job_t *j = jobq_pop(&t->backlog);
            assign(s, idle, j, now);
            idle->state = CS_BUSY;
            queue_send(s, idle);
        } else if (free_slot) {
            job_t *j = jobq_pop(&t->backlog);
            open_conn(s, t, free_slot, j, now);
        } else {
            return;
        }
    }
}

static void write_request(Sender *s, conn_t *c) {
    job_t *j = c->job;
    while (c->sent < j->dlen) {
        ssize_t w = send(c->fd, j->data + c->sent, j->dlen - c->sent, MSG_NOSIGNAL);
        if (w > 0) { c->sent += (size_t)w; continue; }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) { set_out(s, c, 1); return; }
        if (w < 0 && errno == EINTR) continue;
        char d[200];
        snprintf(d, sizeof d, "connection closed by the target: [Errno %d] %s", errno, strerror(errno));
        fail(s, c, "reset", d);
        return;
    }
    if (c->want_out) set_out(s, c, 0);
}

/* Journal every queued request's id (one write per target), then send them. */
static void flush_sends(Sender *s) {
    if (!s->nsend) return;
    for (int ti = 0; ti < s->ntargets; ti++) s->targets[ti].journal.n = 0;
    for (size_t i = 0; i < s->nsend; i++) {
        conn_t *c = s->to_send[i];
        if (!c->job || c->state != CS_BUSY) continue;
        buf_put(&c->t->journal, c->job->id, c->job->idlen);
        buf_put(&c->t->journal, "\n", 1);
    }
    int journal_ok[64];
    for (int ti = 0; ti < s->ntargets && ti < 64; ti++) {
        target_t *t = &s->targets[ti];
        journal_ok[ti] = 1;
        size_t off = 0;
        while (off < t->journal.n && t->journal_fd >= 0) {
            ssize_t w = write(t->journal_fd, t->journal.p + off, t->journal.n - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                pthread_mutex_lock(&s->lock);
                if (!s->failure[0]) snprintf(s->failure, sizeof s->failure, "%s", strerror(w < 0 ? errno : ENOSPC));
                pthread_mutex_unlock(&s->lock);
                journal_ok[ti] = 0;
                break;
            }
            off += (size_t)w;
        }
    }
    double now = wall();
    for (size_t i = 0; i < s->nsend; i++) {
        conn_t *c = s->to_send[i];
        c->queued = 0;
        if (!c->job || c->state != CS_BUSY) continue;
        target_t *t = c->t;
        if (!journal_ok[t->index]) {
            /* not journaled, so not sent, and no result: the run stops (runner._unsent) */
            pthread_mutex_lock(&s->lock);
            t->in_flight--;
            pthread_mutex_unlock(&s->lock);
            job_decref(c->job);
            c->job = NULL;
            conn_close(s, c);
            continue;
        }
        pthread_mutex_lock(&s->lock);
        t->sent++;
        pthread_mutex_unlock(&s->lock);
        c->t_send = now;
        write_request(s, c);
    }
    s->nsend = 0;
}

/* ---- reading answers ------------------------------------------------------------------- */

static int ieq(const uint8_t *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t x = a[i];
        if (x >= 'A' && x <= 'Z') x = (uint8_t)(x + 32);
        if (x != (uint8_t)b[i]) return 0;
    }
    return 1;
}

static int has_token(const uint8_t *v, size_t n, const char *tok) {
    size_t tl = strlen(tok);
    for (size_t i = 0; i + tl <= n; i++)
        if (ieq(v + i, tok, tl)) return 1;
    return 0;
}

/* The answer is complete: record it, then reuse the connection or close it. */
static void answered(Sender *s, conn_t *c, size_t consumed) {
    int leftovers = consumed < c->in.n;
    const char *err = NULL;
    char detail[120];
    if (c->body_len > s->max_body) {
        err = "too_large";
        snprintf(detail, sizeof detail, "body of %lld bytes over --max-body", c->body_len);
    }
    emit(s, c, err, err ? detail : NULL, 1);
    if (c->keep && !leftovers && c->pstate == P_DONE) {
        c->state = CS_IDLE;
        c->idle_since = mono();
        c->in.n = 0;
    } else {
        conn_close(s, c);
    }
}

static void body_bytes(Sender *s, conn_t *c, const char *p, size_t n) {
    c->body_len += (long long)n;
    if (s->discard) return;
    size_t room = c->body.n < (size_t)s->max_body ? (size_t)s->max_body - c->body.n : 0;
    buf_put(&c->body, p, n < room ? n : room);
}

static void protocol_error(Sender *s, conn_t *c, const char *what) {
    char d[160];
    snprintf(d, sizeof d, "not an HTTP/1 response: %s", what);
    c->keep = 0;
    fail(s, c, "protocol", d);
}

/* Parse what has arrived. Returns 1 when the connection was finished with (closed or back
 * to idle), 0 when more bytes are needed. */
static int parse(Sender *s, conn_t *c, int eof) {
    uint8_t *d = (uint8_t *)c->in.p;
    size_t n = c->in.n, pos = 0;
    for (;;) {
        switch (c->pstate) {
        case P_HEAD: {
            while (pos < n && (d[pos] == '\r' || d[pos] == '\n')) pos++; /* stray CRLF before a head */
            size_t i = c->scan > pos ? c->scan : pos;
            size_t end = 0;
            for (; i < n; i++) {
                if (d[i] != '\n') continue;
                if (i + 1 < n && d[i + 1] == '\n') { end = i + 2; break; }
                if (i + 2 < n && d[i + 1] == '\r' && d[i + 2] == '\n') { end = i + 3; break; }
            }
            if (!end) {
                c->scan = n > 2 ? n - 2 : 0;
                if (n - pos > MAX_HEAD) { protocol_error(s, c, "head too large"); return 1; }
                if (n - pos >= 5 && memcmp(d + pos, "HTTP/", 5) != 0) { protocol_error(s, c, "no status line"); return 1; }
                goto need_more;
            }
            c->scan = 0;
            const uint8_t *h = d + pos;
            size_t hl = end - pos;
            if (hl < 12 || memcmp(h, "HTTP/", 5) != 0 || h[5] < '0' || h[5] > '9' || h[6] != '.' ||
                h[7] < '0' || h[7] > '9' || h[8] != ' ' || h[9] < '0' || h[9] > '9' || h[10] < '0' ||
                h[10] > '9' || h[11] < '0' || h[11] > '9' || (hl > 12 && h[12] != ' ' && h[12] != '\r' && h[12] != '\n')) {
                protocol_error(s, c, "bad status line");
                return 1;
            }
            int status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
            if (status >= 100 && status < 200 && status != 101) {
                if (c->ninterim == c->capinterim) {
                    c->capinterim = c->capinterim ? c->capinterim * 2 : 4;
                    c->interim = realloc(c->interim, c->capinterim * sizeof *c->interim);
                    if (!c->interim) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
                }
                c->interim[c->ninterim++] = status;
                pos = end;
                continue;
            }
            c->status = status;
            c->vminor = h[7] - '0';
            c->head.n = 0;
            buf_put(&c->head, h, hl);
            /* framing headers */
            long long clen = -1;
            int chunked = 0, te = 0, bad_cl = 0, conn_close_tok = 0, conn_keep_tok = 0;
            const uint8_t *p = memchr(h, '\n', hl) + 1, *he = h + hl;
            while (p < he) {
                const uint8_t *e = memchr(p, '\n', (size_t)(he - p));
                const uint8_t *le = e ? e : he;
                const uint8_t *q = le;
                while (q > p && q[-1] == '\r') q--;
                const uint8_t *colon = q > p ? memchr(p, ':', (size_t)(q - p)) : NULL;
                if (colon && *p != ' ' && *p != '\t') {
                    size_t kl = (size_t)(colon - p);
                    const uint8_t *v = colon + 1, *ve = q;
                    while (v < ve && (*v == ' ' || *v == '\t')) v++;
                    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
                    size_t vl = (size_t)(ve - v);
                    if (kl == 14 && ieq(p, "content-length", 14)) {
                        /* digits, or a list of equal values ("42, 42"); anything else is not
                         * a length, and the body runs to the close (as http1._framing) */
                        long long x = -1;
                        const uint8_t *k = v;
                        while (k <= ve) {
                            const uint8_t *comma = memchr(k, ',', (size_t)(ve - k));
                            const uint8_t *ie = comma ? comma : ve, *is = k;
                            while (is < ie && (*is == ' ' || *is == '\t')) is++;
                            while (ie > is && (ie[-1] == ' ' || ie[-1] == '\t')) ie--;
                            long long y = 0;
                            int ok = ie > is && ie - is < 19;
                            for (const uint8_t *q2 = is; ok && q2 < ie; q2++) {
                                if (*q2 < '0' || *q2 > '9') ok = 0;
                                else y = y * 10 + (*q2 - '0');
                            }
                            if (!ok || (x >= 0 && x != y)) { bad_cl = 1; break; }
                            x = y;
                            if (!comma) break;
                            k = comma + 1;
                        }
                        if (!bad_cl && clen >= 0 && clen != x) bad_cl = 1;
                        if (!bad_cl) clen = x;
                    } else if (kl == 17 && ieq(p, "transfer-encoding", 17)) {
                        te = 1;
                        /* chunked only when it is the last coding */
                        const uint8_t *last = v;
                        for (const uint8_t *k = v; k < ve; k++) if (*k == ',') last = k + 1;
                        while (last < ve && (*last == ' ' || *last == '\t')) last++;
                        chunked = (size_t)(ve - last) == 7 && ieq(last, "chunked", 7);
                    } else if (kl == 10 && ieq(p, "connection", 10)) {
                        if (has_token(v, vl, "close")) conn_close_tok = 1;
                        if (has_token(v, vl, "keep-alive")) conn_keep_tok = 1;
                    }
                }
                p = e ? e + 1 : he;
            }
            if (conn_close_tok || (c->vminor == 0 && h[5] == '1' && !conn_keep_tok) || status == 101)
                c->keep = 0;
            pos = end;
            if (c->job->head || status == 204 || status == 304 || status == 101 ||
                (status >= 100 && status < 200)) {
                c->pstate = P_DONE;
            } else if (te) {
                if (chunked) c->pstate = P_CHUNK_SIZE;
                else { c->pstate = P_CLOSE; c->keep = 0; }
            } else if (clen >= 0 && !bad_cl) {
                c->remaining = clen;
                c->pstate = clen ? P_LEN : P_DONE;
            } else {
                c->pstate = P_CLOSE;
                c->keep = 0;
            }
            break;
        }
        case P_LEN: {
            size_t take = (size_t)((long long)(n - pos) < c->remaining ? (long long)(n - pos) : c->remaining);
            body_bytes(s, c, (char *)d + pos, take);
            pos += take;
            c->remaining -= (long long)take;
            if (c->remaining) goto need_more;
            c->pstate = P_DONE;
            break;
        }
        case P_CHUNK_SIZE: {
            uint8_t *nl = memchr(d + pos, '\n', n - pos);
            if (!nl) { if (n - pos > 4096) { protocol_error(s, c, "bad chunk size line"); return 1; } goto need_more; }
            long long size = 0;
            size_t k = pos, digits = 0;
            while (k < (size_t)(nl - d)) {
                uint8_t x = d[k];
                int v = x >= '0' && x <= '9' ? x - '0' : x >= 'a' && x <= 'f' ? x - 'a' + 10 : x >= 'A' && x <= 'F' ? x - 'A' + 10 : -1;
                if (v < 0) break;
                if (size > (1LL << 56)) { protocol_error(s, c, "chunk too large"); return 1; }
                size = size * 16 + v;
                k++;
                digits++;
            }
            if (!digits || (k < (size_t)(nl - d) && d[k] != ';' && d[k] != ' ' && d[k] != '\t' && d[k] != '\r')) {
                protocol_error(s, c, "bad chunk size line");
                return 1;
            }
            pos = (size_t)(nl - d) + 1;
            if (size == 0) c->pstate = P_TRAILER;
            else { c->remaining = size; c->pstate = P_CHUNK_DATA; }
            break;
        }
        case P_CHUNK_DATA: {
            size_t take = (size_t)((long long)(n - pos) < c->remaining ? (long long)(n - pos) : c->remaining);
            body_bytes(s, c, (char *)d + pos, take);
            pos += take;
            c->remaining -= (long long)take;
            if (c->remaining) goto need_more;
            c->pstate = P_CHUNK_CRLF;
            break;
        }
        case P_CHUNK_CRLF:
            if (pos < n && d[pos] == '\r') { if (pos + 1 >= n) goto need_more; pos++; }
            if (pos >= n) goto need_more;
            if (d[pos] != '\n') { protocol_error(s, c, "bad chunk end"); return 1; }
            pos++;
            c->pstate = P_CHUNK_SIZE;
            break;
        case P_TRAILER: {
            uint8_t *nl = memchr(d + pos, '\n', n - pos);
            if (!nl) { if (n - pos > MAX_HEAD) { protocol_error(s, c, "trailers too large"); return 1; } goto need_more; }
            size_t ll = (size_t)(nl - (d + pos));
            int empty = ll == 0 || (ll == 1 && d[pos] == '\r');
            if (!empty) buf_put(&c->head, d + pos, ll + 1); /* trailers join the headers, as in http1 */
            pos = (size_t)(nl - d) + 1;
            if (empty) c->pstate = P_DONE;
            break;
        }
        case P_CLOSE:
            body_bytes(s, c, (char *)d + pos, n - pos);
            pos = n;
            if (!eof) goto need_more;
            c->pstate = P_DONE;
            break;
        case P_DONE:
            answered(s, c, pos);
            return 1;
        }
    }
need_more:
    /* keep the unconsumed bytes (a head in progress, a partial chunk line) */
    if (pos) {
        memmove(c->in.p, c->in.p + pos, n - pos);
        c->in.n = n - pos;
        if (c->scan >= pos) c->scan -= pos; else c->scan = 0;
    }
    return 0;
}

static void on_readable(Sender *s, conn_t *c) {
    for (;;) {
        if (buf_reserve(&c->in, 65536) < 0) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
        ssize_t r = recv(c->fd, c->in.p + c->in.n, c->in.cap - c->in.n, 0);
        if (r > 0) {
            if (c->state != CS_BUSY || !c->job) { conn_close(s, c); return; } /* bytes nobody asked for */
            if (!c->got_bytes) { c->got_bytes = 1; c->t_first = wall(); }
            c->in.n += (size_t)r;
            if (parse(s, c, 0)) return;
            if ((size_t)r < 65536) return; /* drained for now (level-triggered) */
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r < 0 && errno == EINTR) continue;
        /* EOF or error */
        if (c->state != CS_BUSY || !c->job) { conn_close(s, c); return; }
        if (r == 0 && c->pstate == P_CLOSE) { c->keep = 0; parse(s, c, 1); return; }
        char d[200];
        if (r == 0)
            snprintf(d, sizeof d, "connection closed by the target%s", c->got_bytes ? " mid-response" : "");
        else
            snprintf(d, sizeof d, "connection closed by the target%s: [Errno %d] %s",
                     c->got_bytes ? " mid-response" : "", errno, strerror(errno));
        fail(s, c, "reset", d);
        return;
    }
}

static void on_event(Sender *s, conn_t *c, uint32_t ev) {
    if (c->fd < 0) return;
    if (c->state == CS_CONNECTING) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        c->state = CS_BUSY;
        if (err) {
            char d[200];
            snprintf(d, sizeof d, "connect: [Errno %d] %s", err, strerror(err));
            fail(s, c, connect_errno_kind(err), d);
            return;
        }
        set_out(s, c, 0);
        queue_send(s, c);
        return;
    }
    if ((ev & EPOLLOUT) && c->state == CS_BUSY && c->job && c->sent < c->job->dlen && !c->queued) {
        write_request(s, c);
        if (c->fd < 0) return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(s, c);
}

static void sweep(Sender *s, double now) {
    char d[80];
    snprintf(d, sizeof d, "no complete response within %g s", s->timeout);
    for (int ti = 0; ti < s->ntargets; ti++) {
        target_t *t = &s->targets[ti];
        for (int i = 0; i < s->concurrency; i++) {
            conn_t *c = &t->conns[i];
            if ((c->state == CS_BUSY || c->state == CS_CONNECTING) && c->job && c->deadline <= now && !c->queued)
                fail(s, c, "timeout", d);
        }
    }
}

/* Jobs without a connection yet: dropped, with no journal line and no result (a stopped
 * run leaves them to a re-run). */
static void drop_backlog(Sender *s, target_t *t) {
    while (t->backlog.n) {
        job_t *j = jobq_pop(&t->backlog);
        pthread_mutex_lock(&s->lock);
        t->in_flight--;
        pthread_mutex_unlock(&s->lock);
        job_decref(j);
    }
}

/* cancel_pending's flag, taken on the loop thread: drop the backlog (before any dispatch, so
 * that nothing it held is sent once cancel_pending has returned). */
static void take_cancel(Sender *s) {
    pthread_mutex_lock(&s->lock);
    int cancel = s->cancel;
    s->cancel = 0;
    pthread_mutex_unlock(&s->lock);
    if (cancel)
        for (int ti = 0; ti < s->ntargets; ti++) drop_backlog(s, &s->targets[ti]);
}

/* Arm the timer for the earliest head of queue that is not due yet (or disarm it). */
static void arm_timer(Sender *s, double now) {
    double next = 0;
    for (int ti = 0; ti < s->ntargets; ti++) {
        jobq_t *q = &s->targets[ti].backlog;
        if (!q->n) continue;
        double at = q->items[q->head]->t_at;
        if (!isnan(at) && at > now && (next == 0 || at < next)) next = at;
    }
    if (next == s->timer_at) return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (next > 0) {
        its.it_value.tv_sec = (time_t)next;
        its.it_value.tv_nsec = (long)((next - (double)its.it_value.tv_sec) * 1e9);
        if (its.it_value.tv_nsec >= 1000000000L) { its.it_value.tv_sec++; its.it_value.tv_nsec -= 1000000000L; }
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
    }
    timerfd_settime(s->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
    s->timer_at = next;
}

static void abandon_all(Sender *s, const char *kind, const char *detail) {
    for (int ti = 0; ti < s->ntargets; ti++) {
        target_t *t = &s->targets[ti];
        drop_backlog(s, t);
        for (int i = 0; i < s->concurrency; i++) {
            conn_t *c = &t->conns[i];
            if (!c->job) continue;
            if (isnan(c->t_send)) {  /* never sent, never journaled: no result */
                pthread_mutex_lock(&s->lock);
                t->in_flight--;
                pthread_mutex_unlock(&s->lock);
                job_decref(c->job);
                c->job = NULL;
                c->queued = 0;
                conn_close(s, c);
            } else {
                fail(s, c, kind, detail);
            }
        }
    }
    s->nsend = 0;
}

static void *loop_main(void *arg) {
    Sender *s = arg;
    struct epoll_event evs[MAX_EVENTS];
    s->next_sweep = mono() + SWEEP;
    prctl(PR_SET_TIMERSLACK, 1UL); /* this thread's timer wake-ups on time, not 50 µs late */
    for (;;) {
        /* take new jobs */
        pthread_mutex_lock(&s->lock);
        int closed = s->closed_input, stop = s->stop;
        char kind[32], detail[200];
        memcpy(kind, s->abandon_kind, sizeof kind);
        memcpy(detail, s->abandon_detail, sizeof detail);
        int took = 0;
        for (int ti = 0; ti < s->ntargets; ti++) {
            job_t *j;
            while ((j = jobq_pop(&s->incoming[ti])) != NULL) { jobq_push(&s->targets[ti].backlog, j); took = 1; }
        }
        if (took) pthread_cond_broadcast(&s->room);
        pthread_mutex_unlock(&s->lock);
        if (stop) {
            abandon_all(s, kind, detail);
            break;
        }
        take_cancel(s);
        double now = mono();
        for (int ti = 0; ti < s->ntargets; ti++) dispatch(s, &s->targets[ti], now);
        flush_sends(s);
        uint64_t one = 1;
        long long pending = 0, busy = 0;
        pthread_mutex_lock(&s->lock);
        for (int ti = 0; ti < s->ntargets; ti++) {
            pending += s->targets[ti].batch.c[C_ID].rows;
            busy += s->targets[ti].in_flight;
        }
        pthread_mutex_unlock(&s->lock);
        /* Python converts a batch at a time: wake it for a good-sized batch, or at most
         * READY_EVERY after the first result waiting, so that progress and room stay fresh. */
        if (pending && (pending >= READY_ROWS || now - s->last_ready >= READY_EVERY || (closed && !busy))) {
            ssize_t w = write(s->ready_fd, &one, 8);
            (void)w;
            s->last_ready = now;
        }
        if (closed && !busy) break;
        arm_timer(s, now);
        int wait_ms = (int)((s->next_sweep - now) * 1000.0) + 1;
        if (wait_ms < 0) wait_ms = 0;
        int n = epoll_wait(s->ep, evs, MAX_EVENTS, wait_ms);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL || evs[i].data.ptr == (void *)&s->timer_fd) {
                uint64_t v;
                ssize_t r = read(evs[i].data.ptr == NULL ? s->wake_fd : s->timer_fd, &v, 8);
                (void)r;
                if (evs[i].data.ptr != NULL) s->timer_at = 0; /* fired */
                continue;
            }
            on_event(s, evs[i].data.ptr, evs[i].events);
        }
        now = mono();
        if (now >= s->next_sweep) {
            sweep(s, now);
            s->next_sweep = now + SWEEP;
        }
        /* freed connections take waiting jobs within the same turn */
        take_cancel(s);
        for (int ti = 0; ti < s->ntargets; ti++) dispatch(s, &s->targets[ti], now);
        flush_sends(s);
    }
    for (int ti = 0; ti < s->ntargets; ti++)
        for (int i = 0; i < s->concurrency; i++) conn_close(s, &s->targets[ti].conns[i]);
    pthread_mutex_lock(&s->lock);
    s->finished = 1;
    pthread_cond_broadcast(&s->room);
    pthread_mutex_unlock(&s->lock);
    uint64_t one = 1;
    ssize_t w = write(s->ready_fd, &one, 8);
    (void)w;
    return NULL;
}

/* ---- the Python type ------------------------------------------------------------------- */

static void wake(Sender *s) {
    uint64_t one = 1;
    ssize_t w = write(s->wake_fd, &one, 8);
    (void)w;
}

static int Sender_init(Sender *s, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"targets", "concurrency", "timeout", "max_body", "discard", NULL};
    PyObject *targets;
    int concurrency, discard;
    double timeout;
    long long max_body;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OidLp", kwlist, &targets, &concurrency, &timeout,
                                     &max_body, &discard))
        return -1;
    PyObject *seq = PySequence_Fast(targets, "targets: a list of (ip, port, journal fd)");
    if (!seq) return -1;
    Py_ssize_t nt = PySequence_Fast_GET_SIZE(seq);
    if (nt < 1 || nt > 64 || concurrency < 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "1 to 64 targets and a concurrency of at least 1");
        return -1;
    }
    s->ntargets = (int)nt;
    s->concurrency = concurrency;
    s->timeout = timeout;
    s->max_body = max_body;
    s->discard = discard;
    s->targets = calloc((size_t)nt, sizeof *s->targets);
    s->incoming = calloc((size_t)nt, sizeof *s->incoming);
    s->ep = s->wake_fd = s->ready_fd = s->timer_fd = -1;
    if (!s->targets || !s->incoming) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < nt; i++) {
        const char *ip;
        int port, jfd;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "sii", &ip, &port, &jfd)) { Py_DECREF(seq); return -1; }
        target_t *t = &s->targets[i];
        t->index = (int)i;
        t->journal_fd = jfd;
        memset(&t->addr, 0, sizeof t->addr);
        struct sockaddr_in *a4 = (struct sockaddr_in *)&t->addr;
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&t->addr;
        if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) {
            a4->sin_family = AF_INET;
            a4->sin_port = htons((uint16_t)port);
            t->addrlen = sizeof *a4;
        } else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) {
            a6->sin6_family = AF_INET6;
            a6->sin6_port = htons((uint16_t)port);
            t->addrlen = sizeof *a6;
        } else {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "%s: not an IP address", ip);
            return -1;
        }
        t->conns = calloc((size_t)concurrency, sizeof *t->conns);
        if (!t->conns) { Py_DECREF(seq); PyErr_NoMemory(); return -1; }
        for (int k = 0; k < concurrency; k++) {
            t->conns[k].fd = -1;
            t->conns[k].t = t;
            t->conns[k].slot = k;
        }
        batch_init(&t->batch);
    }
    Py_DECREF(seq);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->room, NULL);
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->ready_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->ep < 0 || s->wake_fd < 0 || s->ready_fd < 0 || s->timer_fd < 0) { PyErr_SetFromErrno(PyExc_OSError); return -1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->wake_fd, &ev);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = &s->timer_fd};
    epoll_ctl(s->ep, EPOLL_CTL_ADD, s->timer_fd, &tev);
    return 0;
}

static PyObject *Sender_start(Sender *s, PyObject *noargs) {
    if (s->started) Py_RETURN_NONE;
    if (pthread_create(&s->thread, NULL, loop_main, s) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot start the send thread");
        return NULL;
    }
    s->started = 1;
    Py_RETURN_NONE;
}

/* submit(target_index, ids, datas, hosts, closes, heads, dues, ats=None): hosts entries are
 * str or None; closes/heads are bytes of 0/1 per job; dues (wall clock, for the results) a
 * list of float or None, or None for none at all; ats (time.monotonic()) the instants before
 * which each is not sent, in order, or None to send at once. */
static PyObject *Sender_submit(Sender *s, PyObject *args) {
    int ti;
    PyObject *ids, *datas, *hosts, *dues, *ats = Py_None;
    Py_buffer closes, heads;
    if (!PyArg_ParseTuple(args, "iOOOy*y*O|O", &ti, &ids, &datas, &hosts, &closes, &heads, &dues, &ats)) return NULL;
    PyObject *r = NULL;
    PyObject *fi = NULL, *fd = NULL, *fh = NULL, *fu = NULL, *fa = NULL;
    job_t **jobs = NULL;
    Py_ssize_t n = 0;
    if (ti < 0 || ti >= s->ntargets) { PyErr_SetString(PyExc_IndexError, "target"); goto out; }
    fi = PySequence_Fast(ids, "ids"); fd = PySequence_Fast(datas, "datas");
    fh = PySequence_Fast(hosts, "hosts");
    fu = dues == Py_None ? NULL : PySequence_Fast(dues, "dues"); /* None: no job has a due time */
    fa = ats == Py_None ? NULL : PySequence_Fast(ats, "ats");
    if (!fi || !fd || !fh || (dues != Py_None && !fu) || (ats != Py_None && !fa)) goto out;
    n = PySequence_Fast_GET_SIZE(fi);
    if (PySequence_Fast_GET_SIZE(fd) != n || PySequence_Fast_GET_SIZE(fh) != n || (fu && PySequence_Fast_GET_SIZE(fu) != n) ||
        (fa && PySequence_Fast_GET_SIZE(fa) != n) ||
        closes.len != n || heads.len != n) {
        PyErr_SetString(PyExc_ValueError, "columns of different lengths");
        goto out;
    }
    jobs = calloc((size_t)n + 1, sizeof *jobs);
    if (!jobs) { PyErr_NoMemory(); goto out; }
    for (Py_ssize_t i = 0; i < n; i++) {
        job_t *j = calloc(1, sizeof *j);
        if (!j) { PyErr_NoMemory(); goto fail_jobs; }
        jobs[i] = j;
        j->refs = 1;
        Py_ssize_t l;
        const char *p = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(fi, i), &l);
        if (!p) goto fail_jobs;
        j->id = malloc((size_t)l + 1); memcpy(j->id, p, (size_t)l); j->idlen = (size_t)l;
        char *bp;
        if (PyBytes_AsStringAndSize(PySequence_Fast_GET_ITEM(fd, i), &bp, &l) < 0) goto fail_jobs;
        j->data = malloc((size_t)l + 1); memcpy(j->data, bp, (size_t)l); j->dlen = (size_t)l;
        PyObject *h = PySequence_Fast_GET_ITEM(fh, i);
        if (h != Py_None) {
            /* UTF-8, as the Arrow column holds it */
            const char *hp = PyUnicode_AsUTF8AndSize(h, &l);
            if (!hp) goto fail_jobs;
            j->hostlen = (size_t)l;
            j->host = malloc(j->hostlen + 1);
            memcpy(j->host, hp, j->hostlen);
            j->has_host = 1;
        }
        PyObject *u = fu ? PySequence_Fast_GET_ITEM(fu, i) : Py_None;
        j->t_due = u == Py_None ? NAN : PyFloat_AsDouble(u);
        if (j->t_due == -1.0 && PyErr_Occurred()) goto fail_jobs;
        j->t_at = fa ? PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fa, i)) : NAN;
        if (j->t_at == -1.0 && PyErr_Occurred()) goto fail_jobs;
        j->close = ((const char *)closes.buf)[i] != 0;
        j->head = ((const char *)heads.buf)[i] != 0;
    }
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&s->lock);
    for (Py_ssize_t i = 0; i < n; i++) jobq_push(&s->incoming[ti], jobs[i]);
    s->targets[ti].in_flight += n;
    pthread_mutex_unlock(&s->lock);
    Py_END_ALLOW_THREADS
    wake(s);
    free(jobs);
    jobs = NULL;
    r = Py_None;
    Py_INCREF(r);
    goto out;
fail_jobs:
    for (Py_ssize_t i = 0; i < n; i++) if (jobs[i]) { jobs[i]->refs = 1; job_decref(jobs[i]); }
    free(jobs);
out:
    Py_XDECREF(fi); Py_XDECREF(fd); Py_XDECREF(fh); Py_XDECREF(fu); Py_XDECREF(fa);
    PyBuffer_Release(&closes);
    PyBuffer_Release(&heads);
    return r;
}

/* submit_planned(target_index, planned): queue a Planned's jobs (planner.c) for one target;
 * a job queued for several targets is shared, not copied. */
static PyObject *Sender_submit_planned(Sender *s, PyObject *args) {
    int ti;
    PyObject *planned;
    if (!PyArg_ParseTuple(args, "iO", &ti, &planned)) return NULL;
    if (ti < 0 || ti >= s->ntargets) { PyErr_SetString(PyExc_IndexError, "target"); return NULL; }
    job_t **jobs;
    size_t n;
    if (planned_jobs(planned, &jobs, &n) < 0) return NULL;
    for (size_t i = 0; i < n; i++) job_incref(jobs[i]);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++) jobq_push(&s->incoming[ti], jobs[i]);
    s->targets[ti].in_flight += (long long)n;
    pthread_mutex_unlock(&s->lock);
    Py_END_ALLOW_THREADS
    wake(s);
    Py_RETURN_NONE;
}

static PyObject *bitmap(const buf_t *valid, int32_t rows, int *all) {
    Py_ssize_t nb = (rows + 7) / 8;
    PyObject *b = PyBytes_FromStringAndSize(NULL, nb);
    if (!b) return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(b);
    memset(o, 0, (size_t)nb);
    int every = 1;
    for (int32_t i = 0; i < rows; i++) {
        if (valid->p[i]) o[i >> 3] |= (uint8_t)(1u << (i & 7));
        else every = 0;
    }
    *all = every;
    return b;
}

/* One column as (validity bitmap or None, offsets bytes or None, data bytes, rows). */
static PyObject *column(col_t *c, int varlen) {
    int all;
    PyObject *bm = bitmap(&c->valid, c->rows, &all);
    if (!bm) return NULL;
    if (all) { Py_DECREF(bm); bm = Py_None; Py_INCREF(bm); }
    PyObject *off = varlen ? PyBytes_FromStringAndSize(c->offsets.p, (Py_ssize_t)c->offsets.n) : (Py_INCREF(Py_None), Py_None);
    PyObject *data = PyBytes_FromStringAndSize(c->data.p ? c->data.p : "", (Py_ssize_t)c->data.n);
    if (!off || !data) { Py_DECREF(bm); Py_XDECREF(off); Py_XDECREF(data); return NULL; }
    return Py_BuildValue("(NNNi)", bm, off, data, (int)c->rows);
}

static const int VARLEN[NCOLS] = {
    [C_ID] = 1, [C_HOST] = 1, [C_REASON] = 1, [C_VERSION] = 1, [C_HEADERS] = 1, [C_HNAME] = 1,
    [C_HVALUE] = 1, [C_BODY] = 1, [C_INTERIM] = 1, [C_ERROR] = 1, [C_DETAIL] = 1,
};

/* collect() -> list, per target, of None or a tuple of NCOLS columns. */
static PyObject *Sender_collect(Sender *s, PyObject *noargs) {
    uint64_t v;
    ssize_t r = read(s->ready_fd, &v, 8);
    (void)r;
    batch_t *taken = calloc((size_t)s->ntargets, sizeof *taken);
    if (!taken) return PyErr_NoMemory();
    pthread_mutex_lock(&s->lock);
    for (int ti = 0; ti < s->ntargets; ti++) {
        taken[ti] = s->targets[ti].batch;
        batch_init(&s->targets[ti].batch);
    }
    pthread_cond_broadcast(&s->room);
    pthread_mutex_unlock(&s->lock);
    PyObject *out = PyList_New(s->ntargets);
    for (int ti = 0; out && ti < s->ntargets; ti++) {
        batch_t *b = &taken[ti];
        if (!b->c[C_ID].rows) { Py_INCREF(Py_None); PyList_SET_ITEM(out, ti, Py_None); continue; }
        PyObject *cols = PyTuple_New(NCOLS);
        for (int k = 0; cols && k < NCOLS; k++) {
            PyObject *col = column(&b->c[k], VARLEN[k]);
            if (!col) { Py_CLEAR(cols); break; }
            PyTuple_SET_ITEM(cols, k, col);
        }
        if (!cols) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, ti, cols);
    }
    for (int ti = 0; ti < s->ntargets; ti++) batch_free(&taken[ti]);
    free(taken);
    return out;
}

static PyObject *Sender_close_input(Sender *s, PyObject *noargs) {
    pthread_mutex_lock(&s->lock);
    s->closed_input = 1;
    pthread_mutex_unlock(&s->lock);
    wake(s);
    Py_RETURN_NONE;
}

/* cancel_pending(): jobs not yet given a connection (queued, or waiting for their time) are
 * dropped: never journaled, never sent, no result. What is in flight finishes. */
static PyObject *Sender_cancel_pending(Sender *s, PyObject *noargs) {
    pthread_mutex_lock(&s->lock);
    for (int ti = 0; ti < s->ntargets; ti++) {
        job_t *j;
        while ((j = jobq_pop(&s->incoming[ti])) != NULL) {
            s->targets[ti].in_flight--;
            job_decref(j);
        }
    }
    s->cancel = 1;
    pthread_mutex_unlock(&s->lock);
    wake(s);
    Py_RETURN_NONE;
}

static PyObject *Sender_abandon(Sender *s, PyObject *args) {
    const char *kind, *detail;
    if (!PyArg_ParseTuple(args, "ss", &kind, &detail)) return NULL;
    pthread_mutex_lock(&s->lock);
    s->stop = 1;
    snprintf(s->abandon_kind, sizeof s->abandon_kind, "%s", kind);
    snprintf(s->abandon_detail, sizeof s->abandon_detail, "%s", detail);
    pthread_mutex_unlock(&s->lock);
    wake(s);
    Py_RETURN_NONE;
}

static PyObject *Sender_join(Sender *s, PyObject *noargs) {
    if (s->started && !s->joined) {
        Py_BEGIN_ALLOW_THREADS
        pthread_join(s->thread, NULL);
        Py_END_ALLOW_THREADS
        s->joined = 1;
    }
    Py_RETURN_NONE;
}

/* counts() -> (finished, failure or None, [(in_flight, sent) per target]) */
static PyObject *Sender_counts(Sender *s, PyObject *noargs) {
    pthread_mutex_lock(&s->lock);
    int finished = s->finished;
    char failure[300];
    memcpy(failure, s->failure, sizeof failure);
    long long fl[64], sent[64];
    for (int ti = 0; ti < s->ntargets; ti++) { fl[ti] = s->targets[ti].in_flight; sent[ti] = s->targets[ti].sent; }
    pthread_mutex_unlock(&s->lock);
    PyObject *per = PyList_New(s->ntargets);
    for (int ti = 0; per && ti < s->ntargets; ti++) PyList_SET_ITEM(per, ti, Py_BuildValue("(LL)", fl[ti], sent[ti]));
    if (!per) return NULL;
    if (failure[0]) return Py_BuildValue("(isN)", finished, failure, per);
    return Py_BuildValue("(iON)", finished, Py_None, per);
}

static PyObject *Sender_ready_fd(Sender *s, void *closure) { return PyLong_FromLong(s->ready_fd); }

static void Sender_dealloc(Sender *s) {
    if (s->started && !s->joined) {
        pthread_mutex_lock(&s->lock);
        s->stop = 1;
        s->closing = 1;
        snprintf(s->abandon_kind, sizeof s->abandon_kind, "interrupted");
        pthread_cond_broadcast(&s->room);
        pthread_mutex_unlock(&s->lock);
        wake(s);
        pthread_join(s->thread, NULL);
    }
    if (s->targets) {
        for (int ti = 0; ti < s->ntargets; ti++) {
            target_t *t = &s->targets[ti];
            job_t *j;
            while ((j = jobq_pop(&t->backlog)) != NULL) job_decref(j);
            while (s->incoming && (j = jobq_pop(&s->incoming[ti])) != NULL) job_decref(j);
            free(t->backlog.items);
            if (s->incoming) free(s->incoming[ti].items);
            for (int i = 0; t->conns && i < s->concurrency; i++) {
                conn_t *c = &t->conns[i];
                if (c->fd >= 0) close(c->fd);
                if (c->job) job_decref(c->job);
                buf_free(&c->in); buf_free(&c->head); buf_free(&c->body); free(c->interim);
            }
            free(t->conns);
            batch_free(&t->batch);
            buf_free(&t->journal);
        }
        free(s->targets);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->room);
    }
    free(s->incoming);
    free(s->to_send);
    if (s->ep >= 0) close(s->ep);
    if (s->wake_fd >= 0) close(s->wake_fd);
    if (s->ready_fd >= 0) close(s->ready_fd);
    if (s->timer_fd >= 0) close(s->timer_fd);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef Sender_methods[] = {
    {"start", (PyCFunction)Sender_start, METH_NOARGS, "start the send thread"},
    {"submit", (PyCFunction)Sender_submit, METH_VARARGS, "queue jobs for one target"},
    {"submit_planned", (PyCFunction)Sender_submit_planned, METH_VARARGS, "queue a Planned's jobs for one target"},
    {"collect", (PyCFunction)Sender_collect, METH_NOARGS, "finished results, per target, as column buffers"},
    {"close_input", (PyCFunction)Sender_close_input, METH_NOARGS, "no more jobs: finish what is queued"},
    {"abandon", (PyCFunction)Sender_abandon, METH_VARARGS, "stop now: in-flight requests end with an error kind"},
    {"cancel_pending", (PyCFunction)Sender_cancel_pending, METH_NOARGS, "drop the jobs not yet sent; in-flight ones finish"},
    {"join", (PyCFunction)Sender_join, METH_NOARGS, "wait for the send thread to end"},
    {"counts", (PyCFunction)Sender_counts, METH_NOARGS, "(finished, failure, [(in_flight, sent)])"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Sender_getset[] = {
    {"ready_fd", (getter)Sender_ready_fd, NULL, "an eventfd, readable when results are waiting", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "replay._sender.Sender",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_methods = Sender_methods,
    .tp_getset = Sender_getset,
    .tp_doc = "The replayer's send loop: epoll, keep-alive pools, results as column buffers.",
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "replay._sender", "The replayer's send loop in C (see sender.c).", -1, NULL,
};

PyMODINIT_FUNC PyInit__sender(void) {
    if (PyType_Ready(&SenderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&SenderType);
    if (PyModule_AddObject(m, "Sender", (PyObject *)&SenderType) < 0) { Py_DECREF(&SenderType); Py_DECREF(m); return NULL; }
    if (planner_add_types(m) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
