/* One direction's HTTP/1.x parser: an exact port of capture/http1.py's Parser, and of
 * capture/message.py's Message (st_msg, without headers and bodies).
 *
 * The Python is the specification; the comments name the Python each piece follows. Head bytes
 * are latin-1 in Python (one byte, one character), so the str operations on the decoded head
 * are byte operations here, except the few whose meaning differs for non-ASCII characters:
 *   str.split() / str.strip() with no argument  -> Unicode whitespace (u_space below)
 *   bytes.strip() with no argument              -> ASCII whitespace (a_space below)
 *   str.lower()                                 -> latin-1 lowering (lower1 below)
 *   isascii() and isdigit()                     -> ASCII digits only
 * The regular expressions are matched by hand, with re's meaning: `^` without MULTILINE
 * matches only at index 0 of the bytes searched (not at the search position).
 *
 * Callbacks get a borrowed message: an owner that keeps it takes a reference (st_msg_incref).
 * The parser copies what it keeps between feeds; callers' buffers are never kept.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* memmem, memrchr */
#endif
#include "native.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef long long ll;

/* Parser states (http1.py) */
enum { IDLE, HEAD, BODY_LEN, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILER, BODY_CLOSE, RESYNC, DEAD };

#define MAX_HEAD (64 * 1024)
/* Python's ints are unbounded: a Content-Length or chunk size beyond this is kept as this,
 * which no stream can exhaust, so nothing observable changes. */
#define BIG (1LL << 62)

static void oom(void) {
    fprintf(stderr, "shadowtap: out of memory\n");
    abort();
}

/* ---- messages (message.py) ------------------------------------------------------------ */

st_msg *st_msg_new(int is_request, double t_start, long long ack) {
    st_msg *m = calloc(1, sizeof *m);
    if (!m) oom();
    m->refs = 1;
    m->is_request = is_request;
    m->status = -1;
    m->t_start = m->t_end = t_start;
    m->ack = ack;
    m->head_end = -1;
    return m;
}

void st_msg_incref(st_msg *m) { m->refs++; }

void st_msg_decref(st_msg *m) {
    if (!m || --m->refs > 0) return;
    free(m->method.p);
    free(m->target.p);
    free(m->version.p);
    free(m->reason.p);
    free(m->error.p);
    free(m->interim);
    free(m);
}

void st_msg_add_interim(st_msg *m, int status) {
    if (m->ninterim == m->capinterim) {
        size_t cap = m->capinterim ? m->capinterim * 2 : 4;
        int *p = realloc(m->interim, cap * sizeof *p);
        if (!p) oom();
        m->interim = p;
        m->capinterim = cap;
    }
    m->interim[m->ninterim++] = status;
}

void st_str_set(st_str *s, const void *p, size_t n) {
    char *q = malloc(n + 1);
    if (!q) oom();
    if (n) memcpy(q, p, n);
    q[n] = 0;
    free(s->p);
    s->p = q;
    s->n = n;
}

void st_str_clear(st_str *s) {
    free(s->p);
    s->p = NULL;
    s->n = 0;
}

int st_msg_is_interim(const st_msg *m) {
    int st = m->status;
    return st != -1 && 100 <= st && st < 200 && st != 101 && !(m->flags & STF(INTERIM_WITH_BODY));
}

/* ---- the parser ------------------------------------------------------------------------ */

struct st_parser {
    int is_request;
    st_on_head on_head;
    st_on_end on_end;
    void *owner;
    ll max_body;
    int state;
    st_buf buf;   /* Parser.buf: bytes kept for the next feed */
    st_buf work;  /* scratch: buf + data when a feed continues kept bytes */
    st_msg *msg;
    ll remaining;
    ll offset;    /* stream offset of the first byte not yet consumed */
    ll skipped;
    st_counter errors;
    uint32_t pending_flags;
    int has_headless;
    double headless_ts;
    const char *dropped_reason; /* NULL: dropped is None */
    double dropped_ts;
    ll dropped_ack;
    double ts;
    ll ack;
};

st_parser *st_parser_new(int is_request, st_on_head on_head, st_on_end on_end, void *owner,
                         long long max_body) {
    st_parser *p = calloc(1, sizeof *p);
    if (!p) oom();
    p->is_request = is_request;
    p->on_head = on_head;
    p->on_end = on_end;
    p->owner = owner;
    p->max_body = max_body;
    p->state = IDLE;
    st_buf_init(&p->buf);
    st_buf_init(&p->work);
    st_counter_init(&p->errors);
    p->ack = -1;
    return p;
}

void st_parser_free(st_parser *p) {
    if (!p) return;
    if (p->msg) st_msg_decref(p->msg);
    st_buf_free(&p->buf);
    st_buf_free(&p->work);
    st_counter_free(&p->errors);
    free(p);
}

st_msg *st_parser_msg(st_parser *p) { return p->msg; }
uint32_t *st_parser_pending_flags(st_parser *p) { return &p->pending_flags; }
long long st_parser_skipped(const st_parser *p) { return p->skipped; }
st_counter *st_parser_errors(st_parser *p) { return &p->errors; }

int st_parser_dropped(st_parser *p, const char **reason, double *ts, long long *ack) {
    if (!p->dropped_reason) return 0;
    *reason = p->dropped_reason;
    *ts = p->dropped_ts;
    *ack = p->dropped_ack;
    return 1;
}

void st_parser_clear_dropped(st_parser *p) { p->dropped_reason = NULL; }

/* Not in native.h: for tests and debugging. */
long long st_parser_offset(const st_parser *p);
int st_parser_state(const st_parser *p);
long long st_parser_offset(const st_parser *p) { return p->offset; }
int st_parser_state(const st_parser *p) { return p->state; }

/* ---- byte helpers ---------------------------------------------------------------------- */

/* data.find(b" HTTP/", start, stop) (glibc's memmem is slow for short needles) */
static ll find_http(const uint8_t *d, ll n, ll start, ll stop) {
    if (stop > n) stop = n;
    for (ll i = start; stop - i >= 6;) {
        const uint8_t *q = memchr(d + i, ' ', (size_t)(stop - 5 - i));
        if (!q) return -1;
        i = (ll)(q - d);
        if (d[i + 1] == 'H' && d[i + 2] == 'T' && d[i + 3] == 'T' && d[i + 4] == 'P' && d[i + 5] == '/') return i;
        i++;
    }
    return -1;
}

/* data.find(b"\r\n\r\n", start) */
static ll find_crlfcrlf(const uint8_t *d, ll n, ll start) {
    for (ll i = start + 1; i + 2 < n;) {
        const uint8_t *q = memchr(d + i, '\n', (size_t)(n - 2 - i));
        if (!q) return -1;
        i = (ll)(q - d);
        if (d[i - 1] == '\r' && d[i + 1] == '\r' && d[i + 2] == '\n') return i - 1;
        i++;
    }
    return -1;
}

static ll findc(const uint8_t *d, ll n, ll start, ll stop, int c) {
    if (stop > n) stop = n;
    if (stop <= start) return -1;
    const uint8_t *r = memchr(d + start, c, (size_t)(stop - start));
    return r ? (ll)(r - d) : -1;
}

/* str.isspace() for a latin-1 character: Unicode whitespace */
static int u_space(uint8_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0;
}

/* bytes.isspace(): ASCII whitespace */
static int a_space(uint8_t c) { return c == ' ' || (c >= 9 && c <= 13); }

/* str.lower() of one latin-1 character (it stays one latin-1 character) */
static uint8_t lower1(uint8_t c) {
    if ((c >= 'A' && c <= 'Z') || (c >= 0xc0 && c <= 0xde && c != 0xd7)) return (uint8_t)(c + 32);
    return c;
}

static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* _is_status: three ASCII digits */
static int is_status(const uint8_t *s, size_t n) {
    return n == 3 && is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]);
}

static int status_value(const uint8_t *s) { return (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0'); }

/* Does `s` start with `lname` (lowercase ASCII), compared as str.lower() would? */
static int lprefix(const uint8_t *s, size_t n, const char *lname, size_t ln) {
    if (n < ln) return 0;
    for (size_t i = 0; i < ln; i++) {
        uint8_t t = (uint8_t)lname[i];
        if (t >= 'a' && t <= 'z') {
            if ((s[i] | 0x20) != t) return 0;
        } else if (s[i] != t) {
            return 0;
        }
    }
    return 1;
}

/* _REQ_LINE_RE's line part at q: [A-Z][A-Z0-9_-]{0,31} [!-~]+ HTTP/[0-9]\.[0-9]\r?\n */
static int req_line_at(const uint8_t *d, ll n, ll q) {
    ll i = q;
    if (i >= n || !(d[i] >= 'A' && d[i] <= 'Z')) return 0;
    i++;
    int k = 0;
    while (i < n && k < 31 && ((d[i] >= 'A' && d[i] <= 'Z') || is_digit(d[i]) || d[i] == '_' || d[i] == '-')) {
        i++;
        k++;
    }
    if (i >= n || d[i] != ' ') return 0;
    i++;
    ll t0 = i;
    while (i < n && d[i] >= 0x21 && d[i] <= 0x7e) i++;
    if (i == t0 || n - i < 9) return 0;
    if (memcmp(d + i, " HTTP/", 6) != 0 || !is_digit(d[i + 6]) || d[i + 7] != '.' || !is_digit(d[i + 8]))
        return 0;
    i += 9;
    if (i < n && d[i] == '\r') i++;
    return i < n && d[i] == '\n';
}

/* _RESP_LINE_RE's line part at q: HTTP/[0-9]\.[0-9] [0-9]{3}[ \r\n] */
static int resp_line_at(const uint8_t *d, ll n, ll q) {
    if (n - q < 13) return 0;
    const uint8_t *s = d + q;
    return memcmp(s, "HTTP/", 5) == 0 && is_digit(s[5]) && s[6] == '.' && is_digit(s[7]) && s[8] == ' ' &&
           is_digit(s[9]) && is_digit(s[10]) && is_digit(s[11]) && (s[12] == ' ' || s[12] == '\r' || s[12] == '\n');
}

static int line_at(const st_parser *p, const uint8_t *d, ll n, ll q) {
    return p->is_request ? req_line_at(d, n, q) : resp_line_at(d, n, q);
}

/* rx.match(data): `(?:^|\n)...` at index 0 */
static int rx_match0(const st_parser *p, const uint8_t *d, ll n) {
    if (n <= 0) return 0;
    if (line_at(p, d, n, 0)) return 1;
    return d[0] == '\n' && line_at(p, d, n, 1);
}

/* rx.search(data, from): the index just past the match's leading newline (or 0 for `^`), or
 * -1. That is `m.start() + (1 if data[m.start()] == 10 else 0)`. */
static ll rx_search(const st_parser *p, const uint8_t *d, ll n, ll from) {
    if (from == 0 && n > 0 && line_at(p, d, n, 0)) return 0;
    ll i = from;
    while (i < n) {
        const uint8_t *nl = memchr(d + i, '\n', (size_t)(n - i));
        if (!nl) return -1;
        i = (ll)(nl - d);
        if (line_at(p, d, n, i + 1)) return i + 1;
        i++;
    }
    return -1;
}

/* ---- the state machine ------------------------------------------------------------------ */

static void finish(st_parser *p) {
    st_msg *m = p->msg;
    m->t_end = p->ts;
    m->done = 1;
    p->msg = NULL;
    if (p->state != DEAD) p->state = IDLE;
    p->on_end(p->owner, m);
    st_msg_decref(m);
}

static void body(st_parser *p, ll n) {
    st_msg *m = p->msg;
    m->body_len += n;
    ll room = p->max_body - m->stored;
    if (room >= n) {
        m->stored += n;
    } else {
        if (room > 0) m->stored += room;
        m->flags |= STF(BODY_TRUNCATED);
    }
    m->t_end = p->ts;
}

static ll keep(st_parser *p, const uint8_t *d, ll n, ll pos) {
    p->buf.len = 0;
    st_buf_put(&p->buf, d + pos, (size_t)(n - pos));
    p->offset += pos;
    return -1;
}

static void error(st_parser *p, const char *reason, st_msg *m) {
    st_counter_add(&p->errors, reason, 1);
    if (m) {
        st_str_set(&m->error, reason, strlen(reason));
        m->flags |= STF(PARSE_ERROR) | STF(INCOMPLETE);
        finish(p);
    }
}

static ll resync(st_parser *p, const uint8_t *d, ll n, ll pos) {
    ll start = rx_search(p, d, n, pos && d[pos - 1] == '\n' ? pos - 1 : pos);
    if (start < 0) {
        /* Keep the last line (it may be the start of a message cut by the segment end). */
        ll nl = -1;
        if (n > pos) {
            const uint8_t *r = memrchr(d + pos, '\n', (size_t)(n - pos));
            if (r) nl = (ll)(r - d);
        }
        ll k = pos;
        if (nl > k) k = nl;
        if (n - MAX_HEAD > k) k = n - MAX_HEAD;
        p->skipped += k - pos;
        return keep(p, d, n, k);
    }
    p->skipped += start - pos;
    p->state = IDLE;
    return start;
}

static ll error_resync(st_parser *p, const char *reason, const uint8_t *d, ll n, ll pos, int delimited) {
    st_msg *m = p->msg;
    if (!m || (m->head_end < 0 && !(m->method.p && m->method.n) && m->status == -1)) {
        p->msg = NULL;
        st_counter_add(&p->errors, reason, 1);
        if (p->state == IDLE || p->state == HEAD) {
            p->dropped_reason = reason;
            p->dropped_ts = m ? m->t_start : p->ts;
            p->dropped_ack = m ? m->ack : p->ack;
        }
        if (m) st_msg_decref(m);
    } else {
        error(p, reason, m);
    }
    p->state = RESYNC;
    return resync(p, d, n, delimited || pos >= n ? pos : pos + 1);
}

static void start_headless(st_parser *p) {
    st_msg *m = st_msg_new(p->is_request, p->has_headless && p->headless_ts != 0.0 ? p->headless_ts : p->ts, -1);
    if (p->msg) st_msg_decref(p->msg);
    p->msg = m;
    p->has_headless = 0;
    st_str_set(&m->version, "HTTP/0.9", 8);
    m->head_end = p->offset;
    p->on_head(p->owner, m);
    p->state = BODY_CLOSE;
}

/* `GET /path` with no version: HTTP/0.9 (_http09) */
static ll http09(st_parser *p, const uint8_t *d, ll n, ll pos, ll nl) {
    ll e = nl;
    while (e > pos && d[e - 1] == '\r') e--;
    /* line.split(): exactly two runs of non-whitespace */
    const uint8_t *s = d + pos;
    ll len = e - pos, i = 0, parts = 0, a0 = 0, a1 = 0, b0 = 0, b1 = 0;
    while (i < len) {
        while (i < len && u_space(s[i])) i++;
        if (i >= len) break;
        ll st = i;
        while (i < len && !u_space(s[i])) i++;
        if (parts == 0) { a0 = st; a1 = i; }
        else if (parts == 1) { b0 = st; b1 = i; }
        parts++;
    }
    if (parts != 2) return error_resync(p, "invalid request line", d, n, pos, 0);
    st_msg *m = p->msg;
    st_str_set(&m->method, s + a0, (size_t)(a1 - a0));
    st_str_set(&m->target, s + b0, (size_t)(b1 - b0));
    st_str_set(&m->version, "HTTP/0.9", 8);
    m->head_end = p->offset + nl + 1;
    p->on_head(p->owner, m);
    finish(p);
    return nl + 1;
}

/* A Content-Length value (_framing): its length, or -1 when Python raises ValueError. */
static ll parse_clen(const uint8_t *s, size_t n) {
    const uint8_t *v = s;
    size_t vn = n;
    size_t i;
    for (i = 0; i < n && is_digit(s[i]); i++) {}
    if (n == 0 || i < n) {
        /* values = {v.strip() for v in clen.split(",")}: one value, ASCII digits */
        int have = 0;
        size_t a = 0;
        for (;;) {
            const uint8_t *c = memchr(s + a, ',', n - a);
            size_t b = c ? (size_t)(c - s) : n;
            size_t x = a, y = b;
            while (x < y && u_space(s[x])) x++;
            while (y > x && u_space(s[y - 1])) y--;
            if (!have) {
                v = s + x;
                vn = y - x;
                have = 1;
            } else if (y - x != vn || memcmp(s + x, v, vn) != 0) {
                return -1;
            }
            if (!c) break;
            a = b + 1;
        }
        if (vn == 0) return -1;
        for (i = 0; i < vn; i++)
            if (!is_digit(v[i])) return -1;
    }
    ll r = 0;
    for (i = 0; i < vn; i++) {
        if (r > (BIG - 9) / 10) return BIG;
        r = r * 10 + (v[i] - '0');
    }
    return r;
}

/* te.lower().replace(" ", "").split(",")[-1] == "chunked", given the last Transfer-Encoding
 * value (the joined string's last comma-separated part lies within it). */
static int te_chunked(const uint8_t *s, size_t n) {
    const uint8_t *c = memrchr(s, ',', n);
    size_t a = c ? (size_t)(c - s) + 1 : 0;
    static const char want[] = "chunked";
    size_t k = 0;
    for (size_t i = a; i < n; i++) {
        if (s[i] == ' ') continue;
        if (k >= 7 || (s[i] | 0x20) != (uint8_t)want[k]) return 0;
        k++;
    }
    return k == 7;
}

static void kill_(st_parser *p) {
    p->state = DEAD;
    p->buf.len = 0;
}

static ll framing(st_parser *p, st_msg *m, int has_cl, const uint8_t *cl, size_t cln, int has_te,
                  const uint8_t *te, size_t ten, const char *method, ll pos) {
    if (p->is_request && !has_cl && !has_te) {
        finish(p); /* the common GET: no body */
        return pos;
    }
    int st = m->status;
    if (!p->is_request) {
        if (st != -1 && 100 <= st && st < 200 && !(m->flags & STF(INTERIM_WITH_BODY))) {
            if (st == 101) m->flags |= STF(UPGRADE);
            finish(p);
            if (st == 101) kill_(p);
            return pos;
        }
        if ((method && strcmp(method, "HEAD") == 0) || st == 204 || st == 304) {
            finish(p);
            return pos;
        }
        if (method && strcmp(method, "CONNECT") == 0 && st != -1 && 200 <= st && st < 300) {
            m->flags |= STF(UPGRADE);
            finish(p);
            kill_(p);
            return pos;
        }
    }
    if (has_te && te_chunked(te, ten)) {
        p->state = CHUNK_SIZE;
        return pos;
    }
    if (has_cl) {
        ll length = parse_clen(cl, cln);
        if (length < 0) m->flags |= STF(BAD_CONTENT_LENGTH);
        if (length == 0) {
            finish(p);
            return pos;
        }
        if (length > 0) {
            p->state = BODY_LEN;
            p->remaining = length;
            return pos;
        }
    }
    if (p->is_request) {
        finish(p); /* a request without framing headers has no body */
        return pos;
    }
    p->state = BODY_CLOSE; /* the body runs until the connection closes */
    return pos;
}

/* The value _CONTENT_LENGTH / _TRANSFER_ENCODING capture from the rest of a header line
 * after the colon: `[ \t]*([^\r\n]*?)[ \t]*(?=\r?\n)`. Returns 0 when the regex does not match
 * (a CR inside the value). */
static int header_value(const uint8_t *s, size_t n, const uint8_t **v, size_t *vn) {
    if (n && s[n - 1] == '\r') n--;
    if (memchr(s, '\r', n)) return 0;
    size_t a = 0;
    while (a < n && (s[a] == ' ' || s[a] == '\t')) a++;
    while (n > a && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    *v = s + a;
    *vn = n - a;
    return 1;
}

static int lower_eq(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
    if (an != bn) return 0;
    for (size_t i = 0; i < an; i++)
        if (a[i] != b[i] && lower1(a[i]) != lower1(b[i])) return 0;
    return 1;
}

/* _parse_head: h = data[pos:end] (the head, without its terminating blank line) */
static ll parse_head(st_parser *p, const uint8_t *d, ll n, ll pos, ll end, ll body_at) {
    st_msg *m = p->msg;
    const uint8_t *h = d + pos;
    size_t hn = (size_t)(end - pos);
    const uint8_t *nlp = memchr(h, '\n', hn);
    size_t sol = nlp ? (size_t)(nlp - h) : hn;
    size_t fl = sol;
    while (fl && h[fl - 1] == '\r') fl--;
    if (p->is_request) {
        const uint8_t *sp1 = memchr(h, ' ', fl);
        const uint8_t *sp2 = sp1 ? memrchr(h, ' ', fl) : NULL;
        if (!sp1 || sp2 == sp1) return error_resync(p, "invalid request line", d, n, body_at, 1);
        /* more than three parts: spaces inside the target are kept */
        st_str_set(&m->method, h, (size_t)(sp1 - h));
        st_str_set(&m->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
        st_str_set(&m->version, sp2 + 1, (size_t)(h + fl - sp2 - 1));
        if (m->version.n < 5 || memcmp(m->version.p, "HTTP/", 5) != 0)
            return error_resync(p, "invalid request line", d, n, body_at, 1);
    } else {
        const uint8_t *sp1 = memchr(h, ' ', fl);
        if (!sp1) return error_resync(p, "invalid status line", d, n, body_at, 1);
        const uint8_t *code = sp1 + 1;
        size_t rest = (size_t)(h + fl - code);
        const uint8_t *sp2 = memchr(code, ' ', rest);
        size_t cn = sp2 ? (size_t)(sp2 - code) : rest;
        if (!is_status(code, cn)) return error_resync(p, "invalid status line", d, n, body_at, 1);
        st_str_set(&m->version, h, (size_t)(sp1 - h));
        m->status = status_value(code);
        if (sp2)
            st_str_set(&m->reason, sp2 + 1, (size_t)(h + fl - sp2 - 1));
        else
            st_str_set(&m->reason, "", 0);
    }
    p->dropped_reason = NULL; /* a good head follows: the earlier junk was not a request */

    /* One walk over the header lines of head + "\n" (the lines after each "\n" at or after
     * sol) does _BAD_LINE.search, _CONTENT_LENGTH.findall and _TRANSFER_ENCODING.findall. */
    int bad = 0, ncl = 0, conflict = 0, nte = 0;
    const uint8_t *cl = NULL, *te = NULL;
    size_t cln = 0, ten = 0, te_total = 0;
    size_t a = sol;
    while (a < hn) {
        size_t ls = a + 1;
        const uint8_t *q = ls < hn ? memchr(h + ls, '\n', hn - ls) : NULL;
        size_t b = q ? (size_t)(q - h) : hn;
        const uint8_t *line = h + ls;
        size_t ln = b - ls;
        if (!bad && (ln == 0 || (line[0] != ' ' && line[0] != '\t')) && !memchr(line, ':', ln)) bad = 1;
        if (ln >= 15 && (line[0] | 0x20) == 'c' && lprefix(line, ln, "content-length:", 15)) {
            const uint8_t *v;
            size_t vn;
            if (header_value(line + 15, ln - 15, &v, &vn)) {
                if (!ncl) {
                    cl = v;
                    cln = vn;
                } else if (!conflict && !lower_eq(cl, cln, v, vn)) {
                    conflict = 1;
                }
                ncl++;
            }
        } else if (ln >= 18 && (line[0] | 0x20) == 't' && lprefix(line, ln, "transfer-encoding:", 18)) {
            const uint8_t *v;
            size_t vn;
            if (header_value(line + 18, ln - 18, &v, &vn)) {
                te = v;
                ten = vn;
                te_total += vn + (nte ? 2 : 0);
                nte++;
            }
        }
        a = b;
    }
    if (bad) m->flags |= STF(BAD_HEADER);
    if (conflict) m->flags |= STF(CONFLICTING_CONTENT_LENGTH);
    m->head_end = p->offset + body_at;
    m->t_end = p->ts;
    int st = m->status;
    if (st != -1 && 100 <= st && st < 200 && st != 101) {
        int body_framed = nte && te_total > 0; /* te truthy */
        if (!body_framed && ncl) {
            /* (clen or "0").strip() != "0" */
            size_t x = 0, y = cln;
            while (x < y && u_space(cl[x])) x++;
            while (y > x && u_space(cl[y - 1])) y--;
            body_framed = cln > 0 && !(y - x == 1 && cl[x] == '0');
        }
        if (body_framed) m->flags |= STF(INTERIM_WITH_BODY); /* framed like a final answer */
    }
    if (nte && ncl) m->flags |= STF(TE_AND_CL); /* both framings: a request-smuggling sign */
    const char *method = p->on_head(p->owner, m);
    return framing(p, m, ncl > 0, cl, cln, nte > 0, te, ten, method, body_at);
}

/* _head */
static ll head(st_parser *p, const uint8_t *d, ll n, ll pos) {
    if (p->has_headless) {
        if (n - pos < 5 && memcmp(d + pos, "HTTP/", (size_t)(n - pos)) == 0) return keep(p, d, n, pos);
        if (n - pos < 5 || memcmp(d + pos, "HTTP/", 5) != 0) {
            start_headless(p);
            return pos;
        }
        p->has_headless = 0;
    }
    if (p->state == IDLE) {
        uint8_t c = d[pos];
        if (c == '\r' || c == '\n') {
            while (pos < n && (d[pos] == '\r' || d[pos] == '\n')) pos++; /* CRLFs between messages */
            if (pos == n) return pos;
            c = d[pos];
        }
        /* A cheap first-byte test: the start line is validated when the head is complete. */
        int letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        int status_prefix = n - pos >= 5 ? memcmp(d + pos, "HTTP/", 5) == 0
                                         : memcmp(d + pos, "HTTP/", (size_t)(n - pos)) == 0;
        if (!letter || (!p->is_request && !status_prefix))
            return error_resync(p, "not an HTTP message start", d, n, pos, 0);
        p->state = HEAD;
        st_msg *m = p->msg = st_msg_new(p->is_request, p->ts, p->ack);
        if (p->pending_flags) {
            m->flags |= p->pending_flags;
            p->pending_flags = 0;
        }
    }
    /* Where the head ends. The Python searches three times:
     *   A = find("\r\n\r\n"), B = find("\n\n"), C = find("\n\r\n"), each from pos;
     *   with A: end = B if B < A else A; then C if C + 3 <= end  (body after the match)
     *   without A: B if found, else C if found, else the head is not complete.
     * One walk over the newlines finds the first A or B, and the first C before it. */
    ll end = -1, body_at = -1, a = -1, b = -1, c = -1;
    for (ll i = pos; i < n;) {
        const uint8_t *q = memchr(d + i, '\n', (size_t)(n - i));
        if (!q) break;
        i = (ll)(q - d);
        if (i + 1 < n && d[i + 1] == '\n') {
            b = i;
            break;
        }
        if (i + 2 < n && d[i + 1] == '\r' && d[i + 2] == '\n') {
            if (c < 0) c = i;
            if (i - 1 >= pos && d[i - 1] == '\r') {
                a = i - 1;
                break;
            }
        }
        i++;
    }
    if (a >= 0) {
        end = a;
        body_at = a + 4;
        if (c >= 0 && c + 3 <= end) {
            end = c;
            body_at = c + 3;
        }
    } else if (b >= 0) {
        end = b;
        body_at = b + 2;
        if (c >= 0 && c + 3 <= b && find_crlfcrlf(d, n, b) >= 0) { /* an A after B: C still wins */
            end = c;
            body_at = c + 3;
        }
    } else if (c >= 0) {
        end = c;
        body_at = c + 3;
    } else {
        if (p->is_request) {
            ll nl = findc(d, n, pos, n, '\n');
            if (nl >= 0 && find_http(d, n, pos, nl) < 0) return http09(p, d, n, pos, nl);
        }
        if (n - pos > MAX_HEAD) return error_resync(p, "head larger than 64 KiB", d, n, pos, 0);
        return keep(p, d, n, pos);
    }
    ll sol = findc(d, n, pos, end + 1, '\n');
    if (p->is_request && find_http(d, n, pos, sol >= 0 ? sol : end) < 0) {
        int blank = 1; /* not data[sol + 1 : end].strip() */
        if (sol >= 0 && sol + 1 < end)
            for (ll i = sol + 1; i < end; i++)
                if (!a_space(d[i])) { blank = 0; break; }
        if (sol < 0 || sol + 1 >= end || blank) return http09(p, d, n, pos, sol >= 0 ? sol : end);
        return error_resync(p, "request line without HTTP version", d, n, pos, 0);
    }
    return parse_head(p, d, n, pos, end, body_at);
}

/* _chunk_line */
static ll chunk_line(st_parser *p, const uint8_t *d, ll n, ll pos) {
    ll nl = findc(d, n, pos, n, '\n');
    if (nl < 0) {
        if (n - pos > 4096) return error_resync(p, "chunk size line too long", d, n, pos, 0);
        return keep(p, d, n, pos);
    }
    ll e = nl;
    while (e > pos && d[e - 1] == '\r') e--; /* rstrip(b"\r") */
    st_msg *m = p->msg;
    int st = p->state;
    if (st == CHUNK_CRLF) {
        if (e > pos) {
            m->flags |= STF(BAD_CHUNK);
            return error_resync(p, "chunk data not followed by CRLF", d, n, pos, 0);
        }
        p->state = CHUNK_SIZE;
        return nl + 1;
    }
    if (st == TRAILER) {
        if (e == pos)
            finish(p);
        else
            m->flags |= STF(TRAILERS);
        return nl + 1;
    }
    /* size = line.split(b";", 1)[0].strip() */
    ll a = pos, b = e;
    const uint8_t *semi = memchr(d + pos, ';', (size_t)(e - pos));
    if (semi) b = (ll)(semi - d);
    while (a < b && a_space(d[a])) a++;
    while (b > a && a_space(d[b - 1])) b--;
    int ok = a < b;
    ll v = 0;
    for (ll i = a; ok && i < b; i++) {
        uint8_t c = d[i];
        int x;
        if (c >= '0' && c <= '9') x = c - '0';
        else if (c >= 'a' && c <= 'f') x = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') x = c - 'A' + 10;
        else { ok = 0; break; }
        v = v > (BIG - 15) / 16 ? BIG : v * 16 + x;
    }
    if (!ok) {
        m->flags |= STF(BAD_CHUNK);
        return error_resync(p, "invalid chunk size", d, n, pos, 0);
    }
    if (v == 0) {
        p->state = TRAILER;
    } else {
        p->state = CHUNK_DATA;
        p->remaining = v;
    }
    return nl + 1;
}

void st_parser_feed(st_parser *p, const uint8_t *data, size_t len, double ts, long long ack) {
    p->ts = ts;
    p->ack = ack;
    if (p->state == DEAD) {
        p->offset += (ll)len;
        return;
    }
    const uint8_t *d = data;
    ll n = (ll)len;
    if (p->buf.len) { /* p->offset already points at the kept bytes */
        if (p->state == RESYNC && rx_match0(p, data, n)) {
            /* Messages tend to start at a segment boundary: drop the junk before it. */
            p->skipped += (ll)p->buf.len;
            p->offset += (ll)p->buf.len;
            p->buf.len = 0;
        } else {
            st_buf t = p->work; /* data = buf + data, in the scratch buffer */
            p->work = p->buf;
            p->buf = t;
            p->buf.len = 0;
            st_buf_put(&p->work, data, len);
            d = (const uint8_t *)p->work.data;
            n = (ll)p->work.len;
        }
    }
    ll pos = 0;
    while (pos < n) {
        switch (p->state) {
        case BODY_LEN: {
            ll take = p->remaining < n - pos ? p->remaining : n - pos;
            body(p, take);
            pos += take;
            p->remaining -= take;
            if (!p->remaining) finish(p);
            break;
        }
        case IDLE:
        case HEAD:
            pos = head(p, d, n, pos);
            if (pos < 0) return;
            break;
        case CHUNK_DATA: {
            ll take = p->remaining < n - pos ? p->remaining : n - pos;
            body(p, take);
            pos += take;
            p->remaining -= take;
            if (!p->remaining) p->state = CHUNK_CRLF;
            break;
        }
        case CHUNK_SIZE:
        case CHUNK_CRLF:
        case TRAILER:
            pos = chunk_line(p, d, n, pos);
            if (pos < 0) return;
            break;
        case BODY_CLOSE:
            body(p, n - pos);
            pos = n;
            break;
        case RESYNC:
            pos = resync(p, d, n, pos);
            if (pos < 0) return;
            break;
        default: /* DEAD */
            p->offset += n;
            return;
        }
    }
    p->offset += n;
}

static uint32_t cause_bit(const char *cause) {
    if (strcmp(cause, "gap") == 0) return STF(GAP);
    if (strcmp(cause, "snaplen") == 0) return STF(SNAPLEN);
    int b = st_flag_bit(cause);
    return b < 0 ? 0 : 1u << b;
}

/* _salvage_start_line: a head cut short keeps its start line if that much arrived. */
static void salvage(st_parser *p, st_msg *m, const char *why) {
    const uint8_t *s = (const uint8_t *)p->buf.data;
    size_t n = p->buf.len;
    const uint8_t *nl = n ? memchr(s, '\n', n) : NULL;
    int nparts = 0;
    const uint8_t *p0 = s, *p1 = NULL, *p2 = NULL;
    size_t n0 = 0, n1 = 0, n2 = 0;
    if (nl) { /* partial[:nl].rstrip(b"\r").split(" ", 2) */
        size_t e = (size_t)(nl - s);
        while (e && s[e - 1] == '\r') e--;
        const uint8_t *sp1 = memchr(s, ' ', e);
        if (!sp1) {
            nparts = 1;
        } else {
            n0 = (size_t)(sp1 - s);
            p1 = sp1 + 1;
            size_t rest = (size_t)(s + e - p1);
            const uint8_t *sp2 = memchr(p1, ' ', rest);
            if (!sp2) {
                nparts = 2;
                n1 = rest;
            } else {
                nparts = 3;
                n1 = (size_t)(sp2 - p1);
                p2 = sp2 + 1;
                n2 = (size_t)(s + e - p2);
            }
        }
    }
    if (nparts >= 2 && p->is_request) {
        st_str_set(&m->method, p0, n0);
        st_str_set(&m->target, p1, n1);
        if (nparts > 2)
            st_str_set(&m->version, p2, n2);
        else
            st_str_clear(&m->version);
    } else if (nparts >= 2 && is_status(p1, n1)) {
        st_str_set(&m->version, p0, n0);
        m->status = status_value(p1);
        if (nparts > 2)
            st_str_set(&m->reason, p2, n2);
        else
            st_str_set(&m->reason, "", 0);
    } else {
        st_str_set(&m->error, why, strlen(why));
    }
    p->on_head(p->owner, m);
}

int st_parser_gap(st_parser *p, unsigned long long nbytes, double ts, const char *cause) {
    p->ts = ts;
    int st = p->state;
    st_msg *m = p->msg;
    ll nb = nbytes > (unsigned long long)BIG ? BIG : (ll)nbytes;
    p->offset += (ll)p->buf.len + nb;
    if (st == DEAD) return 0;
    uint32_t cf = cause_bit(cause);
    if (m && (st == BODY_LEN || st == CHUNK_DATA) && nb <= p->remaining && !p->buf.len) {
        /* The hole is inside a body of known length: the framing survives it. */
        m->flags |= cf;
        m->body_len += nb;
        p->remaining -= nb;
        if (!p->remaining) {
            if (st == BODY_LEN)
                finish(p);
            else
                p->state = CHUNK_CRLF;
        }
        return 0;
    }
    if (m && st == BODY_CLOSE) {
        m->flags |= cf;
        m->body_len += nb;
        return 0;
    }
    if (m) {
        if (st == HEAD && m->head_end < 0) salvage(p, m, "head cut by a gap");
        m->flags |= cf | STF(INCOMPLETE);
        p->skipped += (ll)p->buf.len;
        p->buf.len = 0;
        finish(p);
    } else {
        p->skipped += (ll)p->buf.len;
        p->buf.len = 0;
    }
    p->pending_flags |= STF(AFTER_GAP);
    p->state = RESYNC;
    return 1;
}

void st_parser_eof(st_parser *p, double ts) {
    p->ts = ts;
    st_msg *m = p->msg;
    if (p->state == BODY_CLOSE && m) {
        finish(p);
    } else if (m) {
        if (p->state == HEAD && m->head_end < 0) salvage(p, m, "head cut by the end of the stream");
        m->flags |= STF(INCOMPLETE);
        finish(p);
    } else if (p->buf.len && (p->state == IDLE || p->state == HEAD)) {
        const uint8_t *s = (const uint8_t *)p->buf.data;
        for (size_t i = 0; i < p->buf.len; i++)
            if (s[i] != '\r' && s[i] != '\n') {
                error(p, "head not terminated at end of stream", NULL);
                break;
            }
    }
    p->buf.len = 0;
    p->state = DEAD;
}

void st_parser_kill(st_parser *p) { kill_(p); }

void st_parser_detach(st_parser *p) {
    if (p->msg) st_msg_decref(p->msg);
    p->msg = NULL;
}

void st_parser_resync(st_parser *p) { p->state = RESYNC; }

void st_parser_expect_headless(st_parser *p, double ts) {
    if ((p->state == IDLE || p->state == RESYNC) && !p->buf.len) {
        p->state = IDLE;
        p->has_headless = 1;
        p->headless_ts = ts;
    }
}
