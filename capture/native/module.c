/* The Python face of the native engine: capture._native.Engine (capture.extract.Extractor's
 * twin fed with raw capture bytes), plus test hooks that expose each part on its own:
 * decode (layers.decode), Decoder/read_records (pcapfile.CaptureDecoder). */
#include "native.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- exceptions: the Python ones, so callers catch one kind ---------------------------- */

static PyObject *exc_class(const char *name) {
    PyObject *mod = PyImport_ImportModule("capture.pcapfile");
    if (!mod) return NULL;
    PyObject *cls = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    return cls;
}

static void raise_named(const char *name, const char *msg) {
    PyObject *cls = exc_class(name);
    if (!cls) return;
    PyErr_SetString(cls, msg);
    Py_DECREF(cls);
}

/* ---- linktype run counter (Extractor.linktypes) ----------------------------------------- */

typedef struct { int lt; long long n; } lt_count;

typedef struct {
    lt_count *v; size_t n, cap;
    int last; size_t last_i;
} lt_counter;

static void lt_add(lt_counter *c, int lt, long long k) {
    if (c->n && c->last == lt) { c->v[c->last_i].n += k; return; }
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].lt == lt) { c->v[i].n += k; c->last = lt; c->last_i = i; return; }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 4;
        lt_count *p = realloc(c->v, cap * sizeof *p);
        if (!p) { fprintf(stderr, "shadowtap: out of memory\n"); abort(); }
        c->v = p; c->cap = cap;
    }
    c->v[c->n].lt = lt; c->v[c->n].n = k;
    c->last = lt; c->last_i = c->n;
    c->n++;
}

static int lt_cmp(const void *a, const void *b) {
    int x = ((const lt_count *)a)->lt, y = ((const lt_count *)b)->lt;
    return (x > y) - (x < y);
}

/* ---- Engine ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int ready;
    st_ctx ctx;
    st_reasm *reasm;
    st_reader *reader;
    long long packets;
    lt_counter lts;
    st_counter not_tcp;
    PyObject *input_error; /* str or NULL */
    int failed;            /* this input met corruption: a further feed raises CaptureError */
    /* the last not-TCP reason, to skip the counter's string search in a run of them */
    char last_why[64];
    st_counter_entry *last_entry;
} Engine;

static void count_not_tcp(Engine *e, const char *why) {
    if (e->last_entry && strcmp(e->last_why, why) == 0) { e->last_entry->count++; return; }
    st_counter_add(&e->not_tcp, why, 1);
    for (st_counter_entry *x = e->not_tcp.head; x; x = x->next)
        if (strcmp(x->key, why) == 0) { e->last_entry = x; break; }
    strcpy(e->last_why, why);
}

static void on_record(void *arg, const st_record *rec) {
    Engine *e = arg;
    e->packets++;
    lt_add(&e->lts, rec->linktype, 1);
    st_segment seg;
    char why[64];
    if (st_decode(rec->linktype, rec->data, rec->caplen, rec->origlen, &seg, why))
        st_reasm_segment(e->reasm, rec->ts, &seg);
    else
        count_not_tcp(e, why);
}

static PyObject *take_out(Engine *e) {
    PyObject *b = PyBytes_FromStringAndSize(e->ctx.out.data ? e->ctx.out.data : "", (Py_ssize_t)e->ctx.out.len);
    e->ctx.out.len = 0;
    return b;
}

static int Engine_init(Engine *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ports", "servers", "max_body", "idle_timeout", NULL};
    PyObject *ports = NULL, *servers = NULL;
    long long max_body = 64LL << 20;
    double idle = 300.0;
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Engine already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OOLd", kwlist, &ports, &servers, &max_body, &idle))
        return -1;
    PyObject *pl = ports ? PySequence_Fast(ports, "ports must be a sequence of ints") : PyList_New(0);
    if (!pl) return -1;
    PyObject *sl = servers ? PySequence_Fast(servers, "servers must be a sequence of (bytes, int)") : PyList_New(0);
    if (!sl) { Py_DECREF(pl); return -1; }
    Py_ssize_t np = PySequence_Fast_GET_SIZE(pl), ns = PySequence_Fast_GET_SIZE(sl);
    uint16_t *pv = calloc((size_t)np + 1, sizeof *pv);
    st_ctx tmp;
    __typeof__(tmp.servers) sv = calloc((size_t)ns + 1, sizeof *sv);
    if (!pv || !sv) { free(pv); free(sv); Py_DECREF(pl); Py_DECREF(sl); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < np; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(pl, i));
        if (v == -1 && PyErr_Occurred()) goto fail;
        if (v < 0 || v > 65535) { PyErr_SetString(PyExc_ValueError, "port out of range"); goto fail; }
        pv[i] = (uint16_t)v;
    }
    for (Py_ssize_t i = 0; i < ns; i++) {
        const char *a;
        Py_ssize_t alen;
        long port;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sl, i), "y#l", &a, &alen, &port)) goto fail;
        if (alen != 4 && alen != 16) { PyErr_SetString(PyExc_ValueError, "server address must be 4 or 16 bytes"); goto fail; }
        memcpy(sv[i].addr, a, (size_t)alen);
        sv[i].alen = (uint8_t)alen;
        sv[i].port = (uint16_t)port;
    }
    Py_DECREF(pl);
    Py_DECREF(sl);
    st_ctx_init(&self->ctx);
    self->ctx.ports = pv; self->ctx.nports = (size_t)np;
    self->ctx.servers = sv; self->ctx.nservers = (size_t)ns;
    self->ctx.max_body = max_body;
    self->reasm = st_reasm_new(&self->ctx, idle);
    self->reader = st_reader_new();
    st_counter_init(&self->not_tcp);
    self->ready = 1;
    return 0;
fail:
    free(pv); free(sv); Py_DECREF(pl); Py_DECREF(sl);
    return -1;
}

static void Engine_dealloc(Engine *self) {
    if (self->ready) {
        st_reasm_free(self->reasm);
        /* ports and servers are ours: whether or not st_ctx_free frees them, free them once */
        void *pv = self->ctx.ports, *sv = self->ctx.servers;
        self->ctx.ports = NULL; self->ctx.nports = 0;
        self->ctx.servers = NULL; self->ctx.nservers = 0;
        st_ctx_free(&self->ctx);
        free(pv); free(sv);
        st_reader_free(self->reader);
        st_counter_free(&self->not_tcp);
        free(self->lts.v);
    }
    Py_XDECREF(self->input_error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define READY(self) do { if (!(self)->ready) { PyErr_SetString(PyExc_RuntimeError, "Engine not initialised"); return NULL; } } while (0)

static PyObject *Engine_new_input(Engine *self, PyObject *Py_UNUSED(ignored)) {
    READY(self);
    st_reader_free(self->reader);
    self->reader = st_reader_new();
    Py_CLEAR(self->input_error);
    self->failed = 0;
    Py_RETURN_NONE;
}

static PyObject *Engine_feed(Engine *self, PyObject *arg) {
    READY(self);
    if (self->failed) {
        raise_named("CaptureError", PyUnicode_AsUTF8(self->input_error));
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int rc = st_reader_feed(self->reader, view.buf, (size_t)view.len, on_record, self);
    PyBuffer_Release(&view);
    if (rc == -1) {
        raise_named("NotACapture", st_reader_error(self->reader));
        return NULL;
    }
    if (rc == -2) {
        self->failed = 1;
        Py_XSETREF(self->input_error, PyUnicode_FromString(st_reader_error(self->reader)));
        if (!self->input_error) return NULL;
    }
    return take_out(self);
}

static int fill_segment(PyObject *t, st_segment *s) {
    PyObject *src, *dst, *payload;
    unsigned long sport, dport, seq, ack, flags;
    long long missing;
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 9) {
        PyErr_SetString(PyExc_TypeError, "a segment is a 9-tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(t, "SSkkkkkSL", &src, &dst, &sport, &dport, &seq, &ack, &flags, &payload, &missing))
        return -1;
    Py_ssize_t al = PyBytes_GET_SIZE(src);
    if ((al != 4 && al != 16) || PyBytes_GET_SIZE(dst) != al) {
        PyErr_SetString(PyExc_ValueError, "addresses must be 4 or 16 bytes, both the same");
        return -1;
    }
    memcpy(s->src, PyBytes_AS_STRING(src), (size_t)al);
    memcpy(s->dst, PyBytes_AS_STRING(dst), (size_t)al);
    s->alen = (uint8_t)al;
    s->sport = (uint16_t)sport; s->dport = (uint16_t)dport;
    s->seq = (uint32_t)seq; s->ack = (uint32_t)ack;
    s->flags = (uint8_t)flags;
    s->payload = (const uint8_t *)PyBytes_AS_STRING(payload);
    s->len = (uint32_t)PyBytes_GET_SIZE(payload);
    s->missing = (uint32_t)missing;
    return 0;
}

static PyObject *Engine_feed_segments(Engine *self, PyObject *items) {
    READY(self);
    PyObject *seq = PySequence_Fast(items, "feed_segments wants a list of (ts, linktype, segment)");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        double ts;
        int lt;
        PyObject *seg;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "diO", &ts, &lt, &seg)) goto fail;
        self->packets++;
        lt_add(&self->lts, lt, 1);
        if (PyUnicode_Check(seg)) {
            const char *why = PyUnicode_AsUTF8(seg);
            if (!why) goto fail;
            if (strlen(why) >= 64) { PyErr_SetString(PyExc_ValueError, "reason too long"); goto fail; }
            count_not_tcp(self, why);
        } else {
            st_segment s;
            if (fill_segment(seg, &s) < 0) goto fail;
            st_reasm_segment(self->reasm, ts, &s);
        }
    }
    Py_DECREF(seq);
    return take_out(self);
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Engine_finish(Engine *self, PyObject *Py_UNUSED(ignored)) {
    READY(self);
    st_reasm_flush(self->reasm);
    return take_out(self);
}

/* dict(sorted(counter.items())) */
static int cmp_entry(const void *a, const void *b) {
    return strcmp((*(st_counter_entry *const *)a)->key, (*(st_counter_entry *const *)b)->key);
}

static PyObject *sorted_dict(const st_counter *c) {
    PyObject *d = PyDict_New();
    if (!d || !c->size) return d;
    st_counter_entry **v = malloc(c->size * sizeof *v);
    if (!v) { Py_DECREF(d); return PyErr_NoMemory(); }
    size_t n = 0;
    for (st_counter_entry *e = c->head; e; e = e->next) v[n++] = e;
    qsort(v, n, sizeof *v, cmp_entry);
    for (size_t i = 0; i < n; i++) {
        PyObject *val = PyLong_FromLongLong(v[i]->count);
        if (!val || PyDict_SetItemString(d, v[i]->key, val) < 0) {
            Py_XDECREF(val); Py_DECREF(d); free(v); return NULL;
        }
        Py_DECREF(val);
    }
    free(v);
    return d;
}

static int set_ll(PyObject *d, const char *k, long long v) {
    PyObject *o = PyLong_FromLongLong(v);
    if (!o) return -1;
    int r = PyDict_SetItemString(d, k, o);
    Py_DECREF(o);
    return r;
}

static int set_obj(PyObject *d, const char *k, PyObject *o) { /* steals o */
    if (!o) return -1;
    int r = PyDict_SetItemString(d, k, o);
    Py_DECREF(o);
    return r;
}

static PyObject *Engine_counts(Engine *self, PyObject *Py_UNUSED(ignored)) {
    READY(self);
    const st_tcp_stats *st = st_reasm_stats(self->reasm);
    st_ctx *ctx = &self->ctx;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    PyObject *lts = PyDict_New();
    if (!lts) goto fail;
    lt_count *sorted = malloc((self->lts.n + 1) * sizeof *sorted);
    if (!sorted) { Py_DECREF(lts); PyErr_NoMemory(); goto fail; }
    memcpy(sorted, self->lts.v, self->lts.n * sizeof *sorted);
    qsort(sorted, self->lts.n, sizeof *sorted, lt_cmp);
    for (size_t i = 0; i < self->lts.n; i++) {
        char buf[32];
        if (set_ll(lts, st_linktype_name(sorted[i].lt, buf), sorted[i].n) < 0) {
            free(sorted); Py_DECREF(lts); goto fail;
        }
    }
    free(sorted);
    PyObject *tcp = PyDict_New();
    if (!tcp) { Py_DECREF(lts); goto fail; }
    if (set_ll(tcp, "reused", st->reused) < 0 || set_ll(tcp, "retransmissions", st->retransmissions) < 0
        || set_ll(tcp, "overlap_conflicts", st->overlap_conflicts) < 0 || set_ll(tcp, "gaps", st->gaps) < 0
        || set_ll(tcp, "gap_bytes", st->gap_bytes) < 0
        || set_ll(tcp, "ignored_no_connection", st->ignored_no_connection) < 0
        || set_ll(tcp, "expired", st->expired) < 0) {
        Py_DECREF(lts); Py_DECREF(tcp); goto fail;
    }
    if (set_ll(d, "packets", self->packets) < 0
        || set_obj(d, "packets_by_linktype", lts) < 0
        || set_obj(d, "not_tcp", sorted_dict(&self->not_tcp)) < 0
        || set_ll(d, "tcp_connections", st->connections) < 0
        || set_ll(d, "http_connections", ctx->http_connections) < 0
        || set_obj(d, "non_http_connections", sorted_dict(&ctx->non_http)) < 0
        || set_ll(d, "exchanges", ctx->exchanges) < 0
        || set_obj(d, "exchanges_by_flag", sorted_dict(&ctx->flags)) < 0
        || set_ll(d, "requests_without_response", st_counter_get(&ctx->flags, "no_response")) < 0
        || set_ll(d, "responses_without_request", st_counter_get(&ctx->flags, "no_request")) < 0
        || set_obj(d, "parse_errors", sorted_dict(&ctx->parse_errors)) < 0
        || set_ll(d, "bytes_skipped_resync", ctx->skipped_bytes) < 0
        || set_obj(d, "tcp", tcp) < 0)
        goto fail;
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

static PyObject *Engine_get_records(Engine *self, void *Py_UNUSED(c)) {
    READY(self);
    return PyLong_FromLongLong(st_reader_records(self->reader));
}
static PyObject *Engine_get_unknown(Engine *self, void *Py_UNUSED(c)) {
    READY(self);
    return PyLong_FromLongLong(st_reader_unknown_blocks(self->reader));
}
static PyObject *Engine_get_leftover(Engine *self, void *Py_UNUSED(c)) {
    READY(self);
    return PyLong_FromSize_t(st_reader_leftover(self->reader));
}
static PyObject *Engine_get_error(Engine *self, void *Py_UNUSED(c)) {
    if (!self->input_error) Py_RETURN_NONE;
    return Py_NewRef(self->input_error);
}
static PyObject *Engine_get_exchanges(Engine *self, void *Py_UNUSED(c)) {
    READY(self);
    return PyLong_FromLongLong(self->ctx.exchanges);
}
static PyObject *Engine_get_open(Engine *self, void *Py_UNUSED(c)) {
    READY(self);
    return PyLong_FromSize_t(st_reasm_open(self->reasm));
}

static PyMethodDef Engine_methods[] = {
    {"new_input", (PyCFunction)Engine_new_input, METH_NOARGS, "A new capture stream begins."},
    {"feed", (PyCFunction)Engine_feed, METH_O, "Decode capture bytes; return the JSON lines completed."},
    {"feed_segments", (PyCFunction)Engine_feed_segments, METH_O,
     "Test hook: feed (ts, linktype, layers.decode result) items; return the JSON lines completed."},
    {"finish", (PyCFunction)Engine_finish, METH_NOARGS, "End of all input; return the JSON lines it completes."},
    {"counts", (PyCFunction)Engine_counts, METH_NOARGS, "Extractor.counts()"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"input_records", (getter)Engine_get_records, NULL, "records of the current input", NULL},
    {"input_unknown_blocks", (getter)Engine_get_unknown, NULL, "pcapng blocks skipped in the current input", NULL},
    {"input_leftover", (getter)Engine_get_leftover, NULL, "bytes of an incomplete last record", NULL},
    {"input_error", (getter)Engine_get_error, NULL, "the current input's corruption, or None", NULL},
    {"exchanges", (getter)Engine_get_exchanges, NULL, "JSON lines handed out so far, in all", NULL},
    {"open_connections", (getter)Engine_get_open, NULL, "connections still open", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._native.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine(ports, servers, max_body, idle_timeout): capture bytes in, JSON lines out.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

/* ---- Decoder: pcapfile.CaptureDecoder, for the tests ----------------------------------- */

typedef struct {
    PyObject_HEAD
    st_reader *r;
    PyObject *out; /* list being filled during a feed */
    int err;
} Decoder;

static void on_record_py(void *arg, const st_record *rec) {
    Decoder *d = arg;
    if (d->err) return;
    PyObject *t = Py_BuildValue("(diy#I)", rec->ts, rec->linktype, (const char *)rec->data,
                                (Py_ssize_t)rec->caplen, rec->origlen);
    if (!t || PyList_Append(d->out, t) < 0) d->err = 1;
    Py_XDECREF(t);
}

static int Decoder_init(Decoder *self, PyObject *args, PyObject *kw) {
    if (!PyArg_ParseTuple(args, "")) return -1;
    st_reader_free(self->r);
    self->r = st_reader_new();
    return 0;
}

static void Decoder_dealloc(Decoder *self) {
    st_reader_free(self->r);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Decoder_feed(Decoder *self, PyObject *arg) {
    if (!self->r) { PyErr_SetString(PyExc_RuntimeError, "Decoder not initialised"); return NULL; }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    self->out = PyList_New(0);
    if (!self->out) { PyBuffer_Release(&view); return NULL; }
    self->err = 0;
    int rc = st_reader_feed(self->r, view.buf, (size_t)view.len, on_record_py, self);
    PyBuffer_Release(&view);
    PyObject *out = self->out;
    self->out = NULL;
    if (self->err) { Py_DECREF(out); return NULL; }
    if (rc == -1 || (rc == -2 && PyList_GET_SIZE(out) == 0)) {
        Py_DECREF(out);
        raise_named(rc == -1 ? "NotACapture" : "CaptureError", st_reader_error(self->r));
        return NULL;
    }
    return out;
}

static PyObject *Decoder_leftover(Decoder *self, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromSize_t(self->r ? st_reader_leftover(self->r) : 0);
}

static PyObject *Decoder_get_records(Decoder *self, void *Py_UNUSED(c)) {
    return PyLong_FromLongLong(self->r ? st_reader_records(self->r) : 0);
}
static PyObject *Decoder_get_unknown(Decoder *self, void *Py_UNUSED(c)) {
    return PyLong_FromLongLong(self->r ? st_reader_unknown_blocks(self->r) : 0);
}
/* CaptureDecoder.error: set once corruption stopped decoding after some records. */
static PyObject *Decoder_get_error(Decoder *self, void *Py_UNUSED(c));

static PyMethodDef Decoder_methods[] = {
    {"feed", (PyCFunction)Decoder_feed, METH_O, "CaptureDecoder.feed"},
    {"leftover", (PyCFunction)Decoder_leftover, METH_NOARGS, "CaptureDecoder.leftover"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Decoder_getset[] = {
    {"records", (getter)Decoder_get_records, NULL, NULL, NULL},
    {"unknown_blocks", (getter)Decoder_get_unknown, NULL, NULL, NULL},
    {"error", (getter)Decoder_get_error, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._native.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Test hook: pcapfile.CaptureDecoder in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
    .tp_getset = Decoder_getset,
};

static PyObject *Decoder_get_error(Decoder *self, void *Py_UNUSED(c)) {
    if (!self->r || !st_reader_failed(self->r)) Py_RETURN_NONE;
    return PyUnicode_FromString(st_reader_error(self->r));
}

/* ---- module functions ------------------------------------------------------------------ */

static PyObject *segment_tuple(const st_segment *s, long long missing) {
    return Py_BuildValue("(y#y#IIkkBy#L)", (const char *)s->src, (Py_ssize_t)s->alen,
                         (const char *)s->dst, (Py_ssize_t)s->alen, (unsigned)s->sport,
                         (unsigned)s->dport, (unsigned long)s->seq, (unsigned long)s->ack,
                         s->flags, (const char *)s->payload, (Py_ssize_t)s->len, missing);
}

static PyObject *mod_decode(PyObject *Py_UNUSED(m), PyObject *args) {
    int lt;
    Py_buffer view;
    long long origlen;
    if (!PyArg_ParseTuple(args, "iy*L", &lt, &view, &origlen)) return NULL;
    if ((unsigned long long)view.len > 0xFFFFFFFFull) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "frame too large");
        return NULL;
    }
    st_segment seg;
    char why[64];
    long long missing = 0;
    PyObject *r;
    if (st_decode_ex(lt, view.buf, (uint32_t)view.len, origlen, &seg, why, &missing))
        r = segment_tuple(&seg, missing);
    else
        r = PyUnicode_FromString(why);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *mod_read_records(PyObject *Py_UNUSED(m), PyObject *arg) {
    Decoder *d = (Decoder *)PyObject_CallNoArgs((PyObject *)&DecoderType);
    if (!d) return NULL;
    PyObject *r = Decoder_feed(d, arg);
    Py_DECREF(d);
    return r;
}

static PyObject *mod_linktype_name(PyObject *Py_UNUSED(m), PyObject *arg) {
    int lt = PyLong_AsLong(arg) ;
    if (lt == -1 && PyErr_Occurred()) return NULL;
    char buf[32];
    return PyUnicode_FromString(st_linktype_name(lt, buf));
}

static PyObject *mod_float_repr(PyObject *Py_UNUSED(m), PyObject *arg) {
    double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred()) return NULL;
    st_buf b;
    st_buf_init(&b);
    st_buf_put_double(&b, v);
    PyObject *r = PyUnicode_FromStringAndSize(b.data, (Py_ssize_t)b.len);
    st_buf_free(&b);
    return r;
}

static PyMethodDef mod_methods[] = {
    {"float_repr", mod_float_repr, METH_O, "Test hook: st_buf_put_double, which must be repr(float)."},
    {"decode", mod_decode, METH_VARARGS, "Test hook: layers.decode(linktype, data, origlen) in C."},
    {"read_records", mod_read_records, METH_O, "Test hook: CaptureDecoder().feed(data) in C."},
    {"linktype_name", mod_linktype_name, METH_O, "layers.linktype_name in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "capture._native",
    "shadowtap's native extraction engine (capture/native/*.c): see native.h.", -1, mod_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&EngineType) < 0 || PyType_Ready(&DecoderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0
        || PyModule_AddObjectRef(m, "Decoder", (PyObject *)&DecoderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
