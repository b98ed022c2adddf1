/* One record -> a TCP segment, or why not: a port of capture/layers.py's decode.
 *
 * Every bounds check is Python's: a slice past the end is short, an index past the end would
 * have raised there and is guarded by the same length tests here. Offsets are size_t (never
 * negative); `end` and `missing` are 64-bit like Python's ints. */
#include "native.h"

#include <stdio.h>
#include <string.h>

#define VXLAN_PORT 4789
#define TEREDO_PORT 3544
#define MAX_DEPTH 4 /* tunnels inside tunnels: bounded so a crafted packet cannot recurse forever */

typedef struct {
    st_segment *seg;
    char *why;
    long long missing;
    long long origlen;
} dec;

static int why(dec *c, const char *s) {
    strcpy(c->why, s);
    return 0;
}

static inline unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline unsigned le16(const uint8_t *p) { return (unsigned)p[1] << 8 | p[0]; }

const char *st_linktype_name(int lt, char buf[32]) {
    switch (lt) {
    case 0: return "null";
    case 1: return "ethernet";
    case 101: return "raw";
    case 104: return "c-hdlc";
    case 108: return "loop";
    case 113: return "linux-sll";
    case 127: return "ieee802.11-radiotap";
    case 105: return "ieee802.11";
    case 129: return "arcnet-linux";
    case 228: return "ipv4";
    case 229: return "ipv6";
    case 239: return "nflog";
    case 276: return "linux-sll2";
    }
    snprintf(buf, 32, "linktype-%d", lt);
    return buf;
}

static int ip(dec *c, const uint8_t *d, size_t n, size_t off, int depth);

static int tcp(dec *c, const uint8_t *d, size_t n, size_t start, long long end,
               const uint8_t *src, const uint8_t *dst, int alen) {
    if (n < start + 20) return why(c, "short");
    const uint8_t *h = d + start;
    st_segment *s = c->seg;
    s->sport = (uint16_t)be16(h);
    s->dport = (uint16_t)be16(h + 2);
    s->seq = be32(h + 4);
    s->ack = be32(h + 8);
    s->flags = h[13];
    size_t pstart = start + (size_t)(h[12] >> 4) * 4;
    memcpy(s->src, src, (size_t)alen);
    memcpy(s->dst, dst, (size_t)alen);
    s->alen = (uint8_t)alen;
    long long have = (long long)n;
    long long stop = end <= have ? end : have; /* data[pstart:stop] */
    if ((long long)pstart < stop) {
        s->payload = d + pstart;
        s->len = (uint32_t)(stop - (long long)pstart);
    } else {
        s->payload = d;
        s->len = 0;
    }
    if (end <= have) {
        c->missing = 0;
    } else {
        /* Snaplen cut the payload: say how much is missing so the stream records a gap. */
        long long m = have > (long long)pstart ? have : (long long)pstart;
        c->missing = end - m > 0 ? end - m : 0; /* as layers._tcp */
    }
    s->missing = (uint32_t)c->missing;
    return 1;
}

static int ethertype(dec *c, unsigned et, const uint8_t *d, size_t n, size_t off, int depth);

static int ether(dec *c, const uint8_t *d, size_t n, size_t off, int depth) {
    if (n < off + 14) return why(c, "short");
    return ethertype(c, be16(d + off + 12), d, n, off + 14, depth);
}

static int udp(dec *c, const uint8_t *d, size_t n, size_t start, int depth) {
    if (n < start + 8) return why(c, "short");
    unsigned sport = be16(d + start), dport = be16(d + start + 2);
    size_t p = start + 8;
    if (dport == VXLAN_PORT || sport == VXLAN_PORT) {
        if (n >= p + 8 && (d[p] & 0x08)) return ether(c, d, n, p + 8, depth + 1);
    } else if (dport == TEREDO_PORT || sport == TEREDO_PORT) {
        /* Teredo: optional authentication (0x0001) and origin indication (0x0000) headers. */
        while (n >= p + 2 && d[p] == 0) {
            if (d[p + 1] == 1) {
                if (n < p + 4) return why(c, "short");
                p += 13 + (size_t)d[p + 2] + d[p + 3];
            } else if (d[p + 1] == 0) {
                p += 8;
            } else {
                break;
            }
        }
        if (n > p && d[p] >> 4 == 6) return ip(c, d, n, p, depth + 1);
    }
    return why(c, "udp");
}

static int gre(dec *c, const uint8_t *d, size_t n, size_t start, int depth) {
    if (n < start + 4) return why(c, "short");
    uint8_t flags = d[start];
    unsigned proto = be16(d + start + 2);
    size_t p = start + 4;
    if (flags & 0x80) p += 4; /* checksum present */
    if (flags & 0x20) p += 4; /* key present */
    if (flags & 0x10) p += 4; /* sequence present */
    if (proto == 0x88BE) return ether(c, d, n, p + 8, depth + 1); /* ERSPAN type II */
    if (proto == 0x22EB) /* ERSPAN type III: 12 bytes (+8 with the platform sub-header) */
        return ether(c, d, n, p + ((n > p + 11 && (d[p + 11] & 1)) ? 20 : 12), depth + 1);
    if (proto == 0x6558) return ether(c, d, n, p, depth + 1);
    return ethertype(c, proto, d, n, p, depth + 1);
}

static int ip(dec *c, const uint8_t *d, size_t n, size_t off, int depth) {
    if (n < off + 20) return why(c, "short");
    unsigned v = d[off] >> 4;
    unsigned proto;
    const uint8_t *src, *dst;
    int alen;
    size_t start;
    long long end;
    if (v == 4) {
        size_t ihl = (size_t)(d[off] & 0x0F) * 4;
        unsigned total = be16(d + off + 2);
        if ((d[off + 6] & 0x3F) || d[off + 7]) return why(c, "ip-fragment"); /* MF or offset */
        proto = d[off + 9];
        src = d + off + 12;
        dst = d + off + 16;
        alen = 4;
        start = off + ihl;
        /* total == 0 happens with TSO on the sending host: trust the captured length then. */
        end = total ? (long long)(off + total) : c->origlen;
    } else if (v == 6) {
        if (n < off + 40) return why(c, "short");
        unsigned plen = be16(d + off + 4);
        proto = d[off + 6];
        src = d + off + 8;
        dst = d + off + 24;
        alen = 16;
        start = off + 40;
        end = plen ? (long long)(start + plen) : c->origlen;
        while (proto == 0 || proto == 43 || proto == 44 || proto == 60 || proto == 51) {
            if (n < start + 8) return why(c, "short");
            size_t hlen;
            unsigned nxt = d[start];
            if (proto == 44) {
                if (be16(d + start + 2) & 0xFFF9) return why(c, "ip-fragment");
                hlen = 8;
            } else if (proto == 51) {
                hlen = ((size_t)d[start + 1] + 2) * 4;
            } else {
                hlen = ((size_t)d[start + 1] + 1) * 8;
            }
            proto = nxt;
            start += hlen;
        }
    } else {
        return why(c, "non-ip");
    }
    if (proto == 6) return tcp(c, d, n, start, end, src, dst, alen);
    if (depth < MAX_DEPTH) {
        if (proto == 17) return udp(c, d, n, start, depth);
        if (proto == 4 || proto == 41) return ip(c, d, n, start, depth + 1); /* IP-in-IP, 6in4 */
        if (proto == 47) return gre(c, d, n, start, depth);
    }
    if (proto == 17) return why(c, "udp");
    if (proto == 1 || proto == 58) return why(c, "icmp");
    snprintf(c->why, 64, "ip-proto-%u", proto);
    return 0;
}

static int ethertype(dec *c, unsigned et, const uint8_t *d, size_t n, size_t off, int depth) {
    while (et == 0x8100 || et == 0x88A8 || et == 0x9100) { /* 802.1Q / QinQ */
        if (n < off + 4) return why(c, "short");
        et = be16(d + off + 2);
        off += 4;
    }
    if (et == 0x0800 || et == 0x86DD) return ip(c, d, n, off, depth);
    if (et == 0x8847 || et == 0x8848) { /* MPLS: labels until bottom of stack */
        while (off + 4 <= n) {
            int bos = d[off + 2] & 1;
            off += 4;
            if (bos) return ip(c, d, n, off, depth);
        }
        return why(c, "short");
    }
    if (et == 0x8864) { /* PPPoE session: 6-byte header, then the PPP protocol */
        if (n < off + 8) return why(c, "short");
        unsigned proto;
        size_t start;
        if (d[off + 6] & 1) { proto = d[off + 6]; start = off + 7; } /* RFC 1661 6.5 */
        else { proto = be16(d + off + 6); start = off + 8; }
        if (proto == 0x21 || proto == 0x57) return ip(c, d, n, start, depth);
        return why(c, "non-ip");
    }
    if (et == 0x0806) return why(c, "arp");
    return why(c, "non-ip");
}

static int null_link(dec *c, const uint8_t *d, size_t n) {
    if (n < 5) return why(c, "short");
    uint32_t fam = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
    if (fam > 0xFFFF) fam = (uint32_t)d[3] | (uint32_t)d[2] << 8; /* the other byte order */
    if (fam == 2 || fam == 24 || fam == 28 || fam == 30) return ip(c, d, n, 4, 0);
    return why(c, "non-ip");
}

static int nflog(dec *c, const uint8_t *d, size_t n) {
    size_t p = 4;
    while (p + 4 <= n) {
        unsigned tlen = le16(d + p), ttype = le16(d + p + 2);
        if (tlen < 4) return why(c, "corrupt-nflog");
        if (ttype == 9) { /* NFULA_PAYLOAD: data[p + 4 : p + tlen] */
            size_t stop = p + tlen < n ? p + tlen : n;
            return ip(c, d + p + 4, stop - (p + 4), 0, 0);
        }
        p += (tlen + 3) & ~3u;
    }
    return why(c, "non-ip");
}

static int radiotap(dec *c, const uint8_t *d, size_t n) {
    if (n < 4) return why(c, "short");
    size_t p = le16(d + 2);
    if (n < p + 24) return why(c, "short");
    uint8_t fc0 = d[p], fc1 = d[p + 1];
    if (((fc0 >> 2) & 3) != 2) return why(c, "non-ip"); /* not a data frame */
    size_t hdr = (fc1 & 3) == 3 ? 30 : 24;
    if (fc0 & 0x80) hdr += 2; /* QoS data */
    size_t q = p + hdr;
    if (q + 6 > n || memcmp(d + q, "\xaa\xaa\x03\x00\x00\x00", 6) != 0) return why(c, "non-ip");
    if (n < q + 8) return why(c, "short");
    return ethertype(c, be16(d + q + 6), d, n, q + 8, 0);
}

int st_decode_ex(int linktype, const uint8_t *data, uint32_t caplen, long long origlen,
                 st_segment *seg, char why_[64], long long *missing) {
    dec c = {seg, why_, 0, origlen};
    size_t n = caplen;
    int r;
    switch (linktype) {
    case 1: r = ether(&c, data, n, 0, 0); break;
    case 101: case 228: case 229: case 12: case 14: r = ip(&c, data, n, 0, 0); break;
    case 113: /* Linux cooked v1: protocol at 14 */
        r = n >= 16 ? ethertype(&c, be16(data + 14), data, n, 16, 0) : why(&c, "short");
        break;
    case 276: /* Linux cooked v2: protocol at 0 */
        r = n >= 20 ? ethertype(&c, be16(data), data, n, 20, 0) : why(&c, "short");
        break;
    case 0: case 108: r = null_link(&c, data, n); break;
    case 104: /* Cisco HDLC: address, control, protocol */
        r = n >= 4 ? ethertype(&c, be16(data + 2), data, n, 4, 0) : why(&c, "short");
        break;
    case 239: r = nflog(&c, data, n); break;
    case 127: r = radiotap(&c, data, n); break;
    default: {
        char buf[32];
        snprintf(why_, 64, "linktype:%s", st_linktype_name(linktype, buf));
        r = 0;
    }
    }
    if (missing) *missing = c.missing;
    return r;
}

int st_decode(int linktype, const uint8_t *data, uint32_t caplen, uint32_t origlen,
              st_segment *seg, char why_[64]) {
    return st_decode_ex(linktype, data, caplen, origlen, seg, why_, NULL);
}
