/* Test wrapper for tests/capture/native_http1_harness.py: exposes capture/native/http1.c as
 * h1wrap.Parser, reporting messages as snapshot dicts. Built by the harness's --build. */
#include "native.h"
#include <string.h>

long long st_parser_offset(const st_parser *p);
int st_parser_state(const st_parser *p);

typedef struct {
    PyObject_HEAD
    st_parser *p;
    PyObject *on_head, *on_end;
    PyObject *method; /* bytes kept for the returned const char* */
    PyObject *ids;    /* dict pointer -> ordinal */
} W;

static PyObject *pystr(const st_str *s) {
    if (!s->p) Py_RETURN_NONE;
    return PyUnicode_DecodeLatin1(s->p, (Py_ssize_t)s->n, NULL);
}

static PyObject *snap(W *w, const st_msg *m) {
    PyObject *key = PyLong_FromVoidPtr((void *)m);
    PyObject *id = PyDict_GetItem(w->ids, key);
    if (!id) { /* kept alive (leaked) so that a pointer names one message */
        st_msg_incref((st_msg *)m);
        id = PyLong_FromSsize_t(PyDict_Size(w->ids)); PyDict_SetItem(w->ids, key, id); Py_DECREF(id); }
    Py_DECREF(key);
    PyObject *flags = PyList_New(0);
    for (int i = 0; i < STF_COUNT; i++)
        if (m->flags & (1u << i)) { PyObject *s = PyUnicode_FromString(st_flag_names[i]); PyList_Append(flags, s); Py_DECREF(s); }
    PyObject *interim = PyList_New(0);
    for (size_t i = 0; i < m->ninterim; i++) { PyObject *v = PyLong_FromLong(m->interim[i]); PyList_Append(interim, v); Py_DECREF(v); }
    PyObject *status = m->status < 0 ? (Py_INCREF(Py_None), Py_None) : PyLong_FromLong(m->status);
    PyObject *d = Py_BuildValue("{s:O,s:i,s:N,s:N,s:N,s:N,s:N,s:N,s:L,s:L,s:N,s:d,s:d,s:L,s:L,s:N,s:O}",
        "id", id, "is_request", m->is_request, "method", pystr(&m->method), "target", pystr(&m->target),
        "version", pystr(&m->version), "status", status, "reason", pystr(&m->reason), "error", pystr(&m->error),
        "body_len", m->body_len, "stored", m->stored, "flags", flags, "t_start", m->t_start, "t_end", m->t_end,
        "ack", m->ack, "head_end", m->head_end, "interim", interim, "done", m->done ? Py_True : Py_False);
    return d;
}

static const char *cb_head(void *owner, st_msg *m) {
    W *w = owner;
    PyObject *s = snap(w, m);
    PyObject *r = PyObject_CallOneArg(w->on_head, s);
    Py_DECREF(s);
    if (!r) { PyErr_Print(); return NULL; }
    Py_CLEAR(w->method);
    if (r == Py_None) { Py_DECREF(r); return NULL; }
    w->method = PyUnicode_AsLatin1String(r);
    Py_DECREF(r);
    if (!w->method) { PyErr_Print(); return NULL; }
    return PyBytes_AS_STRING(w->method);
}

static void cb_end(void *owner, st_msg *m) {
    W *w = owner;
    PyObject *s = snap(w, m);
    PyObject *r = PyObject_CallOneArg(w->on_end, s);
    Py_DECREF(s);
    if (!r) PyErr_Print(); else Py_DECREF(r);
}

static int W_init(W *w, PyObject *args, PyObject *kw) {
    (void)kw;
    int is_request; PyObject *h, *e; long long mb = 64LL * 1024 * 1024;
    if (!PyArg_ParseTuple(args, "pOO|L", &is_request, &h, &e, &mb)) return -1;
    Py_INCREF(h); Py_INCREF(e);
    w->on_head = h; w->on_end = e; w->ids = PyDict_New();
    w->p = st_parser_new(is_request, cb_head, cb_end, w, mb);
    return 0;
}

static void W_dealloc(W *w) {
    if (w->p) st_parser_free(w->p);
    Py_XDECREF(w->on_head); Py_XDECREF(w->on_end); Py_XDECREF(w->method); Py_XDECREF(w->ids);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyObject *W_feed(W *w, PyObject *args) {
    Py_buffer b; double ts; long long ack = -1;
    if (!PyArg_ParseTuple(args, "y*d|L", &b, &ts, &ack)) return NULL;
    /* copy, so reading a caller's buffer after the call would show up under valgrind/asan */
    void *copy = malloc(b.len ? b.len : 1); memcpy(copy, b.buf, b.len);
    st_parser_feed(w->p, copy, (size_t)b.len, ts, ack);
    memset(copy, 0xAA, b.len); free(copy);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}
static PyObject *W_gap(W *w, PyObject *args) {
    unsigned long long n; double ts; const char *cause = "gap";
    if (!PyArg_ParseTuple(args, "Kd|s", &n, &ts, &cause)) return NULL;
    return PyBool_FromLong(st_parser_gap(w->p, n, ts, cause));
}
static PyObject *W_eof(W *w, PyObject *args) { double ts; if (!PyArg_ParseTuple(args, "d", &ts)) return NULL; st_parser_eof(w->p, ts); Py_RETURN_NONE; }
static PyObject *W_kill(W *w, PyObject *a) { (void)a; st_parser_kill(w->p); Py_RETURN_NONE; }
static PyObject *W_resync(W *w, PyObject *a) { (void)a; st_parser_resync(w->p); Py_RETURN_NONE; }
static PyObject *W_eh(W *w, PyObject *args) { double ts; if (!PyArg_ParseTuple(args, "d", &ts)) return NULL; st_parser_expect_headless(w->p, ts); Py_RETURN_NONE; }
static PyObject *W_add_pending(W *w, PyObject *args) { const char *s; if (!PyArg_ParseTuple(args, "s", &s)) return NULL; *st_parser_pending_flags(w->p) |= 1u << st_flag_bit(s); Py_RETURN_NONE; }
static PyObject *W_clear_dropped(W *w, PyObject *a) { (void)a; st_parser_clear_dropped(w->p); Py_RETURN_NONE; }
static PyObject *W_flag_msg(W *w, PyObject *args) { const char *s; if (!PyArg_ParseTuple(args, "s", &s)) return NULL; st_msg *m = st_parser_msg(w->p); if (m) m->flags |= 1u << st_flag_bit(s); return PyBool_FromLong(m != NULL); }
static PyObject *W_state(W *w, PyObject *a) {
    (void)a;
    PyObject *errs = PyDict_New();
    for (st_counter_entry *e = st_parser_errors(w->p)->head; e; e = e->next) { PyObject *v = PyLong_FromLongLong(e->count); PyDict_SetItemString(errs, e->key, v); Py_DECREF(v); }
    const char *r; double ts; long long ack; PyObject *dropped;
    if (st_parser_dropped(w->p, &r, &ts, &ack)) dropped = Py_BuildValue("(sdL)", r, ts, ack); else { Py_INCREF(Py_None); dropped = Py_None; }
    PyObject *pend = PyList_New(0);
    uint32_t pf = *st_parser_pending_flags(w->p);
    for (int i = 0; i < STF_COUNT; i++) if (pf & (1u << i)) { PyObject *s = PyUnicode_FromString(st_flag_names[i]); PyList_Append(pend, s); Py_DECREF(s); }
    st_msg *m = st_parser_msg(w->p);
    PyObject *ms = m ? snap(w, m) : (Py_INCREF(Py_None), Py_None);
    return Py_BuildValue("{s:L,s:N,s:N,s:N,s:L,s:i,s:N}", "skipped", st_parser_skipped(w->p), "errors", errs,
        "dropped", dropped, "pending_flags", pend, "offset", st_parser_offset(w->p), "state", st_parser_state(w->p), "msg", ms);
}

static PyMethodDef W_methods[] = {
    {"feed", (PyCFunction)W_feed, METH_VARARGS, NULL}, {"gap", (PyCFunction)W_gap, METH_VARARGS, NULL},
    {"eof", (PyCFunction)W_eof, METH_VARARGS, NULL}, {"kill", (PyCFunction)W_kill, METH_NOARGS, NULL},
    {"resync", (PyCFunction)W_resync, METH_NOARGS, NULL}, {"expect_headless", (PyCFunction)W_eh, METH_VARARGS, NULL},
    {"add_pending", (PyCFunction)W_add_pending, METH_VARARGS, NULL}, {"clear_dropped", (PyCFunction)W_clear_dropped, METH_NOARGS, NULL},
    {"flag_msg", (PyCFunction)W_flag_msg, METH_VARARGS, NULL}, {"state", (PyCFunction)W_state, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyTypeObject WT = {PyVarObject_HEAD_INIT(NULL, 0) "h1wrap.Parser"};
static PyModuleDef mod = {PyModuleDef_HEAD_INIT, "h1wrap", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_h1wrap(void) {
    WT.tp_basicsize = sizeof(W); WT.tp_flags = Py_TPFLAGS_DEFAULT; WT.tp_new = PyType_GenericNew;
    WT.tp_init = (initproc)W_init; WT.tp_dealloc = (destructor)W_dealloc; WT.tp_methods = W_methods;
    if (PyType_Ready(&WT) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    Py_INCREF(&WT); PyModule_AddObject(m, "Parser", (PyObject *)&WT);
    return m;
}
