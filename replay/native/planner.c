/* replay._sender.Planner: replay's planning (replay/plan.py, request.py, sampling.py,
 * authority.py) over a recording's Arrow columns, for the native send loop.
 *
 * Why: with the send loop in C, deciding and building each request in Python (a Captured
 * object per row, the checks, the header edits, a Job) cost more CPU than sending it, and
 * on a machine whose other cores run the target that CPU is the replay's rate. Here a batch
 * of a recording's rows becomes a batch of send-ready jobs without a Python object per row,
 * and without the GIL.
 *
 * The Python modules stay the specification (tests/replay/test_planner.py holds the two to
 * the same decisions and the same bytes). A batch this code does not handle the way Python
 * would, to the byte, is handed back (plan() returns None) and Python plans it:
 *   - a character beyond U+00FF, or bad UTF-8, in a request line or header (Python encodes
 *     the head as Latin-1 and would fail on it, or not, depending on the edits);
 *   - a missing id, or (when the primary is checked) a missing or non-ASCII server.
 * Path patterns (Python regular expressions) are decided in Python and passed as a mask;
 * resumed runs (ids already sent) are planned in Python. A batch holding a job captured at a
 * target's own address (the primary, without --allow-primary) gives no jobs at all: the run
 * is refused, and nothing of that batch is sent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <math.h>

#include "job.h"

/* ---- BLAKE2b (RFC 7693), keyed, for sampling.Sampler.position ---------------------------- */

typedef struct {
    uint8_t b[128];
    uint64_t h[8];
    uint64_t t[2];
    size_t c;
    size_t outlen;
} b2b_t;

static const uint64_t b2b_iv[8] = {
    0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
    0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL, 0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL};

static const uint8_t b2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

#define ROTR64(x, y) (((x) >> (y)) ^ ((x) << (64 - (y))))
#define B2B_G(a, b, c, d, x, y)          \
    do {                                 \
        v[a] = v[a] + v[b] + x;          \
        v[d] = ROTR64(v[d] ^ v[a], 32);  \
        v[c] = v[c] + v[d];              \
        v[b] = ROTR64(v[b] ^ v[c], 24);  \
        v[a] = v[a] + v[b] + y;          \
        v[d] = ROTR64(v[d] ^ v[a], 16);  \
        v[c] = v[c] + v[d];              \
        v[b] = ROTR64(v[b] ^ v[c], 63);  \
    } while (0)

static uint64_t le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static void b2b_compress(b2b_t *ctx, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) { v[i] = ctx->h[i]; v[i + 8] = b2b_iv[i]; }
    v[12] ^= ctx->t[0];
    v[13] ^= ctx->t[1];
    if (last) v[14] = ~v[14];
    for (int i = 0; i < 16; i++) m[i] = le64(&ctx->b[8 * i]);
    for (int i = 0; i < 12; i++) {
        const uint8_t *s = b2b_sigma[i];
        B2B_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        B2B_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        B2B_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        B2B_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        B2B_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        B2B_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        B2B_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        B2B_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) ctx->h[i] ^= v[i] ^ v[i + 8];
}

static void b2b_update(b2b_t *ctx, const uint8_t *in, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (ctx->c == 128) {
            ctx->t[0] += ctx->c;
            if (ctx->t[0] < ctx->c) ctx->t[1]++;
            b2b_compress(ctx, 0);
            ctx->c = 0;
        }
        ctx->b[ctx->c++] = in[i];
    }
}

static void b2b_init(b2b_t *ctx, size_t outlen, const uint8_t *key, size_t keylen) {
    for (int i = 0; i < 8; i++) ctx->h[i] = b2b_iv[i];
    ctx->h[0] ^= 0x01010000ULL ^ ((uint64_t)keylen << 8) ^ (uint64_t)outlen;
    ctx->t[0] = ctx->t[1] = 0;
    ctx->c = 0;
    ctx->outlen = outlen;
    memset(ctx->b, 0, sizeof ctx->b);
    if (keylen > 0) {
        b2b_update(ctx, key, keylen);
        ctx->c = 128;
    }
}

/* The first 8 bytes of the digest, read big-endian, as sampling.py's int.from_bytes. */
static uint64_t b2b_final64(b2b_t *ctx) {
    ctx->t[0] += ctx->c;
    if (ctx->t[0] < ctx->c) ctx->t[1]++;
    while (ctx->c < 128) ctx->b[ctx->c++] = 0;
    b2b_compress(ctx, 1);
    uint64_t r = 0;
    for (size_t i = 0; i < 8; i++) r = (r << 8) | ((ctx->h[i >> 3] >> (8 * (i & 7))) & 0xFF);
    return r;
}

/* ---- text: Latin-1 views of Arrow's UTF-8 ----------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n;
} str_t;

/* str.lower() on the Latin-1 range: A-Z and À-Þ but ×. */
static uint8_t lower1[256];

static void init_lower(void) {
    for (int c = 0; c < 256; c++) lower1[c] = (uint8_t)c;
    for (int c = 'A'; c <= 'Z'; c++) lower1[c] = (uint8_t)(c + 32);
    for (int c = 0xC0; c <= 0xDE; c++)
        if (c != 0xD7) lower1[c] = (uint8_t)(c + 32);
}

/* name.lower() == low (low already lower-case Latin-1) */
static int ieq(str_t name, const uint8_t *low, size_t n) {
    if (name.n != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower1[name.p[i]] != low[i]) return 0;
    return 1;
}

#define IEQ(s, lit) ieq((s), (const uint8_t *)(lit), sizeof(lit) - 1)

static int eq(str_t s, const char *lit, size_t n) { return s.n == n && memcmp(s.p, lit, n) == 0; }

#define EQ(s, lit) eq((s), (lit), sizeof(lit) - 1)

/* lit (lower-case ASCII) in hay.lower() */
static int icontains(str_t hay, const char *lit, size_t m) {
    if (m > hay.n) return 0;
    for (size_t i = 0; i + m <= hay.n; i++) {
        size_t k = 0;
        while (k < m && lower1[hay.p[i + k]] == (uint8_t)lit[k]) k++;
        if (k == m) return 1;
    }
    return 0;
}

/* UTF-8 to Latin-1 into out (room for n bytes): its length, or -1 (beyond U+00FF, or bad). */
static ssize_t to_latin1(const uint8_t *s, size_t n, uint8_t *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c < 0x80) out[o++] = c;
        else if ((c == 0xC2 || c == 0xC3) && i + 1 < n && (s[i + 1] & 0xC0) == 0x80) {
            out[o++] = (uint8_t)(((c & 0x1F) << 6) | (s[i + 1] & 0x3F));
            i++;
        } else return -1;
    }
    return (ssize_t)o;
}

static int ascii(const uint8_t *p, size_t n) {
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc |= p[i];
    return acc < 0x80;
}

/* ---- growable byte buffer ------------------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes_t;

/* room for n more bytes */
static int reserve(bytes_t *b, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) return -1;
        b->p = q;
        b->cap = cap;
    }
    return 0;
}

static int put(bytes_t *b, const void *p, size_t n) {
    if (reserve(b, n) < 0) return -1;
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)

static int put_str(bytes_t *b, str_t s) { return put(b, s.p, s.n); }

static int put_len(bytes_t *b, size_t n) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%zu", n);
    return put(b, tmp, (size_t)k);
}

/* ---- Arrow columns, as replay/native.py's plan_columns hands them --------------------------- */

typedef struct {
    Py_buffer valid, offsets, data;
    int has_valid, has_offsets, has_data;
    int64_t offset, length;
} col_t;

static void col_release(col_t *c) {
    if (c->has_valid) PyBuffer_Release(&c->valid);
    if (c->has_offsets) PyBuffer_Release(&c->offsets);
    if (c->has_data) PyBuffer_Release(&c->data);
    c->has_valid = c->has_offsets = c->has_data = 0;
}

static int get_buf(PyObject *o, Py_buffer *b, int *has) {
    if (o == Py_None) return 0;
    if (PyObject_GetBuffer(o, b, PyBUF_SIMPLE) < 0) return -1;
    *has = 1;
    return 0;
}

/* (validity | None, offsets | None, data | None, offset, length) */
static int col_parse(PyObject *spec, col_t *c) {
    PyObject *v, *o, *d;
    long long off, len;
    memset(c, 0, sizeof *c);
    if (!PyArg_ParseTuple(spec, "OOOLL", &v, &o, &d, &off, &len)) return -1;
    if (off < 0 || len < 0 || off > INT32_MAX || len > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "a column's offset or length is out of range");
        return -1;
    }
    c->offset = off;
    c->length = len;
    if (get_buf(v, &c->valid, &c->has_valid) < 0 || get_buf(o, &c->offsets, &c->has_offsets) < 0 ||
        get_buf(d, &c->data, &c->has_data) < 0)
        return -1;
    if ((c->has_valid && c->valid.len * 8 < off + len) ||
        (c->has_offsets && c->offsets.len < (Py_ssize_t)(4 * (off + len + 1)))) {
        PyErr_SetString(PyExc_ValueError, "a column's buffers are shorter than its rows");
        return -1;
    }
    if (c->has_offsets && ((uintptr_t)c->offsets.buf & 3)) { /* (Arrow's buffers are 64-byte aligned) */
        PyErr_SetString(PyExc_ValueError, "a column's offsets are not aligned");
        return -1;
    }
    return 0;
}

static int col_valid(const col_t *c, int64_t i) {
    if (!c->has_valid) return 1;
    int64_t k = c->offset + i;
    return (((const uint8_t *)c->valid.buf)[k >> 3] >> (k & 7)) & 1;
}

/* Offsets of row i: [*a, *b). 0 when the column has no offsets (no rows). */
static void col_span(const col_t *c, int64_t i, int32_t *a, int32_t *b) {
    if (!c->has_offsets) { *a = *b = 0; return; }
    const int32_t *o = (const int32_t *)c->offsets.buf;
    *a = o[c->offset + i];
    *b = o[c->offset + i + 1];
}

/* Every offset used lies within [0, limit] (the data's bytes, or a list's child's rows) and
 * none decreases. */
static int col_bounds_ok(const col_t *c, int64_t limit) {
    if (!c->has_offsets || c->length == 0) return 1;
    const int32_t *o = (const int32_t *)c->offsets.buf;
    int64_t dl = limit;
    for (int64_t i = 0; i < c->length; i++) {
        int32_t a = o[c->offset + i], b = o[c->offset + i + 1];
        if (a < 0 || b < a || b > dl) return 0;
    }
    return 1;
}

static str_t col_str(const col_t *c, int64_t i) {
    int32_t a, b;
    col_span(c, i, &a, &b);
    str_t s = {c->has_data ? (const uint8_t *)c->data.buf + a : (const uint8_t *)"", (size_t)(b - a)};
    return s;
}

/* ---- the Planner type ------------------------------------------------------------------ */

enum { MODE_SUFFIX, MODE_KEEP, MODE_LITERAL };
enum { R_NO_REQUEST = 1, R_INCOMPLETE, R_UPGRADE, R_HTTP09, R_METHOD, R_PATH, R_SAMPLED_OUT, R_WRITE, R_DONE, NREASONS };

typedef struct {
    str_t lk, k, v;
} set_t;

typedef struct {
    PyObject_HEAD
    int initialized;
    int mode;
    bytes_t strings;             /* every configured text lives here (the str_t point into it) */
    str_t literal, suffix;
    set_t *sets; size_t nsets;
    str_t *drop; size_t ndrop;
    int drop_host;
    str_t *methods; size_t nmethods;
    double limit;
    b2b_t keyed;                 /* the hash state after the seed's key block */
    int has_header; str_t header;
    int allow_writes;
    int check_primary;
    str_t *phost; long *pport; size_t nprimary;
} Planner;

typedef struct {
    PyObject_HEAD
    job_t **jobs; size_t njobs;
    uint8_t *codes; size_t nrows;
    long long skips[NREASONS];
    PyObject *writes;            /* {method: count} */
    PyObject *refused;           /* (id, server) or None */
} Planned;

static PyTypeObject PlannedType;

/* Python strings to Latin-1 bytes kept in p->strings: stored as offsets first (the buffer
 * moves while it grows), turned into pointers by fix_strings. */
static int keep_latin1(Planner *p, PyObject *o, str_t *s) {
    PyObject *b = PyUnicode_AsLatin1String(o);
    if (!b) return -1;
    s->p = (const uint8_t *)(uintptr_t)p->strings.n;
    s->n = (size_t)PyBytes_GET_SIZE(b);
    int r = put(&p->strings, PyBytes_AS_STRING(b), s->n);
    Py_DECREF(b);
    if (r < 0) { PyErr_NoMemory(); return -1; }
    return 0;
}

static int keep_utf8(Planner *p, PyObject *o, str_t *s) {
    Py_ssize_t n;
    const char *c = PyUnicode_AsUTF8AndSize(o, &n);
    if (!c) return -1;
    s->p = (const uint8_t *)(uintptr_t)p->strings.n;
    s->n = (size_t)n;
    if (put(&p->strings, c, (size_t)n) < 0) { PyErr_NoMemory(); return -1; }
    return 0;
}

static void fix(Planner *p, str_t *s) { s->p = p->strings.p + (uintptr_t)s->p; }

/* Planner(mode, literal, suffix, sets, drop, methods, limit, seed_key, header, allow_writes,
 *         primary)
 *   mode: "suffix" | "keep" | "literal"; sets: [(lower name, name, value)] in request.build's
 *   dict order; drop: lower-case names; methods: --method (upper-case); limit: percent / 100;
 *   seed_key: Sampler._key; header: the lower-case sampling header or None; primary: None,
 *   or the [(host, port)] a job's server must not be. Texts that are not Latin-1 raise
 *   UnicodeEncodeError: Python plans such a run. */
static int Planner_init(Planner *p, PyObject *args, PyObject *kw) {
    const char *mode;
    PyObject *literal, *suffix, *sets, *drop, *methods, *header, *primary;
    double limit;
    Py_buffer key;
    int allow_writes;
    if (!PyArg_ParseTuple(args, "sUUOOOdy*OpO", &mode, &literal, &suffix, &sets, &drop, &methods, &limit, &key,
                          &header, &allow_writes, &primary))
        return -1;
    int r = -1;
    PyObject *fs = NULL, *fd = NULL, *fm = NULL, *fp = NULL;
    if (p->initialized) {
        PyErr_SetString(PyExc_TypeError, "a Planner is set up once");
        goto out;
    }
    p->mode = !strcmp(mode, "suffix") ? MODE_SUFFIX : !strcmp(mode, "keep") ? MODE_KEEP
            : !strcmp(mode, "literal") ? MODE_LITERAL : -1;
    if (p->mode < 0) { PyErr_SetString(PyExc_ValueError, "mode: suffix, keep or literal"); goto out; }
    if (keep_latin1(p, literal, &p->literal) < 0 || keep_latin1(p, suffix, &p->suffix) < 0) goto out;
    fs = PySequence_Fast(sets, "sets");
    fd = PySequence_Fast(drop, "drop");
    fm = PySequence_Fast(methods, "methods");
    if (!fs || !fd || !fm) goto out;
    p->nsets = (size_t)PySequence_Fast_GET_SIZE(fs);
    p->ndrop = (size_t)PySequence_Fast_GET_SIZE(fd);
    p->nmethods = (size_t)PySequence_Fast_GET_SIZE(fm);
    p->sets = calloc(p->nsets + 1, sizeof *p->sets);
    p->drop = calloc(p->ndrop + 1, sizeof *p->drop);
    p->methods = calloc(p->nmethods + 1, sizeof *p->methods);
    if (!p->sets || !p->drop || !p->methods) { PyErr_NoMemory(); goto out; }
    for (size_t i = 0; i < p->nsets; i++) {
        PyObject *lk, *k, *v;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fs, i), "UUU", &lk, &k, &v)) goto out;
        if (keep_latin1(p, lk, &p->sets[i].lk) < 0 || keep_latin1(p, k, &p->sets[i].k) < 0 ||
            keep_latin1(p, v, &p->sets[i].v) < 0)
            goto out;
    }
    for (size_t i = 0; i < p->ndrop; i++)
        if (keep_latin1(p, PySequence_Fast_GET_ITEM(fd, i), &p->drop[i]) < 0) goto out;
    for (size_t i = 0; i < p->nmethods; i++)
        if (keep_utf8(p, PySequence_Fast_GET_ITEM(fm, i), &p->methods[i]) < 0) goto out;
    if (header != Py_None) {
        p->has_header = 1;
        if (keep_latin1(p, header, &p->header) < 0) goto out;
    }
    if (primary != Py_None) {
        fp = PySequence_Fast(primary, "primary");
        if (!fp) goto out;
        p->check_primary = 1;
        p->nprimary = (size_t)PySequence_Fast_GET_SIZE(fp);
        p->phost = calloc(p->nprimary + 1, sizeof *p->phost);
        p->pport = calloc(p->nprimary + 1, sizeof *p->pport);
        if (!p->phost || !p->pport) { PyErr_NoMemory(); goto out; }
        for (size_t i = 0; i < p->nprimary; i++) {
            PyObject *h;
            long port;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fp, i), "Ul", &h, &port)) goto out;
            if (keep_utf8(p, h, &p->phost[i]) < 0) goto out;
            p->pport[i] = port;
        }
    }
    /* every offset stored: now pointers */
    fix(p, &p->literal);
    fix(p, &p->suffix);
    for (size_t i = 0; i < p->nsets; i++) { fix(p, &p->sets[i].lk); fix(p, &p->sets[i].k); fix(p, &p->sets[i].v); }
    for (size_t i = 0; i < p->ndrop; i++) {
        fix(p, &p->drop[i]);
        if (EQ(p->drop[i], "host")) p->drop_host = 1;
    }
    for (size_t i = 0; i < p->nmethods; i++) fix(p, &p->methods[i]);
    if (p->has_header) fix(p, &p->header);
    for (size_t i = 0; i < p->nprimary; i++) fix(p, &p->phost[i]);
    p->limit = limit;
    b2b_init(&p->keyed, 8, key.buf, (size_t)key.len);
    p->allow_writes = allow_writes;
    p->initialized = 1;
    r = 0;
out:
    PyBuffer_Release(&key);
    Py_XDECREF(fs); Py_XDECREF(fd); Py_XDECREF(fm); Py_XDECREF(fp);
    return r;
}

static void Planner_dealloc(Planner *p) {
    free(p->strings.p);
    free(p->sets); free(p->drop); free(p->methods); free(p->phost); free(p->pport);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

/* ---- one batch ----------------------------------------------------------------------- */

enum { K_ID, K_SERVER, K_METHOD, K_TARGET, K_VERSION, K_HEADERS, K_NAMES, K_VALUES, K_BODY, K_FLAGS,
       K_FLAG_TEXT, NCOLS };

typedef struct {
    str_t name, value;   /* Latin-1 */
    str_t raw_value;     /* UTF-8, as recorded (the sampling key hashes it) */
} header_t;

typedef struct {
    const Planner *p;
    col_t *c;
    const uint8_t *path_ok;
    int ascii[NCOLS];
    bytes_t scratch;     /* a row's Latin-1 texts, when a column is not all ASCII */
    header_t *h; size_t nh, caph;
    bytes_t out, host;
    uint8_t *placed;
    /* results */
    job_t **jobs; size_t njobs;
    uint8_t *codes;
    long long skips[NREASONS];
    str_t *wm; long long *wc; size_t nw, capw;   /* writes by method */
    int64_t refused;     /* row, or -1 */
    int fallback;        /* 1: Python must plan this batch; -1: out of memory */
} batch_t;

static int text(batch_t *b, int k, str_t raw, str_t *out) {
    if (b->ascii[k] || raw.n == 0) { *out = raw; return 0; }
    /* (room reserved for the whole row by row_texts) */
    uint8_t *o = b->scratch.p + b->scratch.n;
    ssize_t n = to_latin1(raw.p, raw.n, o);
    if (n < 0) return -1;
    b->scratch.n += (size_t)n;
    out->p = o;
    out->n = (size_t)n;
    return 0;
}

static int flag_unusable(str_t f) {
    return EQ(f, "gap") || EQ(f, "incomplete") || EQ(f, "snaplen") || EQ(f, "body_truncated") || EQ(f, "parse_error");
}

static int port_start(str_t h) {
    ssize_t colon = -1, bracket = -1;
    for (size_t i = 0; i < h.n; i++) {
        if (h.p[i] == ':') colon = (ssize_t)i;
        else if (h.p[i] == ']') bracket = (ssize_t)i;
    }
    if (colon < 0) return -1;
    if (bracket < 0 || bracket < colon) return (int)colon;
    return -1;
}

/* HostRule.apply */
static int apply_rule(const Planner *p, str_t host, bytes_t *out) {
    if (p->mode == MODE_LITERAL) return put_str(out, p->literal);
    if (p->mode == MODE_KEEP) return put_str(out, host);
    int at = port_start(host);
    if (at < 0) return put_str(out, host) | put_str(out, p->suffix);
    return put(out, host.p, (size_t)at) | put_str(out, p->suffix) | put(out, host.p + at, host.n - (size_t)at);
}

/* request._absolute_form, written to out */
static int absolute_form(const Planner *p, str_t t, bytes_t *out) {
    static const char *schemes[2] = {"http://", "https://"};
    for (int s = 0; s < 2; s++) {
        size_t m = strlen(schemes[s]);
        if (t.n < m) continue;
        size_t k = 0;
        while (k < m && lower1[t.p[k]] == (uint8_t)schemes[s][k]) k++;
        if (k < m) continue;
        str_t rest = {t.p + m, t.n - m};
        size_t cut = rest.n;
        for (size_t i = 0; i < rest.n; i++)
            if (rest.p[i] == '/' || rest.p[i] == '?' || rest.p[i] == '#') { cut = i; break; }
        str_t host = {rest.p, cut};
        return put(out, t.p, m) | apply_rule(p, host, out) | put(out, rest.p + cut, rest.n - cut);
    }
    return put_str(out, t);
}

/* request.build: b->out holds the bytes, b->host the Host sent (*has_host). */
static int build(batch_t *b, str_t m, str_t t, str_t v, str_t body, int *has_host) {
    const Planner *p = b->p;
    bytes_t *o = &b->out, *host = &b->host;
    int err = 0;
    o->n = host->n = 0;
    *has_host = 0;
    err |= put_str(o, m) | PUTS(o, " ");
    int three = 0;
    for (size_t i = 0; i + 2 < t.n && i + 2 < 8; i++)
        if (t.p[i] == ':' && t.p[i + 1] == '/' && t.p[i + 2] == '/') { three = 1; break; }
    err |= (p->mode != MODE_KEEP && three) ? absolute_form(p, t, o) : put_str(o, t);
    err |= PUTS(o, " ") | put_str(o, v) | PUTS(o, "\r\n");
    size_t line_end = o->n;
    int framed = 0;
    memset(b->placed, 0, p->nsets + 1);
    for (size_t i = 0; i < b->nh; i++) {
        str_t k = b->h[i].name, val = b->h[i].value;
        int dropped = 0;
        for (size_t d = 0; d < p->ndrop && !dropped; d++) dropped = ieq(k, p->drop[d].p, p->drop[d].n);
        if (dropped) continue;
        ssize_t si = -1;
        for (size_t s = 0; s < p->nsets; s++)
            if (ieq(k, p->sets[s].lk.p, p->sets[s].lk.n)) { si = (ssize_t)s; break; }
        if (si >= 0) {
            if (b->placed[si]) continue;
            b->placed[si] = 1;
            const set_t *st = &p->sets[si];
            if (EQ(st->lk, "host")) { host->n = 0; err |= put_str(host, st->v); *has_host = 1; }
            err |= put_str(o, st->k) | PUTS(o, ": ") | put_str(o, st->v) | PUTS(o, "\r\n");
        } else if (IEQ(k, "host")) {
            if (*has_host) continue; /* a second Host is a smuggling sign: send one */
            host->n = 0;
            err |= apply_rule(p, val, host);
            *has_host = 1;
            err |= put_str(o, k) | PUTS(o, ": ") | put(o, host->p, host->n) | PUTS(o, "\r\n");
        } else if (IEQ(k, "content-length") || IEQ(k, "transfer-encoding")) {
            if (!framed) {
                framed = 1;
                if (IEQ(k, "transfer-encoding")) err |= PUTS(o, "Content-Length");
                else err |= put_str(o, k);
                err |= PUTS(o, ": ") | put_len(o, body.n) | PUTS(o, "\r\n");
            }
        } else {
            err |= put_str(o, k) | PUTS(o, ": ") | put_str(o, val) | PUTS(o, "\r\n");
        }
    }
    for (size_t s = 0; s < p->nsets; s++) {
        if (b->placed[s]) continue;
        const set_t *st = &p->sets[s];
        if (EQ(st->lk, "host")) { host->n = 0; err |= put_str(host, st->v); *has_host = 1; }
        err |= put_str(o, st->k) | PUTS(o, ": ") | put_str(o, st->v) | PUTS(o, "\r\n");
    }
    if (!*has_host && p->mode == MODE_LITERAL && !p->drop_host) {
        host->n = 0;
        err |= put_str(host, p->literal);
        *has_host = 1;
        size_t add = 6 + p->literal.n + 2, tail = o->n - line_end;
        err |= reserve(o, add); /* room, then the Host line goes right after the request line */
        if (!err) {
            o->n += add;
            memmove(o->p + line_end + add, o->p + line_end, tail);
            memcpy(o->p + line_end, "Host: ", 6);
            memcpy(o->p + line_end + 6, p->literal.p, p->literal.n);
            memcpy(o->p + line_end + 6 + p->literal.n, "\r\n", 2);
        }
    }
    if (body.n && !framed) err |= PUTS(o, "Content-Length: ") | put_len(o, body.n) | PUTS(o, "\r\n");
    err |= PUTS(o, "\r\n") | put_str(o, body);
    return err ? -1 : 0;
}

/* plan.asks_close, on the captured headers */
static int asks_close(batch_t *b, str_t version) {
    int close = 0, keep = 0;
    for (size_t i = 0; i < b->nh; i++) {
        if (!IEQ(b->h[i].name, "connection")) continue;
        close |= icontains(b->h[i].value, "close", 5);
        keep |= icontains(b->h[i].value, "keep-alive", 10);
    }
    return close || (EQ(version, "HTTP/1.0") && !keep);
}

/* Sampler.keep */
static int keep_sampled(batch_t *b, str_t id) {
    const Planner *p = b->p;
    if (p->limit >= 1.0) return 1;
    if (p->limit <= 0.0) return 0;
    b2b_t ctx = p->keyed;
    int found = 0;
    if (p->has_header) {
        for (size_t i = 0; i < b->nh && !found; i++) {
            if (ieq(b->h[i].name, p->header.p, p->header.n)) {
                b2b_update(&ctx, (const uint8_t *)"h:", 2);
                b2b_update(&ctx, b->h[i].raw_value.p, b->h[i].raw_value.n);
                found = 1;
            }
        }
    }
    if (!found) {
        b2b_update(&ctx, (const uint8_t *)"id:", 3);
        b2b_update(&ctx, id.p, id.n);
    }
    double position = (double)b2b_final64(&ctx) / 18446744073709551616.0;
    return position < p->limit;
}

/* runner._addr(server) in primary */
static int is_primary(const Planner *p, str_t server) {
    ssize_t colon = -1;
    for (size_t i = 0; i < server.n; i++)
        if (server.p[i] == ':') colon = (ssize_t)i;
    str_t host = colon < 0 ? (str_t){server.p, 0} : (str_t){server.p, (size_t)colon};
    str_t port = colon < 0 ? server : (str_t){server.p + colon + 1, server.n - (size_t)colon - 1};
    while (host.n && (host.p[0] == '[' || host.p[0] == ']')) { host.p++; host.n--; }
    while (host.n && (host.p[host.n - 1] == '[' || host.p[host.n - 1] == ']')) host.n--;
    long value = 0;
    int digits = port.n > 0;
    for (size_t i = 0; i < port.n && digits; i++) {
        if (port.p[i] < '0' || port.p[i] > '9') digits = 0;
        else if (value < 1000000) value = value * 10 + (port.p[i] - '0');
    }
    if (!digits) value = 0;
    for (size_t i = 0; i < p->nprimary; i++)
        if (p->pport[i] == value && p->phost[i].n == host.n && memcmp(p->phost[i].p, host.p, host.n) == 0) return 1;
    return 0;
}

static int is_safe(str_t m) { return EQ(m, "GET") || EQ(m, "HEAD") || EQ(m, "OPTIONS") || EQ(m, "TRACE"); }

static int count_write(batch_t *b, str_t m) {
    if (!m.n) m = (str_t){(const uint8_t *)"?", 1}; /* plan.count_skip: `skip.method or "?"` */
    for (size_t i = 0; i < b->nw; i++)
        if (b->wm[i].n == m.n && memcmp(b->wm[i].p, m.p, m.n) == 0) { b->wc[i]++; return 0; }
    if (b->nw == b->capw) {
        size_t cap = b->capw ? b->capw * 2 : 8;
        str_t *wm = realloc(b->wm, cap * sizeof *wm);
        if (!wm) return -1;
        b->wm = wm;
        long long *wc = realloc(b->wc, cap * sizeof *wc);
        if (!wc) return -1;
        b->wc = wc;
        b->capw = cap;
    }
    b->wm[b->nw] = m;
    b->wc[b->nw++] = 1;
    return 0;
}

static job_t *make_job(str_t id, const bytes_t *data, const bytes_t *host, int has_host, int close, int head) {
    job_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->refs = 1;
    j->id = malloc(id.n + 1);
    j->data = malloc(data->n + 1);
    j->host = has_host ? malloc(2 * host->n + 1) : NULL;
    if (!j->id || !j->data || (has_host && !j->host)) { free(j->id); free(j->data); free(j->host); free(j); return NULL; }
    memcpy(j->id, id.p, id.n);
    j->idlen = id.n;
    memcpy(j->data, data->p, data->n);
    j->dlen = data->n;
    if (has_host) { /* Latin-1 to UTF-8 */
        size_t o = 0;
        for (size_t i = 0; i < host->n; i++) {
            uint8_t c = host->p[i];
            if (c < 0x80) j->host[o++] = (char)c;
            else { j->host[o++] = (char)(0xC0 | (c >> 6)); j->host[o++] = (char)(0x80 | (c & 0x3F)); }
        }
        j->hostlen = o;
        j->has_host = 1;
    }
    j->t_due = NAN;
    j->t_at = NAN;
    j->close = close;
    j->head = head;
    return j;
}

/* One row: its code (0: a job), or -1 when Python must plan the batch. */
static int plan_row(batch_t *b, int64_t i) {
    const Planner *p = b->p;
    col_t *c = b->c;
    if (!col_valid(&c[K_ID], i)) return -1;
    str_t id = col_str(&c[K_ID], i);
    int has_m = col_valid(&c[K_METHOD], i), has_t = col_valid(&c[K_TARGET], i), has_v = col_valid(&c[K_VERSION], i);
    str_t rm = has_m ? col_str(&c[K_METHOD], i) : (str_t){NULL, 0};
    str_t rt = has_t ? col_str(&c[K_TARGET], i) : (str_t){NULL, 0};
    str_t rv = has_v ? col_str(&c[K_VERSION], i) : (str_t){NULL, 0};
    int32_t ha = 0, hb = 0; /* a null list: no headers (as runner.captured_rows) */
    if (col_valid(&c[K_HEADERS], i)) col_span(&c[K_HEADERS], i, &ha, &hb);
    /* the row's texts as Latin-1 (Python would encode them so) */
    size_t need = rm.n + rt.n + rv.n;
    for (int32_t k = ha; k < hb; k++) {
        int32_t a, z;
        col_span(&c[K_NAMES], k, &a, &z); need += (size_t)(z - a);
        col_span(&c[K_VALUES], k, &a, &z); need += (size_t)(z - a);
    }
    b->scratch.n = 0;
    if (reserve(&b->scratch, need) < 0) { b->fallback = -1; return -1; }
    if ((size_t)(hb - ha) > b->caph) {
        size_t cap = (size_t)(hb - ha) * 2;
        header_t *h = realloc(b->h, cap * sizeof *h);
        if (!h) { b->fallback = -1; return -1; }
        b->h = h;
        b->caph = cap;
    }
    b->nh = 0;
    for (int32_t k = ha; k < hb; k++) {
        if (!col_valid(&c[K_NAMES], k) || !col_valid(&c[K_VALUES], k)) return -1;
        header_t *h = &b->h[b->nh++];
        h->raw_value = col_str(&c[K_VALUES], k);
        if (text(b, K_NAMES, col_str(&c[K_NAMES], k), &h->name) < 0 || text(b, K_VALUES, h->raw_value, &h->value) < 0)
            return -1;
    }
    str_t m, t, v;
    if ((has_m && text(b, K_METHOD, rm, &m) < 0) || (has_t && text(b, K_TARGET, rt, &t) < 0) ||
        (has_v && text(b, K_VERSION, rv, &v) < 0))
        return -1;
    /* plan.Planner.admit, in its order */
    if (!has_m || !has_t || !has_v) return R_NO_REQUEST;
    if (col_valid(&c[K_FLAGS], i)) {
        int32_t fa, fz;
        col_span(&c[K_FLAGS], i, &fa, &fz);
        for (int32_t k = fa; k < fz; k++)
            if (col_valid(&c[K_FLAG_TEXT], k) && flag_unusable(col_str(&c[K_FLAG_TEXT], k))) return R_INCOMPLETE;
    }
    if (EQ(rm, "CONNECT")) return R_UPGRADE;
    for (size_t k = 0; k < b->nh; k++)
        if (IEQ(b->h[k].name, "upgrade")) return R_UPGRADE;
    if (EQ(rv, "HTTP/0.9")) return R_HTTP09;
    if (p->nmethods) {
        int in = 0;
        for (size_t k = 0; k < p->nmethods && !in; k++) in = p->methods[k].n == rm.n && !memcmp(p->methods[k].p, rm.p, rm.n);
        if (!in) return R_METHOD;
    }
    if (b->path_ok && !b->path_ok[i]) return R_PATH;
    if (!keep_sampled(b, id)) return R_SAMPLED_OUT;
    if (!is_safe(rm) && !p->allow_writes) {
        if (count_write(b, rm) < 0) { b->fallback = -1; return -1; }
        return R_WRITE;
    }
    /* admitted */
    if (p->check_primary) {
        if (!col_valid(&c[K_SERVER], i)) return -1;
        str_t server = col_str(&c[K_SERVER], i);
        if (!ascii(server.p, server.n)) return -1;
        if (b->refused < 0 && is_primary(p, server)) b->refused = i;
    }
    if (b->refused >= 0) return 0; /* nothing of this batch is sent */
    str_t body = {(const uint8_t *)"", 0};
    if (col_valid(&c[K_BODY], i)) body = col_str(&c[K_BODY], i);
    int has_host;
    if (build(b, m, t, v, body, &has_host) < 0) { b->fallback = -1; return -1; }
    job_t *j = make_job(id, &b->out, &b->host, has_host, asks_close(b, v), EQ(rm, "HEAD"));
    if (!j) { b->fallback = -1; return -1; }
    b->jobs[b->njobs++] = j;
    return 0;
}

static void batch_free(batch_t *b) {
    free(b->scratch.p); free(b->h); free(b->out.p); free(b->host.p); free(b->placed);
    free(b->wm); free(b->wc);
    if (b->jobs) {
        for (size_t i = 0; i < b->njobs; i++) job_decref(b->jobs[i]);
        free(b->jobs);
    }
    free(b->codes);
}

static int utf8_column_ascii(const col_t *c) {
    if (!c->has_offsets || c->length == 0 || !c->has_data) return 1;
    const int32_t *o = (const int32_t *)c->offsets.buf;
    int32_t a = o[c->offset], z = o[c->offset + c->length];
    return ascii((const uint8_t *)c->data.buf + a, (size_t)(z - a));
}

/* plan(columns, path_ok) -> Planned, or None: Python plans this batch.
 *   columns: the 11 column specs, in the K_* order (see replay/native.py plan_columns);
 *   path_ok: bytes (1 per row: --include-path/--exclude-path let it through) or None. */
static PyObject *Planner_plan(Planner *p, PyObject *args) {
    PyObject *cols, *mask;
    if (!PyArg_ParseTuple(args, "OO", &cols, &mask)) return NULL;
    PyObject *fc = PySequence_Fast(cols, "columns");
    if (!fc) return NULL;
    col_t c[NCOLS];
    memset(c, 0, sizeof c);
    Py_buffer pm;
    int has_pm = 0;
    PyObject *r = NULL;
    batch_t b;
    memset(&b, 0, sizeof b);
    if (PySequence_Fast_GET_SIZE(fc) != NCOLS) { PyErr_SetString(PyExc_ValueError, "11 columns"); goto out; }
    if (!p->initialized) { PyErr_SetString(PyExc_TypeError, "Planner.__init__ was not called"); goto out; }
    for (int k = 0; k < NCOLS; k++)
        if (col_parse(PySequence_Fast_GET_ITEM(fc, k), &c[k]) < 0) goto out;
    if (c[K_HEADERS].has_data || c[K_FLAGS].has_data) {
        PyErr_SetString(PyExc_ValueError, "a list column has no data buffer of its own");
        goto out;
    }
    int64_t n = c[K_ID].length;
    static const int rows_like_id[] = {K_SERVER, K_METHOD, K_TARGET, K_VERSION, K_HEADERS, K_BODY, K_FLAGS};
    for (size_t k = 0; k < sizeof rows_like_id / sizeof *rows_like_id; k++)
        if (c[rows_like_id[k]].length != n) { PyErr_SetString(PyExc_ValueError, "columns of different lengths"); goto out; }
    for (int k = 0; k < NCOLS; k++) {
        int64_t limit = k == K_HEADERS ? (c[K_NAMES].length < c[K_VALUES].length ? c[K_NAMES].length : c[K_VALUES].length)
                      : k == K_FLAGS ? c[K_FLAG_TEXT].length : (c[k].has_data ? (int64_t)c[k].data.len : 0);
        if (!col_bounds_ok(&c[k], limit)) {
            PyErr_SetString(PyExc_ValueError, "a column's offsets lie outside its data");
            goto out;
        }
    }
    if (mask != Py_None) {
        if (PyObject_GetBuffer(mask, &pm, PyBUF_SIMPLE) < 0) goto out;
        has_pm = 1;
        if (pm.len != n) { PyErr_SetString(PyExc_ValueError, "path_ok: one byte per row"); goto out; }
        b.path_ok = pm.buf;
    }
    b.p = p;
    b.c = c;
    b.refused = -1;
    for (int k = 0; k < NCOLS; k++) b.ascii[k] = utf8_column_ascii(&c[k]);
    b.jobs = calloc((size_t)n + 1, sizeof *b.jobs);
    b.codes = calloc((size_t)n + 1, 1);
    b.placed = calloc(p->nsets + 1, 1);
    if (!b.jobs || !b.codes || !b.placed) { PyErr_NoMemory(); goto out; }
    Py_BEGIN_ALLOW_THREADS
    for (int64_t i = 0; i < n; i++) {
        int code = plan_row(&b, i);
        if (code < 0) { if (!b.fallback) b.fallback = 1; break; }
        b.codes[i] = (uint8_t)code;
        if (code) b.skips[code]++;
    }
    Py_END_ALLOW_THREADS
    if (b.fallback < 0) { PyErr_NoMemory(); goto out; }
    if (b.fallback) { r = Py_None; Py_INCREF(r); goto out; }
    Planned *pl = PyObject_New(Planned, &PlannedType);
    if (!pl) goto out;
    pl->jobs = NULL; pl->njobs = 0; pl->codes = NULL; pl->nrows = (size_t)n;
    pl->writes = PyDict_New();
    pl->refused = Py_None; Py_INCREF(Py_None);
    memcpy(pl->skips, b.skips, sizeof b.skips);
    if (!pl->writes) { Py_DECREF(pl); goto out; }
    for (size_t w = 0; w < b.nw; w++) {
        PyObject *key = PyUnicode_DecodeUTF8((const char *)b.wm[w].p, (Py_ssize_t)b.wm[w].n, "surrogateescape");
        PyObject *val = PyLong_FromLongLong(b.wc[w]);
        if (!key || !val || PyDict_SetItem(pl->writes, key, val) < 0) { Py_XDECREF(key); Py_XDECREF(val); Py_DECREF(pl); goto out; }
        Py_DECREF(key); Py_DECREF(val);
    }
    if (b.refused >= 0) {
        str_t id = col_str(&c[K_ID], b.refused), server = col_str(&c[K_SERVER], b.refused);
        PyObject *t = Py_BuildValue("(s#s#)", id.p, (Py_ssize_t)id.n, server.p, (Py_ssize_t)server.n);
        if (!t) { Py_DECREF(pl); goto out; }
        Py_SETREF(pl->refused, t);
    } else {
        pl->jobs = b.jobs; pl->njobs = b.njobs;
        b.jobs = NULL; b.njobs = 0;
    }
    pl->codes = b.codes;
    b.codes = NULL;
    r = (PyObject *)pl;
out:
    batch_free(&b);
    for (int k = 0; k < NCOLS; k++) col_release(&c[k]);
    if (has_pm) PyBuffer_Release(&pm);
    Py_DECREF(fc);
    return r;
}

static PyMethodDef Planner_methods[] = {
    {"plan", (PyCFunction)Planner_plan, METH_VARARGS, "a batch of recording columns -> Planned, or None (plan it in Python)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "replay._sender.Planner",
    .tp_basicsize = sizeof(Planner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Planner_init,
    .tp_dealloc = (destructor)Planner_dealloc,
    .tp_methods = Planner_methods,
    .tp_doc = "replay.plan's decisions and request.build's bytes over Arrow columns (see planner.c).",
};

/* ---- Planned ------------------------------------------------------------------------- */

static void Planned_dealloc(Planned *pl) {
    for (size_t i = 0; i < pl->njobs; i++) job_decref(pl->jobs[i]);
    free(pl->jobs);
    free(pl->codes);
    Py_XDECREF(pl->writes);
    Py_XDECREF(pl->refused);
    PyObject_Free(pl);
}

static Py_ssize_t Planned_len(Planned *pl) { return (Py_ssize_t)pl->njobs; }

/* [(id, data, host | None, close, head)]: what the tests hold against plan.Planner.job */
static PyObject *Planned_jobs(Planned *pl, PyObject *noargs) {
    PyObject *l = PyList_New((Py_ssize_t)pl->njobs);
    for (size_t i = 0; l && i < pl->njobs; i++) {
        job_t *j = pl->jobs[i];
        PyObject *host = j->has_host ? PyUnicode_DecodeUTF8(j->host, (Py_ssize_t)j->hostlen, NULL) : (Py_INCREF(Py_None), Py_None);
        PyObject *t = host ? Py_BuildValue("(s#y#NOO)", j->id, (Py_ssize_t)j->idlen, j->data, (Py_ssize_t)j->dlen, host,
                                           j->close ? Py_True : Py_False, j->head ? Py_True : Py_False) : NULL;
        if (!t) { Py_DECREF(l); return NULL; }
        PyList_SET_ITEM(l, (Py_ssize_t)i, t);
    }
    return l;
}

static PyObject *Planned_codes(Planned *pl, PyObject *noargs) {
    return PyBytes_FromStringAndSize((const char *)pl->codes, (Py_ssize_t)pl->nrows);
}

static PyObject *Planned_skips(Planned *pl, void *closure) {
    PyObject *t = PyTuple_New(NREASONS - 1);
    for (int k = 1; t && k < NREASONS; k++) {
        PyObject *v = PyLong_FromLongLong(pl->skips[k]);
        if (!v) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, k - 1, v);
    }
    return t;
}

static PyObject *Planned_writes(Planned *pl, void *closure) { Py_INCREF(pl->writes); return pl->writes; }
static PyObject *Planned_refused(Planned *pl, void *closure) { Py_INCREF(pl->refused); return pl->refused; }
static PyObject *Planned_rows(Planned *pl, void *closure) { return PyLong_FromSize_t(pl->nrows); }

static PyMethodDef Planned_methods[] = {
    {"jobs", (PyCFunction)Planned_jobs, METH_NOARGS, "[(id, data, host, close, head)]"},
    {"codes", (PyCFunction)Planned_codes, METH_NOARGS, "a byte per row: 0 a job, else 1 + plan.SKIP_REASONS' index"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Planned_getset[] = {
    {"skips", (getter)Planned_skips, NULL, "rows skipped, per plan.SKIP_REASONS", NULL},
    {"writes", (getter)Planned_writes, NULL, "writes skipped, by method", NULL},
    {"refused", (getter)Planned_refused, NULL, "(id, server) of the first admitted row captured at a target", NULL},
    {"rows", (getter)Planned_rows, NULL, "rows read", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Planned_seq = {.sq_length = (lenfunc)Planned_len};

static PyTypeObject PlannedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "replay._sender.Planned",
    .tp_basicsize = sizeof(Planned),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)Planned_dealloc,
    .tp_methods = Planned_methods,
    .tp_getset = Planned_getset,
    .tp_as_sequence = &Planned_seq,
    .tp_doc = "A batch's jobs, ready for Sender.submit_planned, and what it skipped.",
};

int planned_jobs(PyObject *o, job_t ***jobs, size_t *n) {
    if (!PyObject_TypeCheck(o, &PlannedType)) {
        PyErr_SetString(PyExc_TypeError, "a Planned");
        return -1;
    }
    *jobs = ((Planned *)o)->jobs;
    *n = ((Planned *)o)->njobs;
    return 0;
}

int planner_add_types(PyObject *m) {
    init_lower();
    if (PyType_Ready(&PlannerType) < 0 || PyType_Ready(&PlannedType) < 0) return -1;
    Py_INCREF(&PlannerType);
    if (PyModule_AddObject(m, "Planner", (PyObject *)&PlannerType) < 0) { Py_DECREF(&PlannerType); return -1; }
    Py_INCREF(&PlannedType);
    if (PyModule_AddObject(m, "Planned", (PyObject *)&PlannedType) < 0) { Py_DECREF(&PlannedType); return -1; }
    return 0;
}
