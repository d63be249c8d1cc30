/* annal.record._native: the compiled fast path of the RecordBatch v2 codec and of the
 * producer's send(). The pure-Python modules next to this file (_builder.py, _decoder.py) are
 * the reference: every function here produces exactly the bytes or records they do, and
 * tests/unit/test_record_native.py feeds both the same random batches to keep it so.
 *
 * What is here, chosen by profile (docs/benchmarks/sdk.md, codec.md):
 *   BatchBuilder      the producer's open batch: each record is varint-framed into one growing
 *                     buffer as it is appended; build()/build_parts() add the 61-byte header,
 *                     the CRC-32C (the crc32c package, hardware-accelerated) and lz4 (python-lz4)
 *                     through the Python callables handed to setup().
 *   decode_records    a batch's records area into tuples or NamedTuple instances (built with
 *                     the type's tp_alloc, as tuple.__new__ does), or a check-only walk for the
 *                     broker's validation. It never raises for bad data: it returns False and
 *                     the caller runs the Python decoder, which raises the precise error.
 *   Send              Producer.send() as a C callable (vectorcall) whose plain-bytes path does
 *                     the CreateTime clock read, the accumulator lock, the sticky batch, the
 *                     append and the returned future; any other call goes to the Python send().
 *
 * A record (signed zig-zag varints), as drawn in _builder.py:
 *   length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
 *   keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value |
 *   headerCount varint | headers: (keyLength varint, key utf-8, valueLength varint, value)
 *
 * Every read is bounds-checked against the end of the records area; the decoder is fuzzed with
 * truncated and random bytes under valgrind (tests/unit/test_record_native.py, slow).
 * Thread-safety: every function runs holding the GIL; a BatchBuilder is not thread-safe (the
 * accumulator appends under its lock, and send_value takes that lock).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define HEADER_SIZE 61
#define LOG_OVERHEAD 12
#define CRC_START 21
#define MAGIC 2

/* Python callables from setup(): crc32c.crc32c, _compression._compress, _compression._check_codec */
static PyObject *crc32c_fn = NULL;
static PyObject *compress_fn = NULL;
static PyObject *check_codec_fn = NULL;
static PyObject *str_acquire = NULL;
static PyObject *str_release = NULL;
static PyObject *str_builder = NULL;

/* ------------------------------------------------------------------------------ varints */

static inline uint64_t zigzag(int64_t n) { return ((uint64_t)n << 1) ^ (uint64_t)(n >> 63); }

static inline Py_ssize_t uvarint_size(uint64_t u) {
    /* bits needed / 7, rounded up (1 for 0): no loop */
    return (Py_ssize_t)((64 - __builtin_clzll(u | 1) + 6) / 7);
}

static inline Py_ssize_t varint_size(int64_t n) { return uvarint_size(zigzag(n)); }

static inline char *put_varint(char *p, int64_t n) {
    uint64_t u = zigzag(n);
    while (u > 0x7F) { *p++ = (char)((u & 0x7F) | 0x80); u >>= 7; }
    *p++ = (char)u;
    return p;
}

/* Reads a signed zig-zag varint from [*pp, end). Returns 0 and advances *pp, or -1 when the
 * bytes end inside it, it is longer than 10 bytes, or its value needs more than 64 bits (the
 * Python reader returns a big int there: the caller falls back to it). */
static inline int get_varint(const unsigned char **pp, const unsigned char *end, int64_t *out) {
    const unsigned char *p = *pp;
    uint64_t result = 0;
    int shift = 0;
    for (;;) {
        if (p >= end) return -1;
        unsigned char b = *p++;
        if (shift == 63 && (b & 0x7F) > 1) return -1;
        result |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) break;
        shift += 7;
        if (shift > 63) return -1;
    }
    *pp = p;
    *out = (int64_t)((result >> 1) ^ (~(result & 1) + 1));
    return 0;
}

/* -------------------------------------------------------------------------- BatchBuilder */

typedef struct {
    PyObject_HEAD
    int compression;
    Py_ssize_t batch_size;
    int has_base;
    int64_t base_ts;
    int64_t max_ts;
    Py_ssize_t count;
    char *buf;
    Py_ssize_t len;
    Py_ssize_t cap;
    PyObject *joined; /* bytes of the records area for joined_count records, or NULL */
    Py_ssize_t joined_count;
} BuilderObject;

static PyTypeObject BuilderType;

static int builder_reserve(BuilderObject *self, Py_ssize_t extra) {
    if (self->len + extra <= self->cap) return 0;
    /* First allocation: the whole batch_size (the accumulator reserves that much anyway),
     * so a batch is not copied by realloc while it fills. */
    Py_ssize_t cap = self->cap ? self->cap
                               : (self->batch_size < 4096 ? 4096 : self->batch_size > (1 << 20) ? (1 << 20) : self->batch_size);
    while (cap < self->len + extra) {
        if (cap > PY_SSIZE_T_MAX / 2) { PyErr_NoMemory(); return -1; }
        cap *= 2;
    }
    char *nb = PyMem_Realloc(self->buf, (size_t)cap);
    if (nb == NULL) { PyErr_NoMemory(); return -1; }
    self->buf = nb;
    self->cap = cap;
    return 0;
}

static int builder_init(BuilderObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"compression", "batch_size", "base_timestamp_ms", NULL};
    PyObject *compression = NULL, *base = Py_None;
    Py_ssize_t batch_size = 16384;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OnO", kwlist, &compression, &batch_size, &base))
        return -1;
    if (compression == NULL) {
        self->compression = 0;
    } else {
        if (check_codec_fn != NULL) {
            PyObject *r = PyObject_CallOneArg(check_codec_fn, compression);
            if (r == NULL) return -1;
            Py_DECREF(r);
        }
        long c = PyLong_AsLong(compression);
        if (c == -1 && PyErr_Occurred()) return -1;
        if (c != 0 && c != 3) {
            PyErr_Format(PyExc_ValueError, "compression codec %ld is not supported", c);
            return -1;
        }
        self->compression = (int)c;
    }
    self->batch_size = batch_size;
    self->has_base = 0;
    if (base != Py_None) {
        long long b = PyLong_AsLongLong(base);
        if (b == -1 && PyErr_Occurred()) return -1;
        self->base_ts = b;
        self->has_base = 1;
    }
    self->max_ts = -1;
    self->count = 0;
    self->len = 0;
    Py_CLEAR(self->joined);
    self->joined_count = 0;
    return 0;
}

static void builder_dealloc(BuilderObject *self) {
    PyMem_Free(self->buf);
    Py_XDECREF(self->joined);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A key, value or header value: NULL for None, else a buffer view (released by the caller). */
static int get_view(PyObject *obj, Py_buffer *view, int *present) {
    *present = 0;
    if (obj == Py_None) return 0;
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) return -1;
    *present = 1;
    return 0;
}

/* Appends one record; returns its offset delta, -1 when it would take a non-empty batch past
 * batch_size, -2 on error (exception set). Same answers and bytes as _builder.BatchBuilder. */
static Py_ssize_t builder_append_record(BuilderObject *self, int64_t ts, PyObject *key, PyObject *value,
                                        PyObject *headers) {
    Py_ssize_t count = self->count;
    if (!self->has_base) {
        self->base_ts = ts;
        self->has_base = 1;
    }
    int64_t tsd;
    if (__builtin_sub_overflow(ts, self->base_ts, &tsd)) {
        PyErr_SetString(PyExc_ValueError, "timestamp delta is outside the signed 64-bit range");
        return -2;
    }
    Py_buffer kv, vv;
    int has_key = 0, has_value = 0;
    PyObject *hseq = NULL;
    PyObject **hitems = NULL;
    Py_ssize_t hcount = 0, result = -2;
    Py_buffer *hviews = NULL;
    const char **hkeys = NULL;
    Py_ssize_t *hklens = NULL;
    int *hhas = NULL;
    Py_ssize_t hdone = 0;

    if (get_view(key, &kv, &has_key) < 0) return -2;
    if (get_view(value, &vv, &has_value) < 0) goto done;
    Py_ssize_t body = 1 + varint_size(tsd) + varint_size(count);
    body += has_key ? varint_size(kv.len) + kv.len : 1;
    body += has_value ? varint_size(vv.len) + vv.len : 1;
    if (headers != NULL && headers != Py_None) {
        int truth = PyObject_IsTrue(headers);
        if (truth < 0) goto done;
        if (truth) {
            hseq = PySequence_Fast(headers, "headers must be a sequence of (str, bytes | None) pairs");
            if (hseq == NULL) goto done;
            hcount = PySequence_Fast_GET_SIZE(hseq);
            hitems = PySequence_Fast_ITEMS(hseq);
        }
    }
    if (hcount) {
        hviews = PyMem_Calloc((size_t)hcount, sizeof(Py_buffer));
        hkeys = PyMem_Calloc((size_t)hcount, sizeof(char *));
        hklens = PyMem_Calloc((size_t)hcount, sizeof(Py_ssize_t));
        hhas = PyMem_Calloc((size_t)hcount, sizeof(int));
        if (!hviews || !hkeys || !hklens || !hhas) { PyErr_NoMemory(); goto done; }
        body += varint_size(hcount);
        for (Py_ssize_t i = 0; i < hcount; i++) {
            PyObject *pair = PySequence_Fast(hitems[i], "a header must be a (key, value) pair");
            if (pair == NULL) goto done;
            if (PySequence_Fast_GET_SIZE(pair) != 2) {
                Py_DECREF(pair);
                PyErr_SetString(PyExc_ValueError, "a header must be a (key, value) pair");
                goto done;
            }
            PyObject *hk = PySequence_Fast_GET_ITEM(pair, 0);
            PyObject *hv = PySequence_Fast_GET_ITEM(pair, 1);
            if (!PyUnicode_CheckExact(hk)) {
                PyErr_Format(PyExc_TypeError, "header key must be str, not %.100s: %R", Py_TYPE(hk)->tp_name, hk);
                Py_DECREF(pair);
                goto done;
            }
            /* The UTF-8 form is cached in the str object, which the headers keep alive. */
            hkeys[i] = PyUnicode_AsUTF8AndSize(hk, &hklens[i]);
            if (hkeys[i] == NULL || get_view(hv, &hviews[i], &hhas[i]) < 0) {
                Py_DECREF(pair);
                goto done;
            }
            hdone = i + 1;
            Py_DECREF(pair);
            body += varint_size(hklens[i]) + hklens[i];
            body += hhas[i] ? varint_size(hviews[i].len) + hviews[i].len : 1;
        }
    } else {
        body += 1;
    }
    Py_ssize_t rec = varint_size(body) + body;
    if (HEADER_SIZE + self->len + rec > self->batch_size && count) {
        result = -1;
        goto done;
    }
    if (builder_reserve(self, rec) < 0) goto done;
    char *p = self->buf + self->len;
    p = put_varint(p, body);
    *p++ = 0;
    p = put_varint(p, tsd);
    p = put_varint(p, count);
    if (has_key) { p = put_varint(p, kv.len); memcpy(p, kv.buf, (size_t)kv.len); p += kv.len; }
    else *p++ = 1;
    if (has_value) { p = put_varint(p, vv.len); memcpy(p, vv.buf, (size_t)vv.len); p += vv.len; }
    else *p++ = 1;
    p = put_varint(p, hcount);
    for (Py_ssize_t i = 0; i < hcount; i++) {
        p = put_varint(p, hklens[i]);
        memcpy(p, hkeys[i], (size_t)hklens[i]);
        p += hklens[i];
        if (hhas[i]) {
            p = put_varint(p, hviews[i].len);
            memcpy(p, hviews[i].buf, (size_t)hviews[i].len);
            p += hviews[i].len;
        } else *p++ = 1;
    }
    self->len += rec;
    self->count = count + 1;
    if (ts > self->max_ts) self->max_ts = ts;
    result = count;
done:
    if (has_key) PyBuffer_Release(&kv);
    if (has_value) PyBuffer_Release(&vv);
    for (Py_ssize_t i = 0; i < hdone; i++)
        if (hhas[i]) PyBuffer_Release(&hviews[i]);
    PyMem_Free(hviews);
    PyMem_Free(hkeys);
    PyMem_Free(hklens);
    PyMem_Free(hhas);
    Py_XDECREF(hseq);
    return result;
}

/* The plain case (null key, no headers, a bytes value): no buffer protocol, no header walk. */
static inline Py_ssize_t builder_append_bytes(BuilderObject *self, int64_t ts, PyObject *value) {
    Py_ssize_t count = self->count;
    if (!self->has_base) {
        self->base_ts = ts;
        self->has_base = 1;
    }
    int64_t tsd;
    if (__builtin_sub_overflow(ts, self->base_ts, &tsd))
        return builder_append_record(self, ts, Py_None, value, NULL);
    Py_ssize_t vlen = PyBytes_GET_SIZE(value);
    Py_ssize_t body = 1 + varint_size(tsd) + uvarint_size((uint64_t)count << 1) + 1 + uvarint_size((uint64_t)vlen << 1) + vlen + 1;
    Py_ssize_t rec = uvarint_size((uint64_t)body << 1) + body;
    if (HEADER_SIZE + self->len + rec > self->batch_size && count) return -1;
    if (self->len + rec > self->cap && builder_reserve(self, rec) < 0) return -2;
    char *p = self->buf + self->len;
    p = put_varint(p, body);
    *p++ = 0;
    if ((uint64_t)tsd < 64) *p++ = (char)(tsd << 1); /* the usual one-byte deltas */
    else p = put_varint(p, tsd);
    p = put_varint(p, count);
    *p++ = 1;
    p = put_varint(p, vlen);
    memcpy(p, PyBytes_AS_STRING(value), (size_t)vlen);
    p += vlen;
    *p = 0;
    self->len += rec;
    self->count = count + 1;
    if (ts > self->max_ts) self->max_ts = ts;
    return count;
}

static int as_int64(PyObject *o, int64_t *out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static PyObject *builder_append(BuilderObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *names[] = {"timestamp_ms", "key", "value", "headers"};
    PyObject *a[4] = {NULL, NULL, NULL, Py_None};
    if (nargs > 4) { PyErr_SetString(PyExc_TypeError, "append() takes at most 4 arguments"); return NULL; }
    for (Py_ssize_t i = 0; i < nargs; i++) a[i] = args[i];
    if (kwnames) {
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(kwnames); j++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, j);
            int k;
            for (k = 0; k < 4; k++)
                if (PyUnicode_CompareWithASCIIString(name, names[k]) == 0) break;
            if (k == 4 || (a[k] != NULL && k < nargs)) {
                PyErr_Format(PyExc_TypeError, "append() got an unexpected keyword argument %R", name);
                return NULL;
            }
            a[k] = args[nargs + j];
        }
    }
    if (!a[0] || !a[1] || !a[2]) { PyErr_SetString(PyExc_TypeError, "append() needs timestamp_ms, key and value"); return NULL; }
    int64_t ts;
    if (as_int64(a[0], &ts) < 0) return NULL;
    Py_ssize_t r;
    if (a[1] == Py_None && a[3] == Py_None && PyBytes_CheckExact(a[2]))
        r = builder_append_bytes(self, ts, a[2]);
    else
        r = builder_append_record(self, ts, a[1], a[2], a[3]);
    if (r == -2) return NULL;
    return PyLong_FromSsize_t(r);
}

static PyObject *builder_append_value(BuilderObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "append_value(timestamp_ms, value)"); return NULL; }
    int64_t ts;
    if (as_int64(args[0], &ts) < 0) return NULL;
    Py_ssize_t r = PyBytes_CheckExact(args[1]) ? builder_append_bytes(self, ts, args[1])
                                              : builder_append_record(self, ts, Py_None, args[1], NULL);
    if (r == -2) return NULL;
    return PyLong_FromSsize_t(r);
}

static inline void put_be(unsigned char *p, uint64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) { p[i] = (unsigned char)(v & 0xFF); v >>= 8; }
}

/* (header bytes with the CRC, records area): _builder._pack_batch's answer. */
static PyObject *builder_pack(BuilderObject *self, int64_t base_offset, int64_t producer_id, int producer_epoch,
                              int base_sequence, int partition_leader_epoch) {
    if (!self->count) {
        PyErr_SetString(PyExc_ValueError, "a record batch needs at least one record");
        return NULL;
    }
    if (crc32c_fn == NULL || compress_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "annal.record._native.setup() was not called");
        return NULL;
    }
    if (self->joined == NULL || self->joined_count != self->count) {
        Py_XSETREF(self->joined, PyBytes_FromStringAndSize(self->buf, self->len));
        if (self->joined == NULL) return NULL;
        self->joined_count = self->count;
    }
    PyObject *payload;
    if (self->compression) {
        payload = PyObject_CallFunction(compress_fn, "Oi", self->joined, self->compression);
        if (payload == NULL) return NULL;
    } else {
        payload = Py_NewRef(self->joined);
    }
    Py_ssize_t plen = PyObject_Length(payload);
    if (plen < 0) { Py_DECREF(payload); return NULL; }
    if (plen > INT32_MAX - (HEADER_SIZE - LOG_OVERHEAD)) {
        Py_DECREF(payload);
        PyErr_SetString(PyExc_OverflowError, "a record batch cannot exceed 2 GiB");
        return NULL;
    }
    PyObject *header = PyBytes_FromStringAndSize(NULL, HEADER_SIZE);
    if (header == NULL) { Py_DECREF(payload); return NULL; }
    unsigned char *h = (unsigned char *)PyBytes_AS_STRING(header);
    put_be(h + 0, (uint64_t)base_offset, 8);
    put_be(h + 8, (uint64_t)(HEADER_SIZE - LOG_OVERHEAD + plen), 4);
    put_be(h + 12, (uint64_t)(int64_t)partition_leader_epoch, 4);
    h[16] = MAGIC;
    put_be(h + 17, 0, 4);
    put_be(h + 21, (uint64_t)self->compression, 2);
    put_be(h + 23, (uint64_t)(self->count - 1), 4);
    put_be(h + 27, (uint64_t)self->base_ts, 8);
    put_be(h + 35, (uint64_t)self->max_ts, 8);
    put_be(h + 43, (uint64_t)producer_id, 8);
    put_be(h + 51, (uint64_t)(int64_t)producer_epoch, 2);
    put_be(h + 53, (uint64_t)(int64_t)base_sequence, 4);
    put_be(h + 57, (uint64_t)self->count, 4);
    PyObject *tail = PyMemoryView_FromMemory((char *)h + CRC_START, HEADER_SIZE - CRC_START, PyBUF_READ);
    PyObject *crc_head = tail ? PyObject_CallOneArg(crc32c_fn, tail) : NULL;
    Py_XDECREF(tail);
    PyObject *crc = crc_head ? PyObject_CallFunctionObjArgs(crc32c_fn, payload, crc_head, NULL) : NULL;
    Py_XDECREF(crc_head);
    if (crc == NULL) { Py_DECREF(header); Py_DECREF(payload); return NULL; }
    unsigned long c = PyLong_AsUnsignedLong(crc);
    Py_DECREF(crc);
    if (c == (unsigned long)-1 && PyErr_Occurred()) { Py_DECREF(header); Py_DECREF(payload); return NULL; }
    put_be(h + 17, (uint64_t)c, 4);
    return Py_BuildValue("(NN)", header, payload);
}

static PyObject *builder_build_parts(BuilderObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"base_offset", "producer_id", "producer_epoch", "base_sequence", NULL};
    long long base_offset = 0, producer_id = -1;
    int producer_epoch = -1, base_sequence = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|L$Lii", kwlist, &base_offset, &producer_id, &producer_epoch,
                                     &base_sequence))
        return NULL;
    if (producer_epoch < -32768 || producer_epoch > 32767) {
        PyErr_SetString(PyExc_OverflowError, "producer_epoch is outside the int16 range");
        return NULL;
    }
    return builder_pack(self, base_offset, producer_id, producer_epoch, base_sequence, -1);
}

static PyObject *builder_build(BuilderObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"base_offset", "producer_id", "producer_epoch", "base_sequence",
                             "partition_leader_epoch", NULL};
    long long base_offset = 0, producer_id = -1;
    int producer_epoch = -1, base_sequence = -1, ple = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|L$Liii", kwlist, &base_offset, &producer_id, &producer_epoch,
                                     &base_sequence, &ple))
        return NULL;
    if (producer_epoch < -32768 || producer_epoch > 32767) {
        PyErr_SetString(PyExc_OverflowError, "producer_epoch is outside the int16 range");
        return NULL;
    }
    PyObject *parts = builder_pack(self, base_offset, producer_id, producer_epoch, base_sequence, ple);
    if (parts == NULL) return NULL;
    PyObject *h = PyTuple_GET_ITEM(parts, 0), *r = PyTuple_GET_ITEM(parts, 1);
    Py_buffer rv;
    if (PyObject_GetBuffer(r, &rv, PyBUF_SIMPLE) < 0) { Py_DECREF(parts); return NULL; }
    PyObject *out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + rv.len);
    if (out != NULL) {
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(h), HEADER_SIZE);
        memcpy(PyBytes_AS_STRING(out) + HEADER_SIZE, rv.buf, (size_t)rv.len);
    }
    PyBuffer_Release(&rv);
    Py_DECREF(parts);
    return out;
}

static PyObject *builder_get_records_count(BuilderObject *self, void *c) { return PyLong_FromSsize_t(self->count); }
static PyObject *builder_get_size(BuilderObject *self, void *c) { return PyLong_FromSsize_t(HEADER_SIZE + self->len); }
static PyObject *builder_get_base(BuilderObject *self, void *c) {
    if (!self->has_base) Py_RETURN_NONE;
    return PyLong_FromLongLong(self->base_ts);
}
static PyObject *builder_get_max(BuilderObject *self, void *c) { return PyLong_FromLongLong(self->max_ts); }
static PyObject *builder_get_compression(BuilderObject *self, void *c) { return PyLong_FromLong(self->compression); }
static PyObject *builder_get_batch_size(BuilderObject *self, void *c) { return PyLong_FromSsize_t(self->batch_size); }

static PyGetSetDef builder_getset[] = {
    {"records_count", (getter)builder_get_records_count, NULL, "Records appended so far.", NULL},
    {"size_in_bytes", (getter)builder_get_size, NULL, "Exact size of the uncompressed batch so far.", NULL},
    {"base_timestamp", (getter)builder_get_base, NULL, "The batch's baseTimestamp (None while unset).", NULL},
    {"max_timestamp", (getter)builder_get_max, NULL, "The largest record timestamp so far (-1 while empty).", NULL},
    {"compression", (getter)builder_get_compression, NULL, "Codec id.", NULL},
    {"batch_size", (getter)builder_get_batch_size, NULL, "Size limit in bytes.", NULL},
    {NULL},
};

static PyMethodDef builder_methods[] = {
    {"append", (PyCFunction)(void (*)(void))builder_append, METH_FASTCALL | METH_KEYWORDS,
     "append(timestamp_ms, key, value, headers=None) -> offset delta, or -1 when full"},
    {"append_value", (PyCFunction)(void (*)(void))builder_append_value, METH_FASTCALL,
     "append_value(timestamp_ms, value): append(timestamp_ms, None, value)"},
    {"build", (PyCFunction)(void (*)(void))builder_build, METH_VARARGS | METH_KEYWORDS,
     "build(base_offset=0, *, producer_id=-1, producer_epoch=-1, base_sequence=-1, partition_leader_epoch=-1)"},
    {"build_parts", (PyCFunction)(void (*)(void))builder_build_parts, METH_VARARGS | METH_KEYWORDS,
     "build_parts(base_offset=0, *, producer_id=-1, producer_epoch=-1, base_sequence=-1) -> (header, records area)"},
    {NULL},
};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "annal.record._native.BatchBuilder",
    .tp_basicsize = sizeof(BuilderObject),
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "BatchBuilder(compression=0, batch_size=16384, base_timestamp_ms=None): one RecordBatch v2 "
              "built incrementally, as annal.record._builder.BatchBuilder (same bytes). Not thread-safe.",
    .tp_methods = builder_methods,
    .tp_getset = builder_getset,
    .tp_init = (initproc)builder_init,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------------------- decoding */

/* A length-prefixed byte string: 0 with *out set (a new reference, or NULL for a null
 * string when allow_null), -1 when the Python decoder must decide (it raises there). */
static inline int get_bytes(const unsigned char **pp, const unsigned char *end, PyObject **out, int build) {
    int64_t n;
    if (get_varint(pp, end, &n) < 0) return -1;
    if (n < 0) {
        if (n != -1) return -1;
        *out = NULL;
        return 0;
    }
    if (n > end - *pp) return -1;
    if (build) {
        *out = PyBytes_FromStringAndSize((const char *)*pp, (Py_ssize_t)n);
        if (*out == NULL) return -2;
    } else {
        *out = NULL;
    }
    *pp += n;
    return 0;
}

static PyObject *make_row(PyTypeObject *cls, PyObject *prefix, Py_ssize_t plen) {
    PyObject *row = cls == &PyTuple_Type ? PyTuple_New(plen + 5) : cls->tp_alloc(cls, plen + 5);
    if (row == NULL) return NULL;
    for (Py_ssize_t i = 0; i < plen; i++) PyTuple_SET_ITEM(row, i, Py_NewRef(PyTuple_GET_ITEM(prefix, i)));
    return row;
}

/* decode_records(data, pos, end, count, base_offset, base_timestamp, out, cls, prefix, check_only)
 * -> bool. data: bytes; with check_only, any contiguous buffer (a memoryview of a received
 * request). True: the count records of data[pos:end] were appended to out as
 * cls(*prefix, offset, timestamp, key, value, headers) (check_only: none built, but every
 * record was walked and its offsetDelta is its index). False: out is left as it was and the
 * caller runs the Python decoder, which raises the error (or, for a varint wider than 64
 * bits, decodes it as a big int). */
static PyObject *decode_records_in(const unsigned char *base, Py_ssize_t n, PyObject *const *args,
                                   int check_only);

static PyObject *decode_records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "decode_records takes 10 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    int check_only = PyObject_IsTrue(args[9]);
    if (check_only < 0) return NULL;
    if (PyBytes_CheckExact(data))
        return decode_records_in((const unsigned char *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), args,
                                 check_only);
    /* check_only builds nothing from the data, so any contiguous buffer will do (the broker
     * checks a request's batch where it was received, without copying it into bytes). The
     * GIL is held throughout: nothing can resize the buffer meanwhile. */
    if (!check_only) Py_RETURN_FALSE;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    PyObject *r = decode_records_in((const unsigned char *)view.buf, view.len, args, 1);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *decode_records_in(const unsigned char *base, Py_ssize_t n, PyObject *const *args,
                                   int check_only) {
    PyObject *out = args[6], *clsobj = args[7], *prefix = args[8];
    if (!PyList_Check(out) || !PyType_Check(clsobj) || !PyTuple_Check(prefix)) {
        PyErr_SetString(PyExc_TypeError, "decode_records: out must be a list, cls a type, prefix a tuple");
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)clsobj;
    if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "decode_records: cls must be tuple or a subclass");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t count = PyLong_AsSsize_t(args[3]);
    int64_t base_offset, base_ts;
    if (PyErr_Occurred() || as_int64(args[4], &base_offset) < 0 || as_int64(args[5], &base_ts) < 0) return NULL;
    if (pos < 0 || end > n || pos > end || count < 0) Py_RETURN_FALSE;
    const unsigned char *p = base + pos, *stop = base + end;
    Py_ssize_t plen = PyTuple_GET_SIZE(prefix);
    Py_ssize_t start_len = PyList_GET_SIZE(out);
    int build = !check_only;
    PyObject *last_ts = NULL; /* records of one batch share few timestamps: reuse the int */
    int64_t last_tsd = 0;
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) return NULL;
    int fallback = 0, error = 0;
    int untrack = cls->tp_dictoffset == 0;
    for (Py_ssize_t i = 0; i < plen && untrack; i++) {
        PyObject *f = PyTuple_GET_ITEM(prefix, i); /* the consumer's (topic, partition) */
        untrack = PyUnicode_CheckExact(f) || PyLong_CheckExact(f) || PyBytes_CheckExact(f) || f == Py_None;
    }

    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t ln, tsd, od;
        if (get_varint(&p, stop, &ln) < 0) { fallback = 1; break; }
        const unsigned char *rec_start = p;
        if (p >= stop) { fallback = 1; break; }
        p++; /* attributes: none are defined for v2 records */
        if (get_varint(&p, stop, &tsd) < 0 || get_varint(&p, stop, &od) < 0) { fallback = 1; break; }
        if (check_only && od != i) { fallback = 1; break; }
        PyObject *key = NULL, *value = NULL, *headers = NULL;
        int r = get_bytes(&p, stop, &key, build);
        if (r == 0) r = get_bytes(&p, stop, &value, build);
        int64_t hcount = 0;
        if (r == 0 && get_varint(&p, stop, &hcount) < 0) r = -1;
        if (r == 0 && hcount < 0) r = -1;
        if (r == 0 && build) {
            if (hcount == 0) {
                headers = Py_NewRef(empty);
            } else if (hcount > (stop - p) / 2) {
                r = -1; /* each header takes at least 2 bytes */
            } else {
                headers = PyTuple_New((Py_ssize_t)hcount);
                if (headers == NULL) r = -2;
            }
        } else if (r == 0 && hcount > (stop - p) / 2) {
            r = -1;
        }
        for (int64_t j = 0; r == 0 && j < hcount; j++) {
            const unsigned char *kstart;
            int64_t klen;
            if (get_varint(&p, stop, &klen) < 0 || klen < 0 || klen > stop - p) { r = -1; break; }
            kstart = p;
            p += klen;
            PyObject *hval = NULL;
            r = get_bytes(&p, stop, &hval, build);
            if (r != 0) break;
            PyObject *skey = PyUnicode_DecodeUTF8((const char *)kstart, (Py_ssize_t)klen, "strict");
            if (skey == NULL) {
                Py_XDECREF(hval);
                if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) { PyErr_Clear(); r = -1; }
                else r = -2;
                break;
            }
            if (!build) { Py_DECREF(skey); continue; }
            PyObject *pair = PyTuple_New(2);
            if (pair == NULL) { Py_DECREF(skey); Py_XDECREF(hval); r = -2; break; }
            PyTuple_SET_ITEM(pair, 0, skey);
            PyTuple_SET_ITEM(pair, 1, hval ? hval : Py_NewRef(Py_None));
            PyObject_GC_UnTrack(pair); /* (str, bytes | None): no cycle possible, as above */
            PyTuple_SET_ITEM(headers, (Py_ssize_t)j, pair);
        }
        if (r == 0 && headers != NULL && hcount) PyObject_GC_UnTrack(headers);
        if (r == 0 && p - rec_start != ln) r = -1;
        if (r == 0 && build) {
            int64_t off, ts;
            if (__builtin_add_overflow(base_offset, od, &off) || __builtin_add_overflow(base_ts, tsd, &ts)) {
                r = -1;
            } else {
                PyObject *row = make_row(cls, prefix, plen);
                PyObject *offo = row ? PyLong_FromLongLong(off) : NULL;
                if (offo && (last_ts == NULL || tsd != last_tsd)) {
                    Py_XSETREF(last_ts, PyLong_FromLongLong(ts));
                    last_tsd = tsd;
                }
                if (row == NULL || offo == NULL || last_ts == NULL) {
                    Py_XDECREF(row);
                    Py_XDECREF(offo);
                    r = -2;
                } else {
                    PyTuple_SET_ITEM(row, plen, offo);
                    PyTuple_SET_ITEM(row, plen + 1, Py_NewRef(last_ts));
                    PyTuple_SET_ITEM(row, plen + 2, key ? key : Py_NewRef(Py_None));
                    PyTuple_SET_ITEM(row, plen + 3, value ? value : Py_NewRef(Py_None));
                    PyTuple_SET_ITEM(row, plen + 4, headers);
                    key = value = headers = NULL;
                    /* A record holds only ints, bytes, str, None and tuples of those, and it
                     * is immutable (a tuple without __dict__): it can never be part of a
                     * reference cycle, so the collector need not walk it (CPython untracks
                     * such plain tuples itself, at their first collection; tuple subclasses it
                     * never does). Saves a collector pass over every record of a fetch. */
                    if (untrack) PyObject_GC_UnTrack(row);
                    if (PyList_Append(out, row) < 0) r = -2;
                    Py_DECREF(row);
                }
            }
        }
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(headers);
        if (r == -1) { fallback = 1; break; }
        if (r == -2) { error = 1; break; }
    }
    Py_XDECREF(last_ts);
    Py_DECREF(empty);
    if (!fallback && !error && p != stop) fallback = 1;
    if (fallback || error) {
        if (PyList_GET_SIZE(out) > start_len) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyList_SetSlice(out, start_len, PyList_GET_SIZE(out), NULL);
            PyErr_Restore(et, ev, tb);
        }
        if (error) return NULL;
        Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

/* ----------------------------------------------------------------------- send() fast path */

/* The accumulator's lock. Calling its acquire() costs ~550 instructions, most of them
 * parsing the (absent) arguments, more than the rest of a send; so for CPython's own
 * _thread.lock of 3.11 and 3.12, whose layout is this (Modules/_threadmodule.c), the lock is
 * taken as its acquire() does it: a non-blocking PyThread_acquire_lock_timed and the
 * `locked` flag. When that fails (another thread holds it), or on any other lock type or
 * version, the lock's acquire() method is called, which blocks with the GIL released. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
#define DIRECT_LOCK 1
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock_lock;
    PyObject *in_weakreflist;
    char locked;
} cpython_lockobject;
#else
#define DIRECT_LOCK 0
#endif

typedef struct {
    PyObject *lock;
    PyObject *acquire; /* bound methods */
    PyObject *release;
    int direct;        /* lock is a _thread.lock of the layout above */
    PyTypeObject *batch_type; /* ProducerBatch, once seen, and where its `builder` slot is */
    Py_ssize_t builder_offset;
    PyObject *last_ts; /* the previous record's timestamp int: one per millisecond, shared */
    int64_t last_ts_value;
} SendState;

static int state_init(SendState *st, PyObject *lock) {
    st->lock = Py_NewRef(lock);
    st->acquire = PyObject_GetAttr(lock, str_acquire);
    st->release = st->acquire ? PyObject_GetAttr(lock, str_release) : NULL;
    if (st->release == NULL) return -1;
    st->direct = 0;
#if DIRECT_LOCK
    PyTypeObject *lt = Py_TYPE(lock);
    st->direct = strcmp(lt->tp_name, "_thread.lock") == 0 && lt->tp_basicsize == sizeof(cpython_lockobject);
#endif
    st->batch_type = NULL;
    st->builder_offset = -1;
    st->last_ts = NULL;
    return 0;
}

static void state_clear(SendState *st) {
    Py_CLEAR(st->lock);
    Py_CLEAR(st->acquire);
    Py_CLEAR(st->release);
    Py_CLEAR(st->batch_type);
    Py_CLEAR(st->last_ts);
}

static inline int state_acquire(SendState *st) {
#if DIRECT_LOCK
    if (st->direct) {
        cpython_lockobject *lo = (cpython_lockobject *)st->lock;
        if (PyThread_acquire_lock_timed(lo->lock_lock, 0, 0) == PY_LOCK_ACQUIRED) {
            lo->locked = 1;
            return 0;
        }
    }
#endif
    PyObject *r = PyObject_CallNoArgs(st->acquire);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static inline int state_release(SendState *st) {
#if DIRECT_LOCK
    if (st->direct) {
        cpython_lockobject *lo = (cpython_lockobject *)st->lock;
        lo->locked = 0;
        PyThread_release_lock(lo->lock_lock);
        return 0;
    }
#endif
    PyObject *r = PyObject_CallNoArgs(st->release);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* batch.builder: read from its slot when the batch's type has `builder` as a __slots__
 * member (ProducerBatch; the type check keeps the offset valid), else by getattr. */
static PyObject *batch_builder(SendState *st, PyObject *batch) {
    PyTypeObject *bt = Py_TYPE(batch);
    if (bt != st->batch_type) {
        Py_XSETREF(st->batch_type, (PyTypeObject *)Py_NewRef(bt));
        st->builder_offset = -1;
        PyObject *descr = _PyType_Lookup(bt, str_builder); /* borrowed */
        if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
            if (m->type == T_OBJECT_EX || m->type == T_OBJECT) st->builder_offset = m->offset;
        }
    }
    if (st->builder_offset >= 0) {
        PyObject *b = *(PyObject **)((char *)batch + st->builder_offset);
        if (b == NULL) return Py_NewRef(Py_None);
        return Py_NewRef(b);
    }
    return PyObject_GetAttr(batch, str_builder);
}

/* The plain-bytes send under the lock: the future, Py_None (take the slow path), or NULL
 * with an exception. */
static PyObject *fast_send(SendState *st, PyObject *sticky, PyObject *topic, PyObject *value, PyTypeObject *ftype) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    /* time.time_ns() // 10**6, the record's CreateTime */
    int64_t ts = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (state_acquire(st) < 0) return NULL;
    PyObject *result = NULL;
    PyObject *batch = PyDict_GetItemWithError(sticky, topic); /* borrowed */
    if (batch == NULL) {
        if (PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) PyErr_Clear(); /* unhashable: slow path */
            else goto release;
        }
        result = Py_NewRef(Py_None);
        goto release;
    }
    Py_INCREF(batch);
    PyObject *builder = batch_builder(st, batch);
    if (builder == NULL) { Py_DECREF(batch); goto release; }
    if (Py_TYPE(builder) != &BuilderType) {
        Py_DECREF(builder);
        Py_DECREF(batch);
        result = Py_NewRef(Py_None);
        goto release;
    }
    Py_ssize_t delta = builder_append_bytes((BuilderObject *)builder, ts, value);
    Py_DECREF(builder);
    if (delta == -2) { Py_DECREF(batch); goto release; }
    if (delta < 0) {
        Py_DECREF(batch);
        result = Py_NewRef(Py_None);
        goto release;
    }
    if (st->last_ts == NULL || st->last_ts_value != ts) {
        Py_XSETREF(st->last_ts, PyLong_FromLongLong(ts));
        st->last_ts_value = ts;
    }
    PyObject *d = st->last_ts ? PyLong_FromSsize_t(delta) : NULL;
    PyObject *fut = d ? ftype->tp_alloc(ftype, 3) : NULL;
    if (fut == NULL) {
        Py_XDECREF(d);
        Py_DECREF(batch);
        goto release;
    }
    PyTuple_SET_ITEM(fut, 0, batch);
    PyTuple_SET_ITEM(fut, 1, d);
    PyTuple_SET_ITEM(fut, 2, Py_NewRef(st->last_ts));
    result = fut;
release:;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (state_release(st) < 0) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        Py_XDECREF(result);
        return NULL;
    }
    if (et != NULL) {
        PyErr_Restore(et, ev, tb);
        Py_XDECREF(result);
        return NULL;
    }
    return result;
}

/* send_value(lock, sticky, topic, value, future_type) -> future or None: fast_send for a
 * caller written in Python (Producer installs the Send type below instead). */
static PyObject *send_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "send_value takes 5 arguments");
        return NULL;
    }
    PyObject *lock = args[0], *sticky = args[1], *topic = args[2], *value = args[3];
    PyTypeObject *ftype = (PyTypeObject *)args[4];
    if (!PyBytes_CheckExact(value) || !PyDict_CheckExact(sticky) || !PyType_Check(args[4]) ||
        !PyType_IsSubtype(ftype, &PyTuple_Type))
        Py_RETURN_NONE;
    SendState st;
    memset(&st, 0, sizeof(st));
    PyObject *r = state_init(&st, lock) == 0 ? fast_send(&st, sticky, topic, value, ftype) : NULL;
    state_clear(&st);
    return r;
}

/* Send(producer, lock, sticky, future_type, fallback): Producer.send as a C callable, set
 * on the instance by Producer.__init__. send(topic, value) with a bytes value and no other
 * argument takes fast_send; every other call, and a fast path that answers None, goes to
 * fallback(producer, *args, **kwargs), the Python Producer.send. The producer is held by a
 * weak reference (it holds this object: no cycle). disable() routes every call to the
 * fallback (close() calls it, so send() after close raises as it always did). */
typedef struct {
    PyObject_HEAD
    PyObject *producer_ref;
    SendState st;
    PyObject *sticky;
    PyTypeObject *ftype;
    PyObject *fallback;
    int enabled;
    vectorcallfunc vectorcall;
} SendObject;

static PyObject *send_call_fallback(SendObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    PyObject *producer = PyWeakref_GetObject(self->producer_ref); /* borrowed */
    if (producer == NULL) return NULL;
    if (producer == Py_None) {
        PyErr_SetString(PyExc_ReferenceError, "the producer of this send() no longer exists");
        return NULL;
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8];
    PyObject **stack = total + 1 <= 8 ? small : PyMem_Malloc(sizeof(PyObject *) * (size_t)(total + 1));
    if (stack == NULL) return PyErr_NoMemory();
    Py_INCREF(producer);
    stack[0] = producer;
    for (Py_ssize_t i = 0; i < total; i++) stack[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(self->fallback, stack, (size_t)(nargs + 1), kwnames);
    Py_DECREF(producer);
    if (stack != small) PyMem_Free(stack);
    return r;
}

/* True when a send() call is the plain case: send(topic, value) with a bytes value, and key,
 * partition, headers and timestamp_ms, if passed at all (by position or by name), None. */
static int plain_call(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *optional[] = {"key", "partition", "headers", "timestamp_ms"};
    if (nargs < 2 || nargs > 6 || !PyBytes_CheckExact(args[1])) return 0;
    for (Py_ssize_t i = 2; i < nargs; i++)
        if (args[i] != Py_None) return 0;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t j = 0; j < nkw; j++) {
            if (args[nargs + j] != Py_None) return 0;
            int known = 0;
            /* a name also given by position is the Python send()'s TypeError to raise */
            for (Py_ssize_t k = nargs - 2; k < 4 && !known; k++)
                known = k >= 0 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, j), optional[k]) == 0;
            if (!known) return 0;
        }
    }
    return 1;
}

static PyObject *send_vectorcall(SendObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (self->enabled && plain_call(args, nargs, kwnames)) {
        PyObject *r = fast_send(&self->st, self->sticky, args[0], args[1], self->ftype);
        if (r == NULL) return NULL;
        if (r != Py_None) return r;
        Py_DECREF(r);
    }
    return send_call_fallback(self, args, nargsf, kwnames);
}

static int send_init(SendObject *self, PyObject *args, PyObject *kwds) {
    PyObject *producer, *lock, *sticky, *ftype, *fallback;
    if (!PyArg_ParseTuple(args, "OOO!O!O", &producer, &lock, &PyDict_Type, &sticky, &PyType_Type, &ftype, &fallback))
        return -1;
    if (!PyType_IsSubtype((PyTypeObject *)ftype, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "future_type must be a tuple subclass");
        return -1;
    }
    Py_XSETREF(self->producer_ref, PyWeakref_NewRef(producer, NULL));
    if (self->producer_ref == NULL) return -1;
    state_clear(&self->st);
    if (state_init(&self->st, lock) < 0) return -1;
    Py_XSETREF(self->sticky, Py_NewRef(sticky));
    Py_XSETREF(self->ftype, (PyTypeObject *)Py_NewRef(ftype));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    self->enabled = 1;
    self->vectorcall = (vectorcallfunc)send_vectorcall;
    return 0;
}

static int send_traverse(SendObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->producer_ref);
    Py_VISIT(self->st.lock);
    Py_VISIT(self->st.acquire);
    Py_VISIT(self->st.release);
    Py_VISIT(self->sticky);
    Py_VISIT(self->ftype);
    Py_VISIT(self->fallback);
    return 0;
}

static int send_clear(SendObject *self) {
    Py_CLEAR(self->producer_ref);
    state_clear(&self->st);
    Py_CLEAR(self->sticky);
    Py_CLEAR(self->ftype);
    Py_CLEAR(self->fallback);
    return 0;
}

static void send_dealloc(SendObject *self) {
    PyObject_GC_UnTrack(self);
    send_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *send_disable(SendObject *self, PyObject *unused) {
    self->enabled = 0;
    Py_RETURN_NONE;
}

static PyObject *send_get_doc(SendObject *self, void *c) {
    if (self->fallback == NULL) Py_RETURN_NONE;
    return PyObject_GetAttrString(self->fallback, "__doc__");
}

static PyMethodDef send_methods[] = {
    {"disable", (PyCFunction)send_disable, METH_NOARGS, "Route every call to the Python send() from now on."},
    {NULL},
};

static PyGetSetDef send_getset[] = {
    {"__doc__", (getter)send_get_doc, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject SendType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "annal.record._native.Send",
    .tp_basicsize = sizeof(SendObject),
    .tp_dealloc = (destructor)send_dealloc,
    .tp_vectorcall_offset = offsetof(SendObject, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_traverse = (traverseproc)send_traverse,
    .tp_clear = (inquiry)send_clear,
    .tp_methods = send_methods,
    .tp_getset = send_getset,
    .tp_init = (initproc)send_init,
    .tp_new = PyType_GenericNew,
};

/* setup(crc32c, compress, check_codec): the Python callables the builder uses. */
static PyObject *setup(PyObject *module, PyObject *args) {
    PyObject *a, *b, *c;
    if (!PyArg_ParseTuple(args, "OOO", &a, &b, &c)) return NULL;
    Py_XSETREF(crc32c_fn, Py_NewRef(a));
    Py_XSETREF(compress_fn, Py_NewRef(b));
    Py_XSETREF(check_codec_fn, Py_NewRef(c));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"decode_records", (PyCFunction)(void (*)(void))decode_records, METH_FASTCALL,
     "decode_records(data, pos, end, count, base_offset, base_timestamp, out, cls, prefix, check_only) -> bool"},
    {"send_value", (PyCFunction)(void (*)(void))send_value, METH_FASTCALL,
     "send_value(lock, sticky, topic, value, future_type) -> future or None"},
    {"setup", setup, METH_VARARGS, "setup(crc32c, compress, check_codec)"},
    {NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "annal.record._native",
    "The compiled fast path of annal.record and Producer.send() (see _native.c).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&BuilderType) < 0 || PyType_Ready(&SendType) < 0) return NULL;
    str_acquire = PyUnicode_InternFromString("acquire");
    str_release = PyUnicode_InternFromString("release");
    str_builder = PyUnicode_InternFromString("builder");
    if (!str_acquire || !str_release || !str_builder) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "BatchBuilder", (PyObject *)&BuilderType) < 0 ||
        PyModule_AddObjectRef(m, "Send", (PyObject *)&SendType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
