/* shadowtap's native extraction engine: the internal interfaces between its parts.
 *
 * The engine is a port of the pure-Python extraction core (capture/pcapfile.py, layers.py,
 * tcp.py, http1.py, pairing.py, exchange.json_line) to C, for the one job whose speed is a
 * target: `shadowtap extract ... --jsonl`. The Python modules are the specification: the
 * native engine must produce byte-identical JSON lines, in the same order, and the same
 * manifest counts (tests/capture/test_native.py holds the two engines to that).
 *
 * Parts, one file each, with these interfaces:
 *   util.c     growable buffers, string counters, JSON string/float output, SHA-1
 *   pcap.c     capture files (pcap, pcapng) -> records            (port of pcapfile.py)
 *   layers.c   one record -> a TCP segment, or why not             (port of layers.py)
 *   tcp.c      segments -> per-connection ordered byte streams    (port of tcp.py)
 *   http1.c    one direction's bytes -> HTTP messages             (port of http1.py,
 *              message.py's Message without headers and bodies)
 *   pairing.c  a connection's messages -> exchanges -> JSON lines (port of pairing.py,
 *              exchange.py's json_line)
 *   module.c   the Python type capture._native.Engine             (glue, counts)
 *
 * Everything runs with the GIL held, single-threaded; no part keeps a pointer into a caller's
 * buffer past the call (copy what you keep).
 */
#ifndef SHADOWTAP_NATIVE_H
#define SHADOWTAP_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

/* ---- util.c ---------------------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
} st_buf;

void st_buf_init(st_buf *b);
void st_buf_free(st_buf *b);
void st_buf_reserve(st_buf *b, size_t extra); /* aborts the process on out-of-memory */
void st_buf_put(st_buf *b, const void *p, size_t n);
void st_buf_puts(st_buf *b, const char *s);
void st_buf_putc(st_buf *b, char c);
void st_buf_put_i64(st_buf *b, long long v);     /* decimal, like Python's repr(int) */
void st_buf_put_u64(st_buf *b, unsigned long long v);
void st_buf_put_double(st_buf *b, double v);      /* exactly Python's repr(float) */
/* JSON string exactly as json.encoder.encode_basestring_ascii would write the Python str
 * bytes.decode("latin-1") (quotes included): bytes >= 0x80 become \u00XX. */
void st_buf_json_latin1(st_buf *b, const uint8_t *s, size_t n);
void st_buf_consume(st_buf *b, size_t n);         /* drop the first n bytes */

/* A string -> count map (manifest counters keyed by reason or flag name). Keys are copied. */
typedef struct st_counter_entry {
    char *key;
    long long count;
    struct st_counter_entry *next;
} st_counter_entry;

typedef struct {
    st_counter_entry *head; /* insertion order; module.c sorts when it builds the dict */
    size_t size;
} st_counter;

void st_counter_init(st_counter *c);
void st_counter_free(st_counter *c);
void st_counter_add(st_counter *c, const char *key, long long n);
long long st_counter_get(const st_counter *c, const char *key);

/* SHA-1 of data, as 40 lowercase hex characters plus NUL. */
void st_sha1_hex(const uint8_t *data, size_t n, char out[41]);

/* ---- pcap.c ---------------------------------------------------------------------------- */

typedef struct {
    double ts;          /* seconds, computed exactly as pcapfile.py does (same double) */
    int linktype;
    const uint8_t *data;/* valid only during the callback */
    uint32_t caplen;
    uint32_t origlen;
} st_record;

typedef void (*st_record_cb)(void *arg, const st_record *rec);

typedef struct st_reader st_reader; /* one capture stream's incremental decoder (CaptureDecoder) */

st_reader *st_reader_new(void);
void st_reader_free(st_reader *r);
/* Decode every whole record `data` completes (keeping the remainder), calling cb for each.
 * Returns 0, or -1 when the bytes are not a capture at all (NotACapture: message in
 * st_reader_error), or -2 when corruption was met (records before it were delivered; the
 * message, worded exactly as pcapfile.py's CaptureError, is in st_reader_error). */
int st_reader_feed(st_reader *r, const uint8_t *data, size_t n, st_record_cb cb, void *arg);
const char *st_reader_error(const st_reader *r);
long long st_reader_records(const st_reader *r);
long long st_reader_unknown_blocks(const st_reader *r);
size_t st_reader_leftover(const st_reader *r);
int st_reader_failed(const st_reader *r); /* CaptureDecoder.error is set: feeds return -2 */

/* ---- layers.c -------------------------------------------------------------------------- */

#define ST_FIN 0x01
#define ST_SYN 0x02
#define ST_RST 0x04
#define ST_PSH 0x08
#define ST_ACK 0x10

typedef struct {
    uint8_t src[16], dst[16];
    uint8_t alen;           /* 4 or 16: bytes used in src and dst */
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    const uint8_t *payload; /* points into the record's data */
    uint32_t len;
    uint32_t missing;       /* payload bytes the snap length cut */
} st_segment;

/* Decode one frame (layers.decode). Returns 1 and fills seg for a TCP segment; else returns 0
 * and writes the reason string layers.decode would return (NUL-terminated) into `why`. */
int st_decode(int linktype, const uint8_t *data, uint32_t caplen, uint32_t origlen,
              st_segment *seg, char why[64]);
const char *st_linktype_name(int linktype, char buf[32]); /* layers.linktype_name */
/* st_decode with Python's origlen (any int) and `missing` as Python computes it: negative when
 * the TCP header claims to reach past a snaplen-cut end (st_segment.missing then holds it
 * modulo 2**32). */
int st_decode_ex(int linktype, const uint8_t *data, uint32_t caplen, long long origlen,
                 st_segment *seg, char why[64], long long *missing);

/* ---- http1.c: one direction's HTTP/1.x parser (http1.Parser) and messages (message.Message) */

/* Message and exchange flags, as bits in their sorted name order, so writing a sorted JSON
 * list is a walk from the lowest bit up. st_flag_names[i] is the name of bit i. */
enum {
    STF_AFTER_GAP, STF_BAD_CHUNK, STF_BAD_CONTENT_LENGTH, STF_BAD_HEADER, STF_BODY_TRUNCATED,
    STF_CONFLICTING_CONTENT_LENGTH, STF_GAP, STF_INCOMPLETE, STF_INTERIM, STF_INTERIM_WITH_BODY,
    STF_MIDSTREAM, STF_NO_REQUEST, STF_NO_RESPONSE, STF_OVERLAP_CONFLICT, STF_PARSE_ERROR,
    STF_SNAPLEN, STF_TE_AND_CL, STF_TRAILERS, STF_UPGRADE, STF_COUNT
};
#define STF(name) (1u << STF_##name)
extern const char *const st_flag_names[STF_COUNT];
int st_flag_bit(const char *name); /* -1 when unknown */

typedef struct {
    char *p;       /* NULL stands for Python's None; otherwise malloc'ed latin-1 bytes + NUL */
    size_t n;
} st_str;

/* One HTTP message (message.Message without headers and bodies: JSON lines need neither).
 * Reference counted: the parser holds the one in progress, an exchange holds its two. */
typedef struct st_msg {
    int refs;
    int is_request;
    st_str method, target, version, reason, error;
    int status;              /* -1 for None */
    long long body_len;      /* body bytes on the wire (de-chunked), kept or not */
    long long stored;        /* body bytes Python would have kept (<= max_body) */
    uint32_t flags;          /* STF bits */
    double t_start, t_end;
    long long ack;
    long long head_end;      /* -1 until known */
    int *interim; size_t ninterim, capinterim;
    int done;
} st_msg;

st_msg *st_msg_new(int is_request, double t_start, long long ack);
void st_msg_incref(st_msg *m);
void st_msg_decref(st_msg *m);      /* frees at zero */
void st_msg_add_interim(st_msg *m, int status);
void st_str_set(st_str *s, const void *p, size_t n);  /* copies; frees the old value */
void st_str_clear(st_str *s);                         /* back to None */
int st_msg_is_interim(const st_msg *m);               /* message.is_interim */

typedef struct st_parser st_parser;

/* on_head returns the method of the request a response answers (NUL-terminated), or NULL
 * (http1.Parser's on_head returning str | None); requests' on_head returns NULL. */
typedef const char *(*st_on_head)(void *owner, st_msg *msg);
typedef void (*st_on_end)(void *owner, st_msg *msg);

st_parser *st_parser_new(int is_request, st_on_head on_head, st_on_end on_end, void *owner,
                         long long max_body);
void st_parser_free(st_parser *p);
void st_parser_feed(st_parser *p, const uint8_t *data, size_t n, double ts, long long ack);
int st_parser_gap(st_parser *p, unsigned long long nbytes, double ts, const char *cause);
void st_parser_eof(st_parser *p, double ts);
void st_parser_kill(st_parser *p);
void st_parser_detach(st_parser *p);  /* forget the message in progress (handed on already) */
void st_parser_resync(st_parser *p);
void st_parser_expect_headless(st_parser *p, double ts);
/* The fields pairing.py reads or writes: */
st_msg *st_parser_msg(st_parser *p);                  /* message in progress, or NULL (borrowed) */
uint32_t *st_parser_pending_flags(st_parser *p);      /* flags for the next message (writable) */
long long st_parser_skipped(const st_parser *p);
st_counter *st_parser_errors(st_parser *p);           /* reason -> count (Parser.errors) */
/* Parser.dropped: returns 1 and fills reason (borrowed until the next parser call), ts and
 * ack when set; st_parser_clear_dropped sets it back to None. */
int st_parser_dropped(st_parser *p, const char **reason, double *ts, long long *ack);
void st_parser_clear_dropped(st_parser *p);

/* ---- what all connections share (pairing.c fills it; module.c reads it) ---------------- */

typedef struct {
    /* options */
    uint16_t *ports; size_t nports;
    struct { uint8_t addr[16]; uint8_t alen; uint16_t port; } *servers; size_t nservers;
    long long max_body;
    /* output: JSON lines (each ending in '\n') of the exchanges handed on, in order */
    st_buf out;
    long long exchanges;
    st_counter flags;            /* exchanges by flag (Extractor.flags) */
    /* Context counters */
    long long http_connections;
    st_counter non_http;         /* reason -> connections */
    st_counter parse_errors;     /* reason -> count */
    long long skipped_bytes;
} st_ctx;

/* ---- tcp.c ----------------------------------------------------------------------------- */

typedef struct {
    uint64_t serial;
    uint8_t src[16], dst[16];
    uint8_t alen;
    uint16_t sport, dport;
    double first_ts, last_ts;
    int syn_dir;                 /* 0, 1, or -1 for None */
    void *sink;                  /* the st_http_conn made by st_sink_new */
    void *priv;                  /* tcp.c's own state */
} st_conn;

typedef struct {
    long long connections, reused, retransmissions, overlap_conflicts, gaps, gap_bytes,
        ignored_no_connection, expired;
} st_tcp_stats;

typedef struct st_reasm st_reasm;

st_reasm *st_reasm_new(st_ctx *ctx, double idle_timeout);
void st_reasm_free(st_reasm *r);
void st_reasm_segment(st_reasm *r, double ts, const st_segment *seg);
void st_reasm_flush(st_reasm *r); /* end of input: finish every open connection */
const st_tcp_stats *st_reasm_stats(const st_reasm *r);
size_t st_reasm_open(const st_reasm *r);

/* ---- pairing.c: the Sink (tcp.Sink), one per connection -------------------------------- */

void *st_sink_new(st_ctx *ctx, const st_conn *conn);
void st_sink_data(void *sink, int d, const uint8_t *payload, size_t n, double ts, long long ack_rel);
/* cause: "gap" or "snaplen" */
void st_sink_gap(void *sink, int d, unsigned long long nbytes, double ts, const char *cause);
void st_sink_eof(void *sink, int d, double ts);
void st_sink_flag(void *sink, int d, const char *name);
void st_sink_close(void *sink, double ts);
void st_sink_free(void *sink); /* after close, when tcp.c forgets the connection */

void st_ctx_init(st_ctx *ctx);
void st_ctx_free(st_ctx *ctx);

#endif
