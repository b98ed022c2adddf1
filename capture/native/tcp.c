/* TCP reassembly: a port of capture/tcp.py (Reassembler, Connection, Half, Stats).
 *
 * Same semantics in every branch as the Python: the in-order fast path, the out-of-order
 * buffer drained in order of offset from the stream's base, retransmission checks against a
 * 64 KiB history of delivered bytes (kept as copies), acknowledged holes, FIN and RST, reuse of
 * a 4-tuple, idle expiry by capture time, and connections visited in opening order (the order
 * of the Python's `_live` dict) when expiring and flushing.
 */
#include "native.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M32 0xFFFFFFFFu
#define HALF 0x80000000u
#define MAX_OOO_BYTES (4LL * 1024 * 1024)
#define MAX_OOO_SEGMENTS 4096
#define RECENT_BYTES (64LL * 1024)
#define CLOSED_LINGER 5.0

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    return p;
}

/* A segment waiting in the out-of-order buffer (Python: ooo[seq] = (payload, ts, ack_rel,
 * missing)); `key` is its offset from the half's base, the heap's order. */
typedef struct {
    uint32_t key, seq, len, missing;
    double ts;
    long long ack_rel;
    uint8_t *data;
} ooo_ent;

typedef struct {
    uint32_t seq, len;
    size_t off; /* into the half's recent byte buffer */
} recent_ent;

typedef struct {
    int64_t base, next, isn, fin; /* -1 for None */
    int ended;
    /* out-of-order buffer, sorted by key */
    ooo_ent *ooo;
    size_t nooo, capooo;
    long long ooo_bytes;
    /* delivered bytes kept for retransmission checks: entries (a ring) over a byte buffer */
    recent_ent *rent;
    size_t rfirst, rcount, rcap; /* rcap: a power of two, or 0 */
    uint8_t *rbuf;
    size_t rstart, rend, rbcap;  /* live bytes are rbuf[rstart:rend] */
    long long recent_bytes;
    int64_t acked;               /* -1 for None */
    long long acked_at;
} half;

typedef struct tconn {
    st_conn c;
    half h[2];
    int closed;
    double closed_at;
    struct tconn *lprev, *lnext; /* the live list, in opening order */
} tconn;

typedef struct {
    uint64_t hash;
    tconn *conn; /* NULL: empty */
    int d;
} slot;

struct st_reasm {
    st_ctx *ctx;
    double idle, next_sweep;
    long long count;
    uint64_t serial;
    st_tcp_stats stats;
    slot *tab;
    size_t tcap, tused;
    tconn *lhead, *ltail;
    size_t nlive;
};

/* ---- the 4-tuple map: (src, sport, dst, dport) -> (connection, direction) ---------------- */

typedef struct {
    const uint8_t *a, *b; /* source and destination addresses */
    uint16_t pa, pb;
    uint8_t alen;
} tkey;

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t key_hash(const tkey *k) {
    uint64_t h = (uint64_t)k->pa << 32 | (uint64_t)k->pb << 16 | k->alen;
    uint64_t w;
    for (int i = 0; i < k->alen; i += 4) {
        uint32_t x, y;
        memcpy(&x, k->a + i, 4);
        memcpy(&y, k->b + i, 4);
        w = (uint64_t)x << 32 | y;
        h = mix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
    }
    return mix64(h);
}

static void conn_key(const tconn *c, int d, tkey *k) {
    k->alen = c->c.alen;
    if (d == 0) { k->a = c->c.src; k->b = c->c.dst; k->pa = c->c.sport; k->pb = c->c.dport; }
    else { k->a = c->c.dst; k->b = c->c.src; k->pa = c->c.dport; k->pb = c->c.sport; }
}

static int key_eq(const tkey *x, const tkey *y) {
    return x->alen == y->alen && x->pa == y->pa && x->pb == y->pb &&
           memcmp(x->a, y->a, x->alen) == 0 && memcmp(x->b, y->b, x->alen) == 0;
}

static slot *tab_find(st_reasm *r, const tkey *k, uint64_t h) {
    size_t mask = r->tcap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        slot *s = &r->tab[i];
        if (!s->conn) return s;
        if (s->hash == h) {
            tkey o;
            conn_key(s->conn, s->d, &o);
            if (key_eq(&o, k)) return s;
        }
    }
}

static void tab_grow(st_reasm *r) {
    slot *old = r->tab;
    size_t ocap = r->tcap;
    r->tcap = ocap ? ocap * 2 : 1024;
    r->tab = calloc(r->tcap, sizeof(slot));
    if (!r->tab) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
    size_t mask = r->tcap - 1;
    for (size_t j = 0; j < ocap; j++) {
        if (!old[j].conn) continue;
        size_t i = (size_t)old[j].hash & mask;
        while (r->tab[i].conn) i = (i + 1) & mask;
        r->tab[i] = old[j];
    }
    free(old);
}

/* _conns[key] = (conn, d): overwrites like a dict. */
static void tab_put(st_reasm *r, tconn *c, int d) {
    if ((r->tused + 1) * 2 > r->tcap) tab_grow(r);
    tkey k;
    conn_key(c, d, &k);
    uint64_t h = key_hash(&k);
    slot *s = tab_find(r, &k, h);
    if (!s->conn) r->tused++;
    s->hash = h; s->conn = c; s->d = d;
}

/* Remove a slot (linear probing: shift the following cluster back). */
static void tab_remove(st_reasm *r, slot *s) {
    size_t mask = r->tcap - 1;
    size_t i = (size_t)(s - r->tab);
    r->tab[i].conn = NULL;
    r->tused--;
    for (size_t j = (i + 1) & mask; r->tab[j].conn; j = (j + 1) & mask) {
        size_t home = (size_t)r->tab[j].hash & mask;
        /* move j into i if home is not cyclically within (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            r->tab[i] = r->tab[j];
            r->tab[j].conn = NULL;
            i = j;
        }
    }
}

/* ---- halves -------------------------------------------------------------------------- */

static void half_init(half *h) {
    memset(h, 0, sizeof *h);
    h->base = h->next = h->isn = h->fin = h->acked = -1;
}

static void half_free(half *h) {
    for (size_t i = 0; i < h->nooo; i++) free(h->ooo[i].data);
    free(h->ooo);
    free(h->rent);
    free(h->rbuf);
}

static void recent_append(half *h, uint32_t seq, const uint8_t *p, uint32_t n) {
    /* bytes */
    if (h->rend + n > h->rbcap) {
        size_t live = h->rend - h->rstart;
        if (live + n > h->rbcap / 2) {
            size_t cap = h->rbcap ? h->rbcap : 4096;
            while (cap < 2 * (live + n)) cap *= 2;
            uint8_t *nb = xmalloc(cap);
            if (live) memcpy(nb, h->rbuf + h->rstart, live);
            free(h->rbuf);
            h->rbuf = nb;
            h->rbcap = cap;
        } else if (live) {
            memmove(h->rbuf, h->rbuf + h->rstart, live);
        }
        size_t mask = h->rcap - 1;
        for (size_t i = 0; i < h->rcount; i++) h->rent[(h->rfirst + i) & mask].off -= h->rstart;
        h->rend = live;
        h->rstart = 0;
    }
    memcpy(h->rbuf + h->rend, p, n);
    /* entry */
    if (h->rcount == h->rcap) {
        size_t ncap = h->rcap ? h->rcap * 2 : 16;
        recent_ent *ne = xmalloc(ncap * sizeof *ne);
        for (size_t i = 0; i < h->rcount; i++) ne[i] = h->rent[(h->rfirst + i) & (h->rcap - 1)];
        free(h->rent);
        h->rent = ne;
        h->rcap = ncap;
        h->rfirst = 0;
    }
    recent_ent *e = &h->rent[(h->rfirst + h->rcount) & (h->rcap - 1)];
    e->seq = seq; e->len = n; e->off = h->rend;
    h->rcount++;
    h->rend += n;
    h->recent_bytes += n;
    while (h->recent_bytes > RECENT_BYTES && h->rcount > 1) {
        recent_ent *f = &h->rent[h->rfirst];
        h->recent_bytes -= f->len;
        h->rstart = f->off + f->len;
        h->rfirst = (h->rfirst + 1) & (h->rcap - 1);
        h->rcount--;
    }
}

/* Index of the ooo entry with this key, or where it would go. */
static size_t ooo_search(const half *h, uint32_t key, int *found) {
    size_t lo = 0, hi = h->nooo;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->ooo[mid].key < key) lo = mid + 1;
        else hi = mid;
    }
    *found = lo < h->nooo && h->ooo[lo].key == key;
    return lo;
}

/* ---- the reassembler ------------------------------------------------------------------- */

st_reasm *st_reasm_new(st_ctx *ctx, double idle_timeout) {
    st_reasm *r = xmalloc(sizeof *r);
    memset(r, 0, sizeof *r);
    r->ctx = ctx;
    r->idle = idle_timeout;
    r->next_sweep = 0.0;
    tab_grow(r);
    return r;
}

static void conn_free(tconn *c) {
    if (c->c.sink) st_sink_free(c->c.sink);
    half_free(&c->h[0]);
    half_free(&c->h[1]);
    free(c);
}

void st_reasm_free(st_reasm *r) {
    if (!r) return;
    tconn *c = r->lhead;
    while (c) { tconn *n = c->lnext; conn_free(c); c = n; }
    free(r->tab);
    free(r);
}

const st_tcp_stats *st_reasm_stats(const st_reasm *r) { return &r->stats; }

size_t st_reasm_open(const st_reasm *r) { return r->nlive; }

static tconn *open_conn(st_reasm *r, const st_segment *seg, double ts) {
    tconn *c = xmalloc(sizeof *c);
    memset(c, 0, sizeof *c);
    c->c.serial = ++r->serial;
    memcpy(c->c.src, seg->src, seg->alen);
    memcpy(c->c.dst, seg->dst, seg->alen);
    c->c.alen = seg->alen;
    c->c.sport = seg->sport;
    c->c.dport = seg->dport;
    c->c.first_ts = c->c.last_ts = ts;
    c->c.syn_dir = (seg->flags & ST_SYN) ? ((seg->flags & ST_ACK) ? 1 : 0) : -1;
    c->c.priv = c;
    half_init(&c->h[0]);
    half_init(&c->h[1]);
    c->c.sink = st_sink_new(r->ctx, &c->c);
    tab_put(r, c, 0);
    tab_put(r, c, 1);
    c->lprev = r->ltail;
    c->lnext = NULL;
    if (r->ltail) r->ltail->lnext = c; else r->lhead = c;
    r->ltail = c;
    r->nlive++;
    r->stats.connections++;
    return c;
}

static void end_half(tconn *c, int d, double ts) {
    half *h = &c->h[d];
    if (h->ended) return;
    h->ended = 1;
    st_sink_eof(c->c.sink, d, ts);
    if (c->h[1 - d].ended && !c->closed) {
        c->closed = 1;
        c->closed_at = ts;
        st_sink_close(c->c.sink, ts);
    }
}

static void gap(st_reasm *r, tconn *c, int d, unsigned long long nbytes, double ts, const char *cause) {
    r->stats.gaps++;
    r->stats.gap_bytes += (long long)nbytes;
    st_sink_gap(c->c.sink, d, nbytes, ts, cause);
}

static void in_order(st_reasm *r, tconn *c, int d, half *h, const uint8_t *p, uint32_t n,
                     uint32_t missing, double ts, long long ack_rel) {
    uint32_t nxt = (uint32_t)h->next;
    if (n) {
        st_sink_data(c->c.sink, d, p, n, ts, ack_rel);
        recent_append(h, nxt, p, n);
    }
    if (missing) gap(r, c, d, missing, ts, "snaplen");
    h->next = (uint32_t)(nxt + n + missing);
}

static void check_overlap(st_reasm *r, tconn *c, int d, half *h, uint32_t seq,
                          const uint8_t *data, uint32_t dlen) {
    size_t mask = h->rcap - 1;
    for (size_t i = 0; i < h->rcount; i++) {
        const recent_ent *e = &h->rent[(h->rfirst + i) & mask];
        uint32_t off = seq - e->seq;
        if (off < e->len) {
            uint32_t alen = e->len - off;
            if (alen > dlen) alen = dlen;
            if (alen && memcmp(h->rbuf + e->off + off, data, alen) != 0) {
                r->stats.overlap_conflicts++;
                st_sink_flag(c->c.sink, d, "overlap_conflict");
            }
            return;
        }
    }
}

/* Data starting before `next`: compare what was delivered, keep the rest. Returns 0 for a
 * plain retransmission; else 1 with *p, *n, *missing narrowed to what is new. */
static int past_next(st_reasm *r, tconn *c, int d, half *h, uint32_t seq, const uint8_t **p,
                     uint32_t *n, uint32_t *missing) {
    uint32_t behind = (uint32_t)h->next - seq;
    check_overlap(r, c, d, h, seq, *p, behind < *n ? behind : *n);
    if ((uint64_t)behind >= (uint64_t)*n + *missing) {
        r->stats.retransmissions++;
        return 0;
    }
    if (behind <= *n) {
        *p += behind;
        *n -= behind;
        return 1;
    }
    *missing -= behind - *n;
    *n = 0;
    return 1;
}

static int first_waiting(const half *h, uint32_t *seq) {
    if (!h->nooo) return 0;
    *seq = h->ooo[0].seq;
    return 1;
}

static void drain(st_reasm *r, tconn *c, int d, half *h) {
    uint32_t base = (uint32_t)h->base;
    size_t i = 0; /* entries taken from the front (nothing else touches the buffer meanwhile) */
    while (i < h->nooo) {
        ooo_ent *e = &h->ooo[i];
        uint32_t nxt = (uint32_t)h->next;
        if (e->key > (uint32_t)(nxt - base)) break; /* a hole remains before it */
        i++;
        h->ooo_bytes -= e->len ? e->len : 1;
        const uint8_t *p = e->data;
        uint32_t n = e->len, missing = e->missing;
        if (e->seq == nxt || past_next(r, c, d, h, e->seq, &p, &n, &missing))
            in_order(r, c, d, h, p, n, missing, e->ts, e->ack_rel);
        free(e->data);
        e->data = NULL;
    }
    if (i) {
        h->nooo -= i;
        memmove(h->ooo, h->ooo + i, h->nooo * sizeof(ooo_ent));
    }
    if (h->fin >= 0 && h->next == h->fin && !h->nooo) end_half(c, d, c->c.last_ts);
}

static void skip_to_buffered(st_reasm *r, tconn *c, int d, half *h, double ts) {
    uint32_t nxt = (uint32_t)h->next, first;
    if (first_waiting(h, &first)) {
        uint32_t hole = first - nxt;
        if (hole && hole < HALF) {
            gap(r, c, d, hole, ts, "gap");
            h->next = first;
        }
    }
    drain(r, c, d, h);
}

static void accept_data(st_reasm *r, tconn *c, int d, half *h, uint32_t seq, const uint8_t *p,
                        uint32_t n, uint32_t missing, double ts, long long ack_rel) {
    uint32_t nxt = (uint32_t)h->next;
    uint32_t diff = seq - nxt;
    if (diff >= HALF) {
        if (!past_next(r, c, d, h, seq, &p, &n, &missing)) return;
        diff = 0;
    }
    if (diff == 0) {
        in_order(r, c, d, h, p, n, missing, ts, ack_rel);
        if (h->nooo) drain(r, c, d, h);
        return;
    }
    uint32_t key = seq - (uint32_t)h->base;
    int found;
    size_t i = ooo_search(h, key, &found);
    if (found) {
        ooo_ent *old = &h->ooo[i];
        if ((uint64_t)old->len + old->missing >= (uint64_t)n + missing) {
            uint32_t m = old->len < n ? old->len : n;
            if (m && memcmp(old->data, p, m) != 0) {
                r->stats.overlap_conflicts++;
                st_sink_flag(c->c.sink, d, "overlap_conflict");
            }
            r->stats.retransmissions++;
            return;
        }
        h->ooo_bytes -= old->len ? old->len : 1; /* a longer copy replaces it */
        free(old->data);
    } else {
        if (h->nooo == h->capooo) {
            h->capooo = h->capooo ? h->capooo * 2 : 8;
            h->ooo = xrealloc(h->ooo, h->capooo * sizeof(ooo_ent));
        }
        memmove(h->ooo + i + 1, h->ooo + i, (h->nooo - i) * sizeof(ooo_ent));
        h->nooo++;
    }
    ooo_ent *e = &h->ooo[i];
    e->key = key; e->seq = seq; e->len = n; e->missing = missing; e->ts = ts; e->ack_rel = ack_rel;
    e->data = NULL;
    if (n) {
        e->data = xmalloc(n);
        memcpy(e->data, p, n);
    }
    h->ooo_bytes += n ? n : 1;
    if (h->ooo_bytes > MAX_OOO_BYTES || h->nooo > MAX_OOO_SEGMENTS) skip_to_buffered(r, c, d, h, ts);
}

static void flush_half(st_reasm *r, tconn *c, int d, double ts) {
    half *h = &c->h[d];
    if (h->ended) return;
    while (h->nooo) {
        size_t before = h->nooo;
        skip_to_buffered(r, c, d, h, ts);
        if (h->nooo >= before) {
            /* No progress: the earliest waiting segment (by offset from the base) is behind
             * `next`, yet drain() keeps it because its offset is larger: the offsets wrapped
             * (a stream past 4 GiB). tcp.py loops forever here; we take it as what it is, data
             * before `next` (a retransmission, or the part of it that is new). */
            ooo_ent e = h->ooo[0];
            h->nooo--;
            memmove(h->ooo, h->ooo + 1, h->nooo * sizeof(ooo_ent));
            h->ooo_bytes -= e.len ? e.len : 1;
            const uint8_t *p = e.data;
            uint32_t n = e.len, missing = e.missing;
            if (past_next(r, c, d, h, e.seq, &p, &n, &missing))
                in_order(r, c, d, h, p, n, missing, e.ts, e.ack_rel);
            free(e.data);
        }
    }
    if (h->fin >= 0 && h->next >= 0) {
        uint32_t hole = (uint32_t)h->fin - (uint32_t)h->next;
        if (hole && hole < HALF) {
            gap(r, c, d, hole, ts, "gap");
            h->next = h->fin;
        }
    }
    end_half(c, d, ts);
}

static void acked_hole(st_reasm *r, tconn *c, int d, half *h, double ts) {
    int64_t ack = h->acked;
    h->acked = -1;
    if (ack < 0 || h->next < 0 || h->ended) return;
    uint32_t nxt = (uint32_t)h->next;
    uint32_t hole = (uint32_t)ack - nxt;
    if (!hole || hole >= HALF) return; /* filled meanwhile */
    uint32_t first;
    if (first_waiting(h, &first) && (uint32_t)(first - nxt) <= hole) {
        skip_to_buffered(r, c, d, h, ts);
        return;
    }
    gap(r, c, d, hole, ts, "gap");
    h->next = ack;
    if (h->nooo) drain(r, c, d, h);
}

/* Finish a connection: flush its halves, forget it, free it. */
static void finish(st_reasm *r, tconn *c, double ts) {
    flush_half(r, c, 0, ts);
    flush_half(r, c, 1, ts);
    for (int d = 0; d < 2; d++) {
        tkey k;
        conn_key(c, d, &k);
        slot *s = tab_find(r, &k, key_hash(&k));
        if (s->conn == c) tab_remove(r, s);
    }
    if (c->lprev) c->lprev->lnext = c->lnext; else r->lhead = c->lnext;
    if (c->lnext) c->lnext->lprev = c->lprev; else r->ltail = c->lprev;
    r->nlive--;
    conn_free(c);
}

static void expire(st_reasm *r, double now) {
    tconn *c = r->lhead;
    while (c) {
        tconn *n = c->lnext;
        if (c->closed) {
            if (now - c->c.last_ts > CLOSED_LINGER) finish(r, c, c->c.last_ts);
        } else if (now - c->c.last_ts > r->idle) {
            r->stats.expired++;
            finish(r, c, c->c.last_ts);
        }
        c = n;
    }
    r->next_sweep = now + (r->idle < CLOSED_LINGER ? r->idle : CLOSED_LINGER);
}

void st_reasm_flush(st_reasm *r) {
    tconn *c = r->lhead;
    while (c) {
        tconn *n = c->lnext;
        finish(r, c, c->c.last_ts);
        c = n;
    }
}

void st_reasm_segment(st_reasm *r, double ts, const st_segment *seg) {
    uint8_t flags = seg->flags;
    uint32_t seq = seg->seq, ack = seg->ack, n = seg->len, missing = seg->missing;
    const uint8_t *payload = seg->payload;
    r->count++;
    tkey k = {seg->src, seg->dst, seg->sport, seg->dport, seg->alen};
    slot *s = tab_find(r, &k, key_hash(&k));
    tconn *c;
    int d;
    if (!s->conn) {
        if (!(n || missing || (flags & ST_SYN))) {
            r->stats.ignored_no_connection++;
            return;
        }
        c = open_conn(r, seg, ts);
        d = 0;
    } else {
        c = s->conn;
        d = s->d;
        if (flags & ST_SYN) {
            half *h = &c->h[d];
            if (c->closed || (!(flags & ST_ACK) && ((h->isn >= 0 && h->isn != seq) ||
                                                    (h->isn < 0 && h->next >= 0)))) {
                finish(r, c, ts);
                r->stats.reused++;
                c = open_conn(r, seg, ts);
                d = 0;
            }
        }
    }
    c->c.last_ts = ts;
    half *h = &c->h[d], *peer = &c->h[1 - d];
    long long ack_rel = -1;
    if (flags & ST_ACK) {
        if (peer->next >= 0) {
            uint32_t ahead = ack - (uint32_t)peer->next;
            if (ahead && ahead < HALF && !peer->ended &&
                !(peer->fin >= 0 && ack == (uint32_t)(peer->fin + 1))) {
                if (peer->acked < 0 || (uint32_t)(ack - (uint32_t)peer->acked) < HALF) {
                    peer->acked = ack;
                    peer->acked_at = r->count;
                }
            }
            uint32_t rel = ack - (uint32_t)peer->base;
            ack_rel = rel < HALF ? (long long)rel : -1;
        }
    }
    if (flags & ST_SYN) {
        h->isn = seq;
        seq = seq + 1;
        if (h->next < 0) h->next = h->base = seq;
    }
    if (n || missing) {
        if (h->next < 0) h->next = h->base = seq;
        if (seq == (uint32_t)h->next && !missing && !h->nooo) {
            /* the common case: the next bytes, in order, nothing waiting */
            st_sink_data(c->c.sink, d, payload, n, ts, ack_rel);
            h->next = (uint32_t)(seq + n);
            recent_append(h, seq, payload, n);
        } else {
            accept_data(r, c, d, h, seq, payload, n, missing, ts, ack_rel);
        }
    } else if (h->next < 0 && (flags & ST_ACK)) {
        h->next = h->base = seq; /* mid-stream: a pure ACK still tells where data starts */
    }
    if (flags & ST_FIN) h->fin = (uint32_t)(seq + n + missing);
    if (h->fin >= 0 && !h->ended && h->next == h->fin && !h->nooo) end_half(c, d, ts);
    if (flags & ST_RST) {
        flush_half(r, c, 0, ts);
        flush_half(r, c, 1, ts);
    }
    if (h->acked >= 0 && h->acked_at < r->count) acked_hole(r, c, d, h, ts);
    if (peer->acked >= 0 && peer->acked_at < r->count) acked_hole(r, c, 1 - d, peer, ts);
    if (!(r->count & 0xFFF) && ts >= r->next_sweep) expire(r, ts);
}
