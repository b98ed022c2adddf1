/* Small shared pieces: growable buffers, string counters, JSON output that matches Python's
 * json module byte for byte, and SHA-1 (connection ids are sha1(...)[:12], as in pairing.py). */
#include "native.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void st_buf_init(st_buf *b) { b->data = NULL; b->len = b->cap = 0; }

void st_buf_free(st_buf *b) { free(b->data); st_buf_init(b); }

void st_buf_reserve(st_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    b->data = p;
    b->cap = cap;
}

void st_buf_put(st_buf *b, const void *p, size_t n) {
    if (!n) return;
    st_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void st_buf_puts(st_buf *b, const char *s) { st_buf_put(b, s, strlen(s)); }

void st_buf_putc(st_buf *b, char c) {
    st_buf_reserve(b, 1);
    b->data[b->len++] = c;
}

void st_buf_put_u64(st_buf *b, unsigned long long v) {
    char tmp[24];
    int i = 24;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    st_buf_put(b, tmp + i, (size_t)(24 - i));
}

void st_buf_put_i64(st_buf *b, long long v) {
    if (v < 0) { st_buf_putc(b, '-'); st_buf_put_u64(b, 0ULL - (unsigned long long)v); }
    else st_buf_put_u64(b, (unsigned long long)v);
}

/* repr(v) without the big-number arithmetic for the common case, a timestamp: 1 <= v < 1e15
 * with few decimals. Python's repr is the shortest decimal that reads back as v (the nearest of
 * those when several are as short). For p decimals the candidates are the integers N with
 * N / 10**p == v: N < 2**53 and 10**p are exact doubles, so the IEEE division is the correctly
 * rounded value of the decimal N e-p, exactly what reading it back gives. While 10**-p is
 * larger than v's ulp, at most one multiple of 10**-p rounds to v; so the shortest repr is the
 * candidate for the smallest such p that has one. A candidate with p decimals is also one for
 * any larger p (times a power of ten), so one search at the largest p the ulp allows (up to 9)
 * finds it, and its trailing zeros tell the smallest p. Anything else (more decimals, other
 * ranges) goes to Python's own dtoa. Returns the length written, or 0. */
static int fast_repr(double v, char out[40]) {
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    if (!(v >= 1.0 && v < 1e15)) return 0;
    uint64_t bits, ubits;
    memcpy(&bits, &v, sizeof bits);
    ubits = ((bits >> 52) - 52) << 52; /* v's ulp: 2 ** (exponent - 52); v is normal here */
    double ulp;
    memcpy(&ulp, &ubits, sizeof ulp);
    int p = 9;
    /* step 10**-p must exceed the width of v's rounding interval (at most one ulp); the factor
     * 2 is margin for the rounding of the product */
    while (p >= 0 && !(2 * ulp * pow10[p] < 1.0)) p--;
    if (p < 0) return 0;
    double x = v * pow10[p];
    if (x >= 9007199254740992.0) return 0; /* N must be an exact double */
    /* A round-tripping N is within a quarter of v * 10**p, and x is that product rounded (off by
     * at most half an ulp of x, itself at most 1): N is round(x) or a neighbour. */
    long long r = (long long)(x + 0.5), n = -1;
    if ((double)r / pow10[p] == v) n = r;
    else if (r > 1 && (double)(r - 1) / pow10[p] == v) n = r - 1;
    else if ((double)(r + 1) / pow10[p] == v) n = r + 1;
    if (n <= 0) return 0; /* the shortest repr has more decimals than the ulp allows here */
    while (p > 0 && n % 10 == 0) { n /= 10; p--; }
    /* the digits of n, then the point p digits from the end (n >= 10**p, as v >= 1) */
    char tmp[24];
    int i = 24;
    unsigned long long u = (unsigned long long)n;
    do { tmp[--i] = (char)('0' + u % 10); u /= 10; } while (u);
    int nd = 24 - i, whole = nd - p, len = 0;
    memcpy(out, tmp + i, (size_t)whole);
    len = whole;
    out[len++] = '.';
    if (p == 0) {
        out[len++] = '0';
    } else {
        memcpy(out + len, tmp + i + whole, (size_t)p);
        len += p;
    }
    return len;
}

void st_buf_put_double(st_buf *b, double v) {
    char fast[40];
    int n = fast_repr(v, fast);
    if (n) { st_buf_put(b, fast, (size_t)n); return; }
    char *s = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    st_buf_puts(b, s);
    PyMem_Free(s);
}

void st_buf_json_latin1(st_buf *b, const uint8_t *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    st_buf_reserve(b, n * 6 + 2);
    char *o = b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') { *o++ = (char)c; continue; }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
}

void st_buf_consume(st_buf *b, size_t n) {
    if (n >= b->len) { b->len = 0; return; }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void st_counter_init(st_counter *c) { c->head = NULL; c->size = 0; }

void st_counter_free(st_counter *c) {
    st_counter_entry *e = c->head;
    while (e) { st_counter_entry *n = e->next; free(e->key); free(e); e = n; }
    st_counter_init(c);
}

void st_counter_add(st_counter *c, const char *key, long long n) {
    st_counter_entry **pp = &c->head;
    for (st_counter_entry *e = c->head; e; e = e->next) {
        if (strcmp(e->key, key) == 0) { e->count += n; return; }
        pp = &e->next;
    }
    st_counter_entry *e = malloc(sizeof *e);
    char *k = strdup(key);
    if (!e || !k) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    e->key = k; e->count = n; e->next = NULL;
    *pp = e;
    c->size++;
}

long long st_counter_get(const st_counter *c, const char *key) {
    for (const st_counter_entry *e = c->head; e; e = e->next)
        if (strcmp(e->key, key) == 0) return e->count;
    return 0;
}

/* SHA-1 (FIPS 180-4), straightforward. */
#define ROL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = ROL(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else { f = b ^ c ^ d; k = 0xCA62C1D6; }
        uint32_t t = ROL(a, 5) + f + e + k + w[i];
        e = d; d = c; c = ROL(b, 30); b = a; a = t;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

void st_sha1_hex(const uint8_t *data, size_t n, char out[41]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) sha1_block(h, data + i);
    uint8_t tail[128] = {0};
    size_t rest = n - i;
    memcpy(tail, data + i, rest);
    tail[rest] = 0x80;
    size_t tl = rest + 9 <= 64 ? 64 : 128;
    unsigned long long bits = (unsigned long long)n * 8;
    for (int j = 0; j < 8; j++) tail[tl - 1 - j] = (uint8_t)(bits >> (8 * j));
    sha1_block(h, tail);
    if (tl == 128) sha1_block(h, tail + 64);
    static const char hex[] = "0123456789abcdef";
    for (int j = 0; j < 20; j++) {
        uint8_t byte = (uint8_t)(h[j / 4] >> (24 - 8 * (j % 4)));
        out[2 * j] = hex[byte >> 4];
        out[2 * j + 1] = hex[byte & 15];
    }
    out[40] = 0;
}

const char *const st_flag_names[STF_COUNT] = {
    "after_gap", "bad_chunk", "bad_content_length", "bad_header", "body_truncated",
    "conflicting_content_length", "gap", "incomplete", "interim", "interim_with_body",
    "midstream", "no_request", "no_response", "overlap_conflict", "parse_error",
    "snaplen", "te_and_cl", "trailers", "upgrade",
};

int st_flag_bit(const char *name) {
    for (int i = 0; i < STF_COUNT; i++)
        if (strcmp(st_flag_names[i], name) == 0) return i;
    return -1;
}
