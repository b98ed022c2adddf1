/* Capture files (pcap, pcapng) -> records: a port of capture/pcapfile.py's CaptureDecoder.
 *
 * Same records, same timestamps (the same double: the same floating-point operations in the
 * same order), same error messages, same truncation and corruption behaviour. */
#include "native.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECORD 262144u
#define MAX_BLOCK (16u * 1024u * 1024u)

enum { FMT_NONE, FMT_PCAP, FMT_PCAPNG };

typedef struct {
    int linktype;
    double tsunit;
    uint32_t snaplen;
} st_iface;

struct st_reader {
    st_buf buf;            /* the remainder of earlier feeds (CaptureDecoder._buf) */
    int fmt;
    int big;               /* byte order: 0 little, 1 big */
    double tsunit;
    int linktype;
    uint32_t snaplen;
    st_iface *ifaces; size_t nifaces, capifaces;
    long long records;
    unsigned long long bytes_consumed;
    long long unknown_blocks;
    char *error;           /* the last error's message (sticky when `failed`) */
    int failed;            /* CaptureDecoder.error is set: nothing more is decoded */
};

st_reader *st_reader_new(void) {
    st_reader *r = calloc(1, sizeof *r);
    if (!r) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    st_buf_init(&r->buf);
    r->tsunit = 1e-6;
    return r;
}

void st_reader_free(st_reader *r) {
    if (!r) return;
    st_buf_free(&r->buf);
    free(r->ifaces);
    free(r->error);
    free(r);
}

const char *st_reader_error(const st_reader *r) { return r->error ? r->error : ""; }
long long st_reader_records(const st_reader *r) { return r->records; }
long long st_reader_unknown_blocks(const st_reader *r) { return r->unknown_blocks; }
size_t st_reader_leftover(const st_reader *r) { return r->buf.len; }
int st_reader_failed(const st_reader *r) { return r->failed; }

static void set_error(st_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(st_reader *r, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    free(r->error);
    r->error = strdup(tmp);
    if (!r->error) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
}

static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
               : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline uint16_t rd16(const uint8_t *p, int big) {
    return big ? (uint16_t)(p[0] << 8 | p[1]) : (uint16_t)(p[1] << 8 | p[0]);
}

static void add_iface(st_reader *r, int linktype, double tsunit, uint32_t snaplen) {
    if (r->nifaces == r->capifaces) {
        size_t cap = r->capifaces ? r->capifaces * 2 : 8;
        st_iface *p = realloc(r->ifaces, cap * sizeof *p);
        if (!p) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
        r->ifaces = p;
        r->capifaces = cap;
    }
    r->ifaces[r->nifaces].linktype = linktype;
    r->ifaces[r->nifaces].tsunit = tsunit;
    r->ifaces[r->nifaces].snaplen = snaplen;
    r->nifaces++;
}

/* CaptureDecoder._start: returns the offset after the file header, or -1 (not a capture). */
static long start(st_reader *r, const uint8_t *buf) {
    static const struct { uint8_t m[4]; int big; double unit; } magics[4] = {
        {{0xd4, 0xc3, 0xb2, 0xa1}, 0, 1e-6},
        {{0xa1, 0xb2, 0xc3, 0xd4}, 1, 1e-6},
        {{0x4d, 0x3c, 0xb2, 0xa1}, 0, 1e-9},
        {{0xa1, 0xb2, 0x3c, 0x4d}, 1, 1e-9},
    };
    for (int i = 0; i < 4; i++) {
        if (memcmp(buf, magics[i].m, 4) == 0) {
            r->fmt = FMT_PCAP;
            r->big = magics[i].big;
            r->tsunit = magics[i].unit;
            uint32_t snaplen = rd32(buf + 16, r->big), network = rd32(buf + 20, r->big);
            /* The upper bits of `network` carry FCS length flags (pcap-linktype(7)). */
            r->linktype = (int)(network & 0x0FFFFFFF);
            r->snaplen = snaplen;
            r->nifaces = 0;
            add_iface(r, r->linktype, r->tsunit, snaplen);
            return 24;
        }
    }
    if (memcmp(buf, "\x0a\x0d\x0d\x0a", 4) == 0) {
        r->fmt = FMT_PCAPNG;
        return 0;
    }
    set_error(r, "not a pcap or pcapng file");
    return -1;
}

/* Both return the offset decoded up to, or -1 after set_error (a CaptureError). */
static long pcap_records(st_reader *r, const uint8_t *buf, size_t n, size_t off,
                         st_record_cb cb, void *arg, long long *count) {
    const int big = r->big;
    const double unit = r->tsunit;
    const uint32_t limit = r->snaplen > MAX_RECORD ? r->snaplen : MAX_RECORD;
    st_record rec;
    rec.linktype = r->linktype;
    while (off + 16 <= n) {
        const uint8_t *h = buf + off;
        uint32_t sec = rd32(h, big), frac = rd32(h + 4, big), incl = rd32(h + 8, big),
                 orig = rd32(h + 12, big);
        if (incl > limit) {
            set_error(r, "corrupt record at byte %llu: captured length %u",
                      r->bytes_consumed + off, incl);
            return -1;
        }
        size_t end = off + 16 + (size_t)incl;
        if (end > n) break;
        rec.ts = (double)sec + (double)frac * unit;
        rec.data = h + 16;
        rec.caplen = incl;
        rec.origlen = orig;
        cb(arg, &rec);
        ++*count;
        off = end;
    }
    return (long)off;
}

static int min_block(uint32_t btype) {
    switch (btype) {
    case 6: return 32;
    case 2: return 32;
    case 3: return 16;
    case 1: return 20;
    case 0x0A0D0D0A: return 28;
    default: return 12;
    }
}

static const st_iface *iface(st_reader *r, uint32_t idx, size_t off) {
    if (idx < r->nifaces) return &r->ifaces[idx];
    set_error(r, "packet at byte %llu names interface %u, which was never described",
              r->bytes_consumed + off, idx);
    return NULL;
}

/* CaptureDecoder._parse_idb */
static void parse_idb(st_reader *r, const uint8_t *buf, size_t body, size_t end) {
    const int big = r->big;
    int linktype = rd16(buf + body, big);
    uint32_t snaplen = rd32(buf + body + 4, big);
    double tsunit = 1e-6;
    size_t p = body + 8;
    while (p + 4 <= end) {
        uint16_t code = rd16(buf + p, big), olen = rd16(buf + p + 2, big);
        if (code == 0) break;
        if (code == 9 && olen >= 1) { /* if_tsresol */
            int res = buf[p + 4];
            /* Python: 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r, float pow = C pow */
            tsunit = (res & 0x80) ? pow(2.0, (double)-(res & 0x7F)) : pow(10.0, (double)-res);
        }
        p += 4 + (((size_t)olen + 3) & ~(size_t)3);
    }
    add_iface(r, linktype, tsunit, snaplen);
}

static long pcapng_blocks(st_reader *r, const uint8_t *buf, size_t n, size_t off,
                          st_record_cb cb, void *arg, long long *count) {
    st_record rec;
    while (off + 12 <= n) {
        const uint8_t *b = buf + off;
        if (memcmp(b, "\x0a\x0d\x0d\x0a", 4) == 0) {
            const uint8_t *bom = b + 8;
            if (memcmp(bom, "\x4d\x3c\x2b\x1a", 4) == 0) r->big = 0;
            else if (memcmp(bom, "\x1a\x2b\x3c\x4d", 4) == 0) r->big = 1;
            else {
                set_error(r, "corrupt section header at byte %llu", r->bytes_consumed + off);
                return -1;
            }
        }
        const int big = r->big;
        uint32_t btype = rd32(b, big), blen = rd32(b + 4, big);
        if (blen < 12 || blen % 4 || blen > MAX_BLOCK) {
            set_error(r, "corrupt block at byte %llu: length %u", r->bytes_consumed + off, blen);
            return -1;
        }
        if (off + blen > n) break;
        size_t body = off + 8;
        if (blen < (uint32_t)min_block(btype)) {
            set_error(r, "corrupt block at byte %llu: type %u cannot be %u bytes",
                      r->bytes_consumed + off, btype, blen);
            return -1;
        }
        if (btype == 6 || btype == 2) { /* Enhanced Packet Block; obsolete Packet Block */
            uint32_t idx, hi, lo, cap, orig;
            if (btype == 6) {
                idx = rd32(buf + body, big);
                hi = rd32(buf + body + 4, big);
                lo = rd32(buf + body + 8, big);
                cap = rd32(buf + body + 12, big);
                orig = rd32(buf + body + 16, big);
            } else {
                idx = rd16(buf + body, big);
                hi = rd32(buf + body + 4, big);
                lo = rd32(buf + body + 8, big);
                cap = rd32(buf + body + 12, big);
                orig = rd32(buf + body + 16, big);
            }
            if (cap > blen - 32) {
                set_error(r, "corrupt packet block at byte %llu", r->bytes_consumed + off);
                return -1;
            }
            const st_iface *ifc = iface(r, idx, off);
            if (!ifc) return -1;
            rec.ts = (double)((uint64_t)hi << 32 | lo) * ifc->tsunit;
            rec.linktype = ifc->linktype;
            rec.data = buf + body + 20;
            rec.caplen = cap;
            rec.origlen = orig;
            cb(arg, &rec);
            ++*count;
        } else if (btype == 3) { /* Simple Packet Block: interface 0, no timestamp */
            uint32_t orig = rd32(buf + body, big);
            const st_iface *ifc = iface(r, 0, off);
            if (!ifc) return -1;
            uint32_t cap = orig;
            if (blen - 16 < cap) cap = blen - 16;
            uint32_t snap = ifc->snaplen ? ifc->snaplen : orig;
            if (snap < cap) cap = snap;
            rec.ts = 0.0;
            rec.linktype = ifc->linktype;
            rec.data = buf + body + 4;
            rec.caplen = cap;
            rec.origlen = orig;
            cb(arg, &rec);
            ++*count;
        } else if (btype == 1) { /* Interface Description Block */
            parse_idb(r, buf, body, off + blen - 4);
        } else if (btype == 0x0A0D0D0A) { /* a new section: interfaces are per section */
            r->nifaces = 0;
        } else {
            r->unknown_blocks++;
        }
        off += blen;
    }
    return (long)off;
}

int st_reader_feed(st_reader *r, const uint8_t *data, size_t n, st_record_cb cb, void *arg) {
    if (r->failed) return -2; /* CaptureDecoder.feed raises CaptureError(self.error) */
    size_t old = r->buf.len;
    const uint8_t *buf;
    size_t len;
    if (old) {
        st_buf_put(&r->buf, data, n);
        buf = (const uint8_t *)r->buf.data;
        len = r->buf.len;
    } else {
        buf = data;
        len = n;
    }
    long off = 0;
    if (r->fmt == FMT_NONE) {
        if (len < 24) {
            if (!old) st_buf_put(&r->buf, data, n);
            return 0;
        }
        off = start(r, buf);
        if (off < 0) {
            r->buf.len = old; /* _buf is left as it was */
            return -1;
        }
    }
    long long count = 0;
    long end = r->fmt == FMT_PCAP ? pcap_records(r, buf, len, (size_t)off, cb, arg, &count)
                                  : pcapng_blocks(r, buf, len, (size_t)off, cb, arg, &count);
    r->records += count;
    if (end < 0) {
        if (count) {
            r->failed = 1;
            r->buf.len = 0;
        } else {
            r->buf.len = old; /* the exception propagated: _buf was not updated */
        }
        return -2;
    }
    r->bytes_consumed += (unsigned long long)end;
    if (old) {
        st_buf_consume(&r->buf, (size_t)end);
    } else if ((size_t)end < len) {
        st_buf_put(&r->buf, data + end, len - (size_t)end);
    }
    return 0;
}
