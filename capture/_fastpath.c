/* capture._fastpath: the per-packet loops of capture, in C.
 *
 * Each function here does exactly what a Python loop of capture does (the Python code stays, as
 * the specification and the fallback when this module is not built; tests/test_fastpath.py runs
 * both over the same captures and compares every byte they write):
 *
 *   read_pcap()   CaptureFile._pcap's record walk: one batch (a Frames: the packets described where
 *                 they lie in the file's mmap, read as (ts, linktype, frame) tuples made on demand);
 *   ring_block()  _Ring.drain's walk over one retired TPACKET_V3 block (a Frames lying in the ring);
 *   Lanes,        capture's buffers the kernel writes: a recording's audio placement buffers (one
 *   Records       per channel, from sample ``frontier``) and its evidence pcap records; the recording
 *                 (storage) writes them out by their names (capture/lanes.py has their Python twin);
 *   StreamCore    the state of a StreamAssembler (its Python subclass), and the steady case of
 *                 StreamAssembler.packet(): same source, the recording's codec (one byte a sample),
 *                 in or near order, placed at or after the lanes' frontier;
 *   FastPath      CapturePipeline.feed's fast path: Ethernet, IPv4 without options, UDP, RTP v2,
 *                 one hash lookup on the destination; media of calls not recorded is counted and
 *                 dropped, media from another source than the direction's learned one is counted
 *                 and dropped, steady RTP of recorded calls is handled whole. The same for the
 *                 inner frame of a remote SPAN packet in the common forms (ERSPAN II/III over plain
 *                 GRE, a plain gretap, VXLAN; capture/encap.py opens the rest; tests/test_fastpath_encap.py).
 *
 * Anything else (SIP, the first packet of a source, a re-anchoring, DTMF, comfort noise, a late
 * payload to patch, another link type, a tick of housekeeping due) stops the loop *before* anything
 * is changed, and the Python code handles that packet as it always did. Floating-point results
 * must be the same as Python's: built with -ffp-contract=off (no fused multiply-add).
 *
 * The kernel touches only its own objects (FastPath, StreamCore, Lanes, Records) and the frames: it
 * fetches no attribute of and calls no method on anything it is handed. A buffer that reaches its
 * limit stops the loop after the packet that filled it, and run() hands the stream back to capture,
 * whose Python has the recording write it out (docs/hot-path.md).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#endif

/* The constants the Python code has too (capture/source.py MAX_SNAPLEN, capture/assembler.py
 * SEQ_WINDOW, MIRROR_WINDOW_S and MIRROR_RING, capture/rtp.py RTCP_PT_FIRST/LAST): exported as module
 * constants, and tests/test_fastpath.py checks they are the Python ones. */
#define MAX_SNAPLEN 262144
#define SEQ_WINDOW 64
#define MIRROR_WINDOW_S 0.010 /* a second mirror session's copy of a packet arrives this close */
#define MIRROR_RING 8
#define MIRROR_INLINE 256 /* payload bytes a mirror slot holds in place (G.711: 160 or 240 a packet) */
#define RTCP_PT_FIRST 72
#define RTCP_PT_LAST 76

/* ------------------------------------------------------------------------------------------ */
/* read_pcap(buf, off, big_endian, scale, linktype, batch_size) -> (batch, off, error)          */
/* error: None, or (offset, reason) for CaptureFileError; the batch holds what came before it.  */

static inline uint32_t rd32(const unsigned char *p, int big) {
    return big ? ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3])
               : ((uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]);
}

static PyObject *packet_tuple(double ts, PyObject *linktype, const unsigned char *data, Py_ssize_t n) {
    PyObject *t = PyTuple_New(3);
    if (t == NULL) return NULL;
    PyObject *f = PyFloat_FromDouble(ts);
    PyObject *b = PyBytes_FromStringAndSize((const char *)data, n);
    if (f == NULL || b == NULL) {
        Py_XDECREF(f);
        Py_XDECREF(b);
        Py_DECREF(t);
        return NULL;
    }
    Py_INCREF(linktype);
    PyTuple_SET_ITEM(t, 0, f);
    PyTuple_SET_ITEM(t, 1, linktype);
    PyTuple_SET_ITEM(t, 2, b);
    return t;
}

/* ------------------------------------------------------------------------------------------ */
/* Frames: one batch described in place. It holds a buffer on the memory the packets lie in (the  */
/* pcap file's mmap, a TPACKET_V3 ring block) and a C array of (ts, offset, length): no Python      */
/* object per packet. FastPath.run reads the frames straight from the buffer; Python code sees a    */
/* read-only sequence of the same (ts, linktype, frame) tuples as before, made on demand.           */
/* release() drops the buffer (the ring block goes back to the kernel next): any later access       */
/* raises ValueError and never reads the memory. detach() copies the bytes the packets lie in into */
/* a bytes object of the batch's own and drops the buffer (the capture file closes its mmap).      */

typedef struct {
    double ts;
    Py_ssize_t off, len; /* from base */
} FrameDesc;

typedef struct {
    PyObject_HEAD
    Py_buffer view;            /* the memory (view.obj NULL once released or detached) */
    PyObject *owned;           /* bytes: the batch's own copy after detach() */
    const unsigned char *base; /* where the offsets count from; NULL: released */
    PyObject *linktype_obj;    /* the batch's link type (every packet has it) */
    long linktype;             /* the same; -2: not one a C long holds (Python counts it) */
    Py_ssize_t n, cap;
    FrameDesc *d;
    PyObject *weakrefs;
} Frames;

static PyTypeObject FramesType;

static Frames *frames_make(Py_buffer *view, PyObject *linktype, Py_ssize_t cap) {
    Frames *b = PyObject_New(Frames, &FramesType);
    if (b == NULL) {
        PyBuffer_Release(view);
        return NULL;
    }
    b->view = *view; /* the buffer is the batch's from here on */
    b->owned = NULL;
    b->weakrefs = NULL;
    b->base = view->buf;
    Py_INCREF(linktype);
    b->linktype_obj = linktype;
    b->linktype = PyLong_Check(linktype) ? PyLong_AsLong(linktype) : -2;
    if (b->linktype == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        b->linktype = -2;
    }
    b->n = 0;
    b->cap = cap < 1 ? 1 : cap;
    b->d = PyMem_Malloc((size_t)b->cap * sizeof(FrameDesc));
    if (b->d == NULL) {
        Py_DECREF(b);
        PyErr_NoMemory();
        return NULL;
    }
    return b;
}

static int frames_add(Frames *b, double ts, Py_ssize_t off, Py_ssize_t len) {
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap * 2;
        FrameDesc *d = PyMem_Realloc(b->d, (size_t)cap * sizeof(FrameDesc));
        if (d == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->d = d;
        b->cap = cap;
    }
    b->d[b->n].ts = ts;
    b->d[b->n].off = off;
    b->d[b->n].len = len;
    b->n++;
    return 0;
}

static void frames_drop(Frames *b) {
    if (b->view.obj != NULL) PyBuffer_Release(&b->view);
    b->view.obj = NULL;
    Py_CLEAR(b->owned);
    b->base = NULL;
}

static void frames_dealloc(Frames *b) {
    if (b->weakrefs != NULL) PyObject_ClearWeakRefs((PyObject *)b);
    frames_drop(b);
    Py_CLEAR(b->linktype_obj);
    PyMem_Free(b->d);
    PyObject_Free(b);
}

/* A batch of no packets holds nothing (and stays usable: its length is 0). */
static void frames_unhold_if_empty(Frames *b) {
    static const unsigned char nothing[1];
    if (b->n != 0) return;
    if (b->view.obj != NULL) PyBuffer_Release(&b->view);
    b->view.obj = NULL;
    b->base = nothing;
}

static int frames_usable(Frames *b) {
    if (b->base != NULL) return 1;
    PyErr_SetString(PyExc_ValueError, "batch released: its memory is the capture's again");
    return 0;
}

static PyObject *frames_release(Frames *b, PyObject *unused) {
    frames_drop(b);
    Py_RETURN_NONE;
}

/* detach(): the bytes the packets lie in copied into the batch's own bytes (from the first
 * packet's start to the last one's end), the buffer dropped. A released batch stays released. */
static PyObject *frames_detach(Frames *b, PyObject *unused) {
    if (b->base == NULL || b->view.obj == NULL) Py_RETURN_NONE;
    Py_ssize_t lo = 0, hi = 0;
    for (Py_ssize_t k = 0; k < b->n; k++) {
        if (k == 0 || b->d[k].off < lo) lo = b->d[k].off;
        if (k == 0 || b->d[k].off + b->d[k].len > hi) hi = b->d[k].off + b->d[k].len;
    }
    PyObject *own = PyBytes_FromStringAndSize((const char *)b->base + lo, hi - lo);
    if (own == NULL) return NULL;
    for (Py_ssize_t k = 0; k < b->n; k++) b->d[k].off -= lo;
    PyBuffer_Release(&b->view);
    b->view.obj = NULL;
    b->owned = own;
    b->base = (const unsigned char *)PyBytes_AS_STRING(own);
    Py_RETURN_NONE;
}

static Py_ssize_t frames_len(Frames *b) {
    if (!frames_usable(b)) return -1;
    return b->n;
}

static PyObject *frames_item(Frames *b, Py_ssize_t i) {
    if (!frames_usable(b)) return NULL;
    if (i < 0 || i >= b->n) {
        PyErr_SetString(PyExc_IndexError, "batch index out of range");
        return NULL;
    }
    return packet_tuple(b->d[i].ts, b->linktype_obj, b->base + b->d[i].off, b->d[i].len);
}

static PyObject *frames_subscript(Frames *b, PyObject *key) {
    if (!frames_usable(b)) return NULL;
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) return NULL;
        if (i < 0) i += b->n;
        return frames_item(b, i);
    }
    if (!PySlice_Check(key)) {
        PyErr_Format(PyExc_TypeError, "batch indices must be integers or slices, not %.200s", Py_TYPE(key)->tp_name);
        return NULL;
    }
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0) return NULL;
    Py_ssize_t count = PySlice_AdjustIndices(b->n, &start, &stop, step);
    PyObject *list = PyList_New(count);
    if (list == NULL) return NULL;
    for (Py_ssize_t k = 0, i = start; k < count; k++, i += step) {
        PyObject *t = frames_item(b, i);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, k, t);
    }
    return list;
}

static PyObject *frames_get_released(Frames *b, void *c) { return PyBool_FromLong(b->base == NULL); }

static PyMethodDef frames_methods[] = {
    {"release", (PyCFunction)frames_release, METH_NOARGS,
     "Drop the memory (the ring block goes back to the kernel): any later access raises ValueError."},
    {"detach", (PyCFunction)frames_detach, METH_NOARGS,
     "Copy the packets' bytes into the batch's own and drop the memory (the capture file closes)."},
    {NULL},
};

static PyGetSetDef frames_getset[] = {
    {"released", (getter)frames_get_released, NULL, "whether the batch was released", NULL},
    {NULL},
};

static PySequenceMethods frames_as_sequence = {.sq_length = (lenfunc)frames_len, .sq_item = (ssizeargfunc)frames_item};
static PyMappingMethods frames_as_mapping = {.mp_length = (lenfunc)frames_len,
                                             .mp_subscript = (binaryfunc)frames_subscript};

static PyTypeObject FramesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._fastpath.Frames",
    .tp_basicsize = sizeof(Frames),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_SEQUENCE,
    .tp_dealloc = (destructor)frames_dealloc,
    .tp_weaklistoffset = offsetof(Frames, weakrefs),
    .tp_as_sequence = &frames_as_sequence,
    .tp_as_mapping = &frames_as_mapping,
    .tp_methods = frames_methods,
    .tp_getset = frames_getset,
    .tp_doc = "One batch of packets described in place: a read-only sequence of (ts, linktype, frame).",
};

/* read_pcap(buf, off, big_endian, scale, linktype, batch_size) -> (batch, off, error)
 * error: None, or (offset, reason) for CaptureFileError; the batch (Frames) holds what came before it.
 * Each record's header says where the next one is, so the walk is a chain of loads, and on the
 * development machine (a VM) the hardware's prefetcher does not run ahead of it: ~100 ns a packet,
 * a memory miss each. So the walk asks for every line of the file PCAP_AHEAD bytes before it reads
 * there: the bench capture's 1.2 M records in ~16 ms instead of ~145 (a prefetch faults nothing). */
#define PCAP_AHEAD 2048
static PyObject *read_pcap(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t off, batch_size;
    int big;
    double scale;
    PyObject *linktype;
    if (!PyArg_ParseTuple(args, "y*npdOn", &view, &off, &big, &scale, &linktype, &batch_size)) return NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t end = view.len;
    if (batch_size < 1) batch_size = 1; /* as the Python loop: a batch as soon as it has a packet */
    if (off < 0) off = end; /* never read before the buffer */
    Py_ssize_t room = (end - off) / 16 + 1;
    Frames *batch = frames_make(&view, linktype, batch_size < room ? batch_size : room);
    PyObject *error = NULL;
    if (batch == NULL) return NULL;
    Py_ssize_t ahead = off; /* the next line to prefetch */
    while (off < end && batch->n < batch_size) {
        for (Py_ssize_t to = end - off > PCAP_AHEAD ? off + PCAP_AHEAD : end; ahead < to; ahead += 64)
            __builtin_prefetch(buf + ahead, 0, 3);
        if (off > end - 16) {
            error = Py_BuildValue("(ns)", off, "truncated packet record header");
            break;
        }
        const unsigned char *rec = buf + off;
        uint32_t sec = rd32(rec, big), frac = rd32(rec + 4, big), incl = rd32(rec + 8, big);
        if (incl > MAX_SNAPLEN) {
            PyObject *why = PyUnicode_FromFormat("packet length %lu exceeds %d", (unsigned long)incl, MAX_SNAPLEN);
            error = why ? Py_BuildValue("(nN)", off, why) : NULL;
            break;
        }
        Py_ssize_t data = off + 16;
        if (data + (Py_ssize_t)incl > end) {
            PyObject *why = PyUnicode_FromFormat("truncated packet: %lu bytes declared, %zd left", (unsigned long)incl,
                                                 end - data);
            error = why ? Py_BuildValue("(nN)", off, why) : NULL;
            break;
        }
        if (frames_add(batch, (double)sec + (double)frac * scale, data, incl) < 0) goto fail;
        off = data + incl;
    }
    if (PyErr_Occurred()) goto fail;
    frames_unhold_if_empty(batch); /* nothing to hold the file for */
    if (error == NULL) {
        error = Py_None;
        Py_INCREF(error);
    }
    return Py_BuildValue("(NnN)", batch, off, error);
fail:
    Py_DECREF(batch);
    Py_XDECREF(error);
    return NULL;
}

/* ring_block(buf, off, num, end=len(buf)) -> (batch, malformed): the packets of one TPACKET_V3 block
 * (tpacket3_hdr walk) that lie whole before ``end`` (the block's end in the ring: a walk never reads
 * a neighbouring block, which may be the kernel's). A block that claims more packets than it can
 * hold, or whose walk leads a header or a frame off the block, is malformed: the walk stops there, the packets before
 * it are kept, and ``malformed`` is 1 (capture/live.py _walk_block does the same; it never raises).
 * The batch (Frames) lies in ``buf``: the caller releases it before the block goes back to the kernel. */
static PyObject *ring_block(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t off, num, end = -1;
    if (!PyArg_ParseTuple(args, "y*nn|n", &view, &off, &num, &end)) return NULL;
    static PyObject *ethernet = NULL;
    if (ethernet == NULL && (ethernet = PyLong_FromLong(1)) == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (end < 0 || end > view.len) end = view.len;
    int malformed = 0;
    if (num < 0) num = 0;
    if (num > end / 32) { /* more packet headers than the block has room for */
        num = end / 32;
        malformed = 1;
    }
    const unsigned char *buf = view.buf;
    Py_ssize_t room = off >= 0 && off < end ? (end - off) / 32 + 1 : 1; /* (more only if a walk repeats) */
    Frames *batch = frames_make(&view, ethernet, num < room ? num : room);
    if (batch == NULL) return NULL;
    for (Py_ssize_t i = 0; i < num; i++) {
        uint32_t nxt, sec, nsec, snap;
        uint16_t mac;
        if (off < 0 || off > end - 32) {
            malformed = 1;
            break;
        }
        memcpy(&nxt, buf + off, 4); /* struct tpacket3_hdr, host byte order */
        memcpy(&sec, buf + off + 4, 4);
        memcpy(&nsec, buf + off + 8, 4);
        memcpy(&snap, buf + off + 12, 4);
        memcpy(&mac, buf + off + 24, 2);
        Py_ssize_t start = off + mac;
        if (start + (Py_ssize_t)snap > end) {
            malformed = 1;
            break;
        }
        if (frames_add(batch, (double)sec + (double)nsec * 1e-9, start, snap) < 0) {
            Py_DECREF(batch);
            return NULL;
        }
        off += nxt;
    }
    frames_unhold_if_empty(batch);
    return Py_BuildValue("(Ni)", batch, malformed);
}

/* ------------------------------------------------------------------------------------------ */
/* Lanes and Records: capture's buffers the kernel writes (capture/lanes.py: their Python twin and  */
/* what the recording does with them). Their state is in their structs: nothing is looked up.     */

typedef struct {
    PyObject_HEAD
    PyObject *bufs;     /* (bytearray, bytearray): channel 1's and channel 2's samples from frontier */
    PyObject *buf[2];   /* the same two, borrowed */
    long long frontier; /* the sample the buffers start at (the recording moves it as it writes) */
    Py_ssize_t limit;   /* a buffer this long (bytes) is to be written out */
    int silence;        /* the codec's silence byte: a gap before a payload is padded with it */
} Lanes;

static PyObject *lanes_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (!_PyArg_NoKeywords("Lanes", kw) || !PyArg_ParseTuple(args, ":Lanes")) return NULL;
    Lanes *l = (Lanes *)type->tp_alloc(type, 0);
    if (l == NULL) return NULL;
    PyObject *a = PyByteArray_FromStringAndSize(NULL, 0), *b = PyByteArray_FromStringAndSize(NULL, 0);
    l->bufs = a && b ? PyTuple_Pack(2, a, b) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    if (l->bufs == NULL) {
        Py_DECREF(l);
        return NULL;
    }
    l->buf[0] = a;
    l->buf[1] = b;
    return (PyObject *)l;
}

static void lanes_dealloc(Lanes *l) {
    Py_CLEAR(l->bufs);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

/* bytes 0..3 of x at bytes 0, 2, 4, 6 (the others zero) */
static inline uint64_t spread4(uint32_t x) {
    uint64_t v = x;
    v = (v | v << 16) & 0x0000FFFF0000FFFFull;
    return (v | v << 8) & 0x00FF00FF00FF00FFull;
}

/* Lanes.interleaved(size, extra=0): the first ``size`` samples of both buffers as stereo frames
 * (channel 1's byte, then channel 2's), then channel 1's next ``extra`` (0 or 1) byte: what the
 * recording seals as its WAV's next frames (one pass, one allocation; it then deletes them). */
static PyObject *lanes_interleaved(Lanes *l, PyObject *args) {
    Py_ssize_t size, extra = 0;
    if (!PyArg_ParseTuple(args, "n|n:interleaved", &size, &extra)) return NULL;
    PyObject *a = l->buf[0], *b = l->buf[1];
    if (size < 0 || extra < 0 || extra > 1 || PyByteArray_GET_SIZE(a) < size + extra || PyByteArray_GET_SIZE(b) < size) {
        PyErr_Format(PyExc_ValueError, "interleaved(%zd, %zd): the buffers hold %zd and %zd bytes", size, extra,
                     PyByteArray_GET_SIZE(a), PyByteArray_GET_SIZE(b));
        return NULL;
    }
    PyObject *out = PyByteArray_FromStringAndSize(NULL, 2 * size + extra);
    if (out == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyByteArray_AS_STRING(out);
    const unsigned char *pa = (const unsigned char *)PyByteArray_AS_STRING(a);
    const unsigned char *pb = (const unsigned char *)PyByteArray_AS_STRING(b);
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    for (; i + 16 <= size; i += 16) { /* sixteen frames a step */
        __m128i x = _mm_loadu_si128((const __m128i *)(pa + i)), y = _mm_loadu_si128((const __m128i *)(pb + i));
        _mm_storeu_si128((__m128i *)(o + 2 * i), _mm_unpacklo_epi8(x, y));
        _mm_storeu_si128((__m128i *)(o + 2 * i + 16), _mm_unpackhi_epi8(x, y));
    }
#elif defined(__ARM_NEON)
    for (; i + 16 <= size; i += 16) {
        uint8x16x2_t v = {{vld1q_u8(pa + i), vld1q_u8(pb + i)}};
        vst2q_u8(o + 2 * i, v); /* stored interleaved: a0 b0 a1 b1 ... */
    }
#endif
    for (; i + 4 <= size; i += 4) { /* four frames a step: each byte spread to every other place */
        uint32_t x, y;
        memcpy(&x, pa + i, 4);
        memcpy(&y, pb + i, 4);
        uint64_t v = spread4(x) | spread4(y) << 8; /* little-endian: a0 b0 a1 b1 ... (as records_add) */
        memcpy(o + 2 * i, &v, 8);
    }
    for (; i < size; i++) {
        o[2 * i] = pa[i];
        o[2 * i + 1] = pb[i];
    }
    if (extra) o[2 * size] = pa[size];
    return out;
}

static PyMethodDef lanes_methods[] = {
    {"interleaved", (PyCFunction)lanes_interleaved, METH_VARARGS,
     "The first size samples of both buffers as stereo frames, then channel 1's next extra (0 or 1) byte."},
    {NULL},
};

static PyMemberDef lanes_members[] = {
    {"bufs", T_OBJECT, offsetof(Lanes, bufs), READONLY, "(channel 1, channel 2): bytearrays from sample frontier"},
    {"frontier", T_LONGLONG, offsetof(Lanes, frontier), 0, "the sample the buffers start at"},
    {"limit", T_PYSSIZET, offsetof(Lanes, limit), 0, "a buffer this long (bytes) is written out"},
    {"silence", T_INT, offsetof(Lanes, silence), 0, "the codec's silence byte"},
    {NULL},
};

static PyTypeObject LanesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._fastpath.Lanes",
    .tp_basicsize = sizeof(Lanes),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = lanes_new,
    .tp_dealloc = (destructor)lanes_dealloc,
    .tp_members = lanes_members,
    .tp_methods = lanes_methods,
    .tp_doc = "A recording's audio placement buffers, one byte a sample (capture/lanes.py).",
};

typedef struct {
    PyObject_HEAD
    PyObject *buf;    /* bytearray: pcap records (nanosecond pcap, little-endian) not yet written */
    Py_ssize_t limit; /* once buf holds this many bytes it is to be written out */
    long linktype;    /* the file's link type; -1 until its first frame (the kernel leaves frames to Python) */
} Records;

static PyObject *records_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (!_PyArg_NoKeywords("Records", kw) || !PyArg_ParseTuple(args, ":Records")) return NULL;
    Records *r = (Records *)type->tp_alloc(type, 0);
    if (r == NULL) return NULL;
    r->linktype = -1;
    if ((r->buf = PyByteArray_FromStringAndSize(NULL, 0)) == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

static void records_dealloc(Records *r) {
    Py_CLEAR(r->buf);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyMemberDef records_members[] = {
    {"buf", T_OBJECT, offsetof(Records, buf), READONLY, "bytearray: pcap records not yet written"},
    {"limit", T_PYSSIZET, offsetof(Records, limit), 0, "buf this long (bytes) is written out"},
    {"linktype", T_LONG, offsetof(Records, linktype), 0, "the file's link type, -1 until its first frame"},
    {NULL},
};

static PyTypeObject RecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._fastpath.Records",
    .tp_basicsize = sizeof(Records),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = records_new,
    .tp_dealloc = (destructor)records_dealloc,
    .tp_members = records_members,
    .tp_doc = "A recording's evidence pcap records not yet written (capture/lanes.py).",
};

/* ------------------------------------------------------------------------------------------ */
/* StreamCore: a StreamAssembler's per-packet state; the Python subclass has the rest.          */

typedef struct {
    PyObject_HEAD
    long long ssrc; /* -1: none yet */
    long long base_ts, base_pos, end, max_seq, ext_max, received, packets, duplicates;
    unsigned long long seen;
    double jitter, last_transit, last_arrival, max_gap;
    char has_transit, learned;
    int channel;
    /* where this direction's packets come from (StreamAssembler.source): the Python object, and its
     * key as the FastPath table spells an IPv4 endpoint (0: none yet, 1: not IPv4) */
    PyObject *source;
    uint64_t src_key;
    long long other_source; /* packets from another source, dropped */
    /* armed by the call once its recording took capture's buffers: what the steady case needs */
    char armed;
    int audio_pt;
    double t0, clock, drift_limit;
    Lanes *lanes;     /* where this channel's samples are placed */
    Records *records; /* where the call's frames go (its evidence pcap), or NULL: it keeps none */
    /* the last packets seen, by sequence number modulo MIRROR_RING: a copy of one of them delivered
     * again by a second mirror session within MIRROR_WINDOW_S is dropped (StreamAssembler.mirror_copy).
     * Each slot holds a copy of its payload: in place up to MIRROR_INLINE bytes, else in a heap buffer
     * of the slot's own, kept and reused (never a reference to a frame: a frame may lie in a ring
     * block the kernel owns again once its batch is fed). */
    struct {
        long long seq, rtp_ts, ssrc; /* seq -1: none */
        int pt;
        int cut; /* 1: cut short by the capture, the captured bytes only */
        double at;
        Py_ssize_t len;
        unsigned char *heap; /* PyMem: payloads longer than MIRROR_INLINE */
        Py_ssize_t heap_size;
        unsigned char inline_[MIRROR_INLINE];
    } recent[MIRROR_RING];
    long long mirror_duplicates;
} StreamCore;

static int core_traverse(StreamCore *s, visitproc visit, void *arg) {
    Py_VISIT(s->source);
    return 0;
}

static int core_clear(StreamCore *s) {
    s->armed = 0;
    Py_CLEAR(s->lanes);
    Py_CLEAR(s->records);
    return 0;
}

static void core_dealloc(StreamCore *s) {
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    core_clear(s);
    Py_CLEAR(s->source);
    for (int k = 0; k < MIRROR_RING; k++) PyMem_Free(s->recent[k].heap);
    tp->tp_free((PyObject *)s);
}

static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    StreamCore *s = (StreamCore *)type->tp_alloc(type, 0);
    if (s != NULL) {
        s->ssrc = -1;
        for (int k = 0; k < MIRROR_RING; k++) s->recent[k].seq = -1;
    }
    return (PyObject *)s;
}

/* Whether a packet is a second mirror session's copy of one of the last seen: the same SSRC,
 * sequence number, timestamp and payload type within MIRROR_WINDOW_S of it, and the same payload
 * (a cut one's captured bytes beginning the other's): 0 not, 1 a copy, 2 a copy holding more of the
 * packet (the one remembered was cut shorter). Changes nothing (StreamAssembler.mirror_copy,
 * _same_packet). */
static int mirror_match(StreamCore *s, double ts, long seq, long long rtp_ts, long long ssrc, int pt,
                        const unsigned char *payload, Py_ssize_t len, int cut) {
    int k = (int)(seq & (MIRROR_RING - 1));
    if (s->recent[k].seq != seq || s->recent[k].rtp_ts != rtp_ts || s->recent[k].ssrc != ssrc ||
        s->recent[k].pt != pt)
        return 0;
    double d = ts - s->recent[k].at;
    if (!(d <= MIRROR_WINDOW_S && d >= -MIRROR_WINDOW_S)) return 0;
    Py_ssize_t a = s->recent[k].len;
    const unsigned char *had = a <= MIRROR_INLINE ? s->recent[k].inline_ : s->recent[k].heap;
    int had_cut = s->recent[k].cut;
    if (!had_cut && !cut) return a == len && memcmp(had, payload, (size_t)len) == 0;
    if (had_cut && cut) {
        Py_ssize_t n = a < len ? a : len;
        return memcmp(had, payload, (size_t)n) == 0 ? (len > a ? 2 : 1) : 0;
    }
    if (had_cut) return len >= a && memcmp(had, payload, (size_t)a) == 0 ? (len > a ? 2 : 1) : 0;
    return len <= a && memcmp(had, payload, (size_t)len) == 0; /* the first whole, this one cut */
}

/* A packet that is not a copy, or holds more than the copy remembered: remembered (its payload
 * copied into the slot). -1 (MemoryError, the slot unchanged): no room for a long payload. */
static int mirror_remember(StreamCore *s, double ts, long seq, long long rtp_ts, long long ssrc, int pt,
                           const unsigned char *payload, Py_ssize_t len, int cut) {
    int k = (int)(seq & (MIRROR_RING - 1));
    unsigned char *to = s->recent[k].inline_;
    if (len > MIRROR_INLINE) {
        if (len > s->recent[k].heap_size) {
            unsigned char *heap = PyMem_Realloc(s->recent[k].heap, (size_t)len);
            if (heap == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            s->recent[k].heap = heap;
            s->recent[k].heap_size = len;
        }
        to = s->recent[k].heap;
    }
    memcpy(to, payload, (size_t)len);
    s->recent[k].seq = seq;
    s->recent[k].rtp_ts = rtp_ts;
    s->recent[k].ssrc = ssrc;
    s->recent[k].pt = pt;
    s->recent[k].cut = cut;
    s->recent[k].at = ts;
    s->recent[k].len = len;
    return 0;
}

/* mirror_copy(ts, seq, rtp_ts, ssrc, pt, payload, cut=0) -> 0, 1 or 2: StreamAssembler.packet()'s
 * first step (and cut()'s, with cut 1 and the captured bytes); a copy is counted */
static PyObject *core_mirror_copy(StreamCore *s, PyObject *args) {
    double ts;
    long seq;
    long long rtp_ts, ssrc;
    int pt, cut = 0;
    PyObject *payload;
    if (!PyArg_ParseTuple(args, "dlLLiO|p", &ts, &seq, &rtp_ts, &ssrc, &pt, &payload, &cut)) return NULL;
    PyObject *data = PyBytes_CheckExact(payload) ? (Py_INCREF(payload), payload) : PyBytes_FromObject(payload);
    if (data == NULL) return NULL;
    seq &= 0xFFFF;
    int copy = mirror_match(s, ts, seq, rtp_ts, ssrc, pt, (const unsigned char *)PyBytes_AS_STRING(data),
                            PyBytes_GET_SIZE(data), cut);
    if (copy != 1 && mirror_remember(s, ts, seq, rtp_ts, ssrc, pt, (const unsigned char *)PyBytes_AS_STRING(data),
                                     PyBytes_GET_SIZE(data), cut) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    if (copy) s->mirror_duplicates++;
    Py_DECREF(data);
    return PyLong_FromLong(copy);
}

/* arm(audio_pt, t0, clock, drift_limit, lanes, records=None): the steady case is the kernel's from
 * here (capture/call.py _arm), placed into ``lanes`` (this stream's channel's buffer) and its frames
 * appended to ``records`` (None: the call keeps no packets). Only capture's own objects. */
static PyObject *core_arm(StreamCore *s, PyObject *args) {
    int audio_pt;
    double t0, clock, drift_limit;
    PyObject *lanes, *records = Py_None;
    if (!PyArg_ParseTuple(args, "idddO!|O:arm", &audio_pt, &t0, &clock, &drift_limit, &LanesType, &lanes, &records))
        return NULL;
    if (records != Py_None && !PyObject_TypeCheck(records, &RecordsType)) {
        PyErr_SetString(PyExc_TypeError, "records must be a Records or None");
        return NULL;
    }
    if (s->channel != 1 && s->channel != 2) {
        PyErr_SetString(PyExc_ValueError, "a stream's channel is 1 or 2");
        return NULL;
    }
    core_clear(s);
    s->audio_pt = audio_pt;
    s->t0 = t0;
    s->clock = clock;
    s->drift_limit = drift_limit;
    Py_INCREF(lanes);
    s->lanes = (Lanes *)lanes;
    if (records != Py_None) {
        Py_INCREF(records);
        s->records = (Records *)records;
    }
    s->armed = 1;
    Py_RETURN_NONE;
}

static PyObject *core_disarm(StreamCore *s, PyObject *unused) {
    core_clear(s);
    Py_RETURN_NONE;
}

static PyObject *core_get_ssrc(StreamCore *s, void *c) {
    if (s->ssrc < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(s->ssrc);
}

static int core_set_ssrc(StreamCore *s, PyObject *v, void *c) {
    if (v == NULL || v == Py_None) {
        s->ssrc = -1;
        return 0;
    }
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (x < 0 || x > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "ssrc must be a 32-bit unsigned integer");
        return -1;
    }
    s->ssrc = x;
    return 0;
}

static int endpoint_key(PyObject *addr, int port, uint64_t *key);

static PyObject *core_get_source(StreamCore *s, void *c) {
    PyObject *v = s->source ? s->source : Py_None;
    Py_INCREF(v);
    return v;
}

/* source = None, or (address bytes, port) */
static int core_set_source(StreamCore *s, PyObject *v, void *c) {
    uint64_t key = 0;
    if (v != NULL && v != Py_None) {
        if (!PyTuple_Check(v) || PyTuple_GET_SIZE(v) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(v, 0)) ||
            !PyLong_Check(PyTuple_GET_ITEM(v, 1))) {
            PyErr_SetString(PyExc_TypeError, "source must be None or (address bytes, port)");
            return -1;
        }
        long port = PyLong_AsLong(PyTuple_GET_ITEM(v, 1));
        if (port == -1 && PyErr_Occurred()) return -1;
        if (port < 0 || port > 0xFFFF) {
            PyErr_SetString(PyExc_ValueError, "source port must be 0-65535");
            return -1;
        }
        int r = endpoint_key(PyTuple_GET_ITEM(v, 0), (int)port, &key);
        if (r < 0) return -1;
        if (r == 0) key = 1; /* IPv6: no IPv4 packet comes from it */
        Py_INCREF(v);
    } else {
        v = NULL;
    }
    Py_XSETREF(s->source, v);
    s->src_key = key;
    return 0;
}

static PyObject *core_get_transit(StreamCore *s, void *c) {
    if (!s->has_transit) Py_RETURN_NONE;
    return PyFloat_FromDouble(s->last_transit);
}

static int core_set_transit(StreamCore *s, PyObject *v, void *c) {
    if (v == NULL || v == Py_None) {
        s->has_transit = 0;
        return 0;
    }
    double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    s->last_transit = x;
    s->has_transit = 1;
    return 0;
}

static PyMemberDef core_members[] = {
    {"base_ts", T_LONGLONG, offsetof(StreamCore, base_ts), 0, NULL},
    {"base_pos", T_LONGLONG, offsetof(StreamCore, base_pos), 0, NULL},
    {"end", T_LONGLONG, offsetof(StreamCore, end), 0, "one past the last sample written"},
    {"max_seq", T_LONGLONG, offsetof(StreamCore, max_seq), 0, NULL},
    {"ext_max", T_LONGLONG, offsetof(StreamCore, ext_max), 0, NULL},
    {"received", T_LONGLONG, offsetof(StreamCore, received), 0, NULL},
    {"packets", T_LONGLONG, offsetof(StreamCore, packets), 0, NULL},
    {"duplicates", T_LONGLONG, offsetof(StreamCore, duplicates), 0, NULL},
    {"seen", T_ULONGLONG, offsetof(StreamCore, seen), 0, NULL},
    {"jitter", T_DOUBLE, offsetof(StreamCore, jitter), 0, NULL},
    {"last_arrival", T_DOUBLE, offsetof(StreamCore, last_arrival), 0, NULL},
    {"max_gap", T_DOUBLE, offsetof(StreamCore, max_gap), 0, NULL},
    {"learned", T_BOOL, offsetof(StreamCore, learned), 0, NULL},
    {"other_source", T_LONGLONG, offsetof(StreamCore, other_source), 0, "packets from another source, dropped"},
    {"mirror_duplicates", T_LONGLONG, offsetof(StreamCore, mirror_duplicates), 0,
     "copies of a packet delivered again by a second mirror session, dropped"},
    {"channel", T_INT, offsetof(StreamCore, channel), 0, NULL},
    {NULL},
};

static PyGetSetDef core_getset[] = {
    {"ssrc", (getter)core_get_ssrc, (setter)core_set_ssrc, NULL, NULL},
    {"last_transit", (getter)core_get_transit, (setter)core_set_transit, NULL, NULL},
    {"source", (getter)core_get_source, (setter)core_set_source, NULL, NULL},
    {NULL},
};

static PyMethodDef core_methods[] = {
    {"arm", (PyCFunction)core_arm, METH_VARARGS,
     "Take the steady case over: arm(audio_pt, t0, clock, drift_limit, lanes, records=None)."},
    {"disarm", (PyCFunction)core_disarm, METH_NOARGS, "Give every packet back to Python (the recording ends)."},
    {"mirror_copy", (PyCFunction)core_mirror_copy, METH_VARARGS,
     "Whether this packet is a second mirror session's copy of one just seen (counted); else remember it."},
    {NULL},
};

static PyTypeObject StreamCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._fastpath.StreamCore",
    .tp_basicsize = sizeof(StreamCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_members = core_members,
    .tp_getset = core_getset,
    .tp_methods = core_methods,
    .tp_doc = "Per-packet state of one direction of a recorded call (see capture/assembler.py).",
};

/* Make a bytearray ``size`` bytes long (``size`` > its length; the new bytes are the caller's to
 * write). PyByteArray_Resize grows a buffer by an eighth at a time, and the recording empties its
 * buffers each time it writes them out: filled packet by packet, a 16 KiB buffer was reallocated
 * and copied ~30 times between two writes. Here a buffer that must grow is given ``reserve`` bytes
 * at once, and a buffer with room is lengthened in place (the bytearray's own fields, as its quick
 * path does: the length, and the NUL after it). A buffer exported (a memoryview over it) is left to
 * PyByteArray_Resize, which refuses to move it. */
static int ba_grow(PyObject *ba, Py_ssize_t size, Py_ssize_t reserve) {
    PyByteArrayObject *b = (PyByteArrayObject *)ba;
    if (b->ob_exports > 0) return PyByteArray_Resize(ba, size);
    if (size + 1 > b->ob_alloc - (b->ob_start - b->ob_bytes)) {
        if (PyByteArray_Resize(ba, size > reserve ? size : reserve) < 0) return -1;
    }
    Py_SET_SIZE(b, size);
    b->ob_start[size] = '\0';
    return 0;
}

/* Append one pcap record (nanosecond pcap, little-endian) to the records; 1: they reached their limit. */
static int records_add(Records *r, double ts, const unsigned char *frame, Py_ssize_t n) {
    PyObject *buf = r->buf;
    Py_ssize_t have = PyByteArray_GET_SIZE(buf);
    if (ba_grow(buf, have + 16 + n, r->limit + 2048) < 0) return -1;
    unsigned char *p = (unsigned char *)PyByteArray_AS_STRING(buf) + have;
    long long sec = (long long)ts;
    uint32_t rec[4] = {(uint32_t)sec, (uint32_t)(long long)((ts - (double)sec) * 1e9), (uint32_t)n, (uint32_t)n};
    memcpy(p, rec, 16); /* x86-64 and aarch64: little-endian, as the file header says */
    memcpy(p + 16, frame, n);
    return have + 16 + n >= r->limit;
}

/* DUE: handled, and a buffer reached its limit (capture has the recording write it out). */
enum { BAIL = 0, DONE = 1, DUE = 2, FAILED = -1 };

/* StreamAssembler.packet() for the steady case; BAIL (nothing changed) for anything else. */
static int core_packet(StreamCore *s, double ts, int linktype, int pt, long seq, long long rtp_ts, long long ssrc,
                       const unsigned char *frame, Py_ssize_t frame_len, Py_ssize_t payload_off,
                       Py_ssize_t payload_len) {
    if (!s->armed || s->ssrc != ssrc || pt != s->audio_pt) return BAIL;
    if (s->channel != 1 && s->channel != 2) return BAIL; /* armed as 1 or 2, but a member Python may set */
    /* an RTP packet without payload is Python's (the batch loop leaves it there too): nothing is
     * placed for it (libopus would conceal up to 120 ms for an empty packet) */
    if (payload_len <= 0) return BAIL;
    if (!(ts >= 0.0 && ts < 4294967296.0)) return BAIL; /* a time no pcap record can carry: Python's */
    int copy = mirror_match(s, ts, seq, rtp_ts, ssrc, pt, frame + payload_off, payload_len, 0);
    if (copy == 1) {
        s->mirror_duplicates++;
        return DONE;
    }
    if (copy) return BAIL; /* whole, after a copy the capture cut short: Python puts it over the fill */
    Records *records = s->records;
    if (records != NULL && (records->linktype < 0 || linktype != records->linktype)) return BAIL;
    long delta = (seq - s->max_seq) & 0xFFFF;
    int dup = 0, newer = 0, due = 0;
    unsigned long long bit = 0;
    if (delta == 0) {
        dup = 1;
    } else if (delta < 0x8000) {
        newer = 1;
    } else {
        long back = 0x10000 - delta;
        if (back < SEQ_WINDOW) {
            bit = 1ULL << back;
            if (s->seen & bit) dup = 1;
        }
    }
    long long offset = 0, pos = 0, frontier = s->lanes->frontier;
    double arrival = 0.0;
    if (!dup) {
        offset = ((rtp_ts - s->base_ts + 0x80000000LL) & 0xFFFFFFFFLL) - 0x80000000LL;
        pos = s->base_pos + offset;
        arrival = (ts - s->t0) * s->clock;
        if (arrival - (double)pos > s->drift_limit || pos < 0) return BAIL; /* re-anchor, or early */
        if ((double)pos - arrival > s->drift_limit && (double)(pos - s->end) > s->drift_limit) return BAIL; /* leapt */
        if (pos < frontier) return BAIL; /* its place is written out already: patched by Python */
    }
    /* from here on the packet is ours */
    if (mirror_remember(s, ts, seq, rtp_ts, ssrc, pt, frame + payload_off, payload_len, 0) < 0) return FAILED;
    double last = s->last_arrival;
    if (last != 0.0 && ts - last > s->max_gap) s->max_gap = ts - last;
    s->last_arrival = ts;
    if (records != NULL && (due = records_add(records, ts, frame, frame_len)) < 0) return FAILED;
    if (dup) {
        s->duplicates++;
        return due ? DUE : DONE;
    }
    if (newer) {
        s->max_seq = seq;
        s->ext_max += delta;
        s->seen = delta >= 64 ? 1ULL : (s->seen << delta) | 1ULL;
    } else if (bit) {
        s->seen |= bit;
    }
    s->received++;
    double transit = arrival - (double)offset;
    if (s->has_transit) {
        double d = transit - s->last_transit;
        s->jitter += ((d >= 0 ? d : -d) - s->jitter) * 0.0625;
    }
    s->last_transit = transit;
    s->has_transit = 1;
    s->packets++;
    long long stop = pos + payload_len;
    if (stop > s->end) s->end = stop;
    /* SpoolRecording._place for one byte a sample: pad with silence, append or overwrite */
    PyObject *lane = s->lanes->buf[s->channel - 1];
    Py_ssize_t have = PyByteArray_GET_SIZE(lane), rel = (Py_ssize_t)(pos - frontier);
    Py_ssize_t need = rel + payload_len > have ? rel + payload_len : have;
    if (need != have && ba_grow(lane, need, s->lanes->limit + s->lanes->limit / 4 + 2048) < 0) return FAILED;
    char *b = PyByteArray_AS_STRING(lane);
    if (rel > have) memset(b + have, s->lanes->silence, rel - have);
    memcpy(b + rel, frame + payload_off, payload_len);
    return due || need >= s->lanes->limit ? DUE : DONE;
}

/* ------------------------------------------------------------------------------------------ */
/* FastPath: the media map's IPv4 endpoints in an open-addressing table, and the batch loop.     */

typedef struct {
    uint64_t key; /* 1 + (ipv4 << 16 | port); 0 = empty, 1 = deleted */
    PyObject *value;
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    size_t mask, used, filled; /* filled counts deleted slots too */
    long long not_recorded;
    long long other_source; /* RTP from another source than its direction's, dropped */
    long long handled; /* RTP packets of recorded calls handled whole here */
    /* remote SPAN (capture/encap.py's EncapConfig): the encapsulations opened here, and from
     * which outer IPv4 sources (none: any; an IPv6-only list: no IPv4 source is one) */
    int encap_mask;
    int encap_any;
    Py_ssize_t n_collectors;
    uint32_t *collectors;
    long long encap[4]; /* outer packets handled here: ERSPAN II, ERSPAN III, GRE TEB, VXLAN */
} FastPath;

/* capture/encap.py's bits */
#define ENCAP_ERSPAN 1
#define ENCAP_GRE_TEB 2
#define ENCAP_VXLAN 4
enum { K_ERSPAN2 = 0, K_ERSPAN3 = 1, K_GRETAP = 2, K_VXLAN = 3 };
#define VXLAN_PORT 4789

#define EMPTY 0
#define DELETED 1

static inline size_t hash_key(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k;
}

static Slot *table_find(FastPath *fp, uint64_t key) {
    size_t i = hash_key(key) & fp->mask;
    for (;;) {
        Slot *sl = &fp->slots[i];
        if (sl->key == key || sl->key == EMPTY) return sl;
        i = (i + 1) & fp->mask;
    }
}

static int table_grow(FastPath *fp) {
    size_t size = (fp->mask + 1) * (fp->used * 4 > fp->mask + 1 ? 2 : 1);
    Slot *old = fp->slots;
    size_t old_size = fp->mask + 1;
    Slot *slots = PyMem_Calloc(size, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    fp->slots = slots;
    fp->mask = size - 1;
    fp->filled = fp->used;
    for (size_t i = 0; i < old_size; i++)
        if (old[i].key > DELETED) *table_find(fp, old[i].key) = old[i];
    PyMem_Free(old);
    return 0;
}

static int endpoint_key(PyObject *addr, int port, uint64_t *key) {
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(addr, &p, &n) < 0) return -1;
    if (n != 4) return 0; /* IPv6: the Python path has it */
    const unsigned char *a = (const unsigned char *)p;
    uint64_t ip = (uint64_t)a[0] << 24 | (uint64_t)a[1] << 16 | (uint64_t)a[2] << 8 | a[3];
    *key = 2 + ((ip << 16) | (uint64_t)(port & 0xFFFF));
    return 1;
}

static PyObject *fp_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (kw != NULL && PyDict_GET_SIZE(kw) != 0) {
        PyErr_SetString(PyExc_TypeError, "FastPath() takes no arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, ":FastPath")) return NULL;
    FastPath *fp = (FastPath *)type->tp_alloc(type, 0);
    if (fp == NULL) return NULL;
    fp->slots = PyMem_Calloc(64, sizeof(Slot));
    if (fp->slots == NULL) {
        Py_DECREF(fp);
        return PyErr_NoMemory();
    }
    fp->mask = 63;
    return (PyObject *)fp;
}

static int fp_traverse(FastPath *fp, visitproc visit, void *arg) {
    if (fp->slots)
        for (size_t i = 0; i <= fp->mask; i++)
            if (fp->slots[i].key > DELETED) Py_VISIT(fp->slots[i].value);
    return 0;
}

static int fp_clear(FastPath *fp) {
    if (fp->slots) {
        for (size_t i = 0; i <= fp->mask; i++)
            if (fp->slots[i].key > DELETED) {
                fp->slots[i].key = DELETED;
                Py_CLEAR(fp->slots[i].value);
            }
        fp->used = 0;
    }
    return 0;
}

static void fp_dealloc(FastPath *fp) {
    PyObject_GC_UnTrack(fp);
    fp_clear(fp);
    PyMem_Free(fp->slots);
    PyMem_Free(fp->collectors);
    Py_TYPE(fp)->tp_free((PyObject *)fp);
}

/* set(address, port, stream): route an endpoint (IPv6 keys are ignored: the Python path has them) */
static PyObject *fp_set(FastPath *fp, PyObject *args) {
    PyObject *addr, *value;
    int port;
    uint64_t key;
    if (!PyArg_ParseTuple(args, "SiO", &addr, &port, &value)) return NULL;
    int r = endpoint_key(addr, port, &key);
    if (r <= 0) return r < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
    if ((fp->filled + 1) * 2 > fp->mask + 1 && table_grow(fp) < 0) return NULL;
    Slot *sl = table_find(fp, key);
    Py_INCREF(value);
    if (sl->key == key) {
        Py_SETREF(sl->value, value);
    } else {
        sl->key = key;
        sl->value = value;
        fp->used++;
        fp->filled++;
    }
    Py_RETURN_NONE;
}

static PyObject *fp_discard(FastPath *fp, PyObject *args) {
    PyObject *addr;
    int port;
    uint64_t key;
    if (!PyArg_ParseTuple(args, "Si", &addr, &port)) return NULL;
    int r = endpoint_key(addr, port, &key);
    if (r < 0) return NULL;
    if (r > 0) {
        Slot *sl = table_find(fp, key);
        if (sl->key == key) {
            sl->key = DELETED;
            Py_CLEAR(sl->value);
            fp->used--;
        }
    }
    Py_RETURN_NONE;
}

static Py_ssize_t fp_len(FastPath *fp) { return (Py_ssize_t)fp->used; }

static PyObject *fp_take_not_recorded(FastPath *fp, PyObject *unused) {
    long long n = fp->not_recorded;
    fp->not_recorded = 0;
    return PyLong_FromLongLong(n);
}

static PyObject *fp_take_other_source(FastPath *fp, PyObject *unused) {
    long long n = fp->other_source;
    fp->other_source = 0;
    return PyLong_FromLongLong(n);
}

/* set_encap(mask, collectors): which encapsulations the loop opens (EncapConfig.mask) and from
 * which outer source addresses (an iterable of raw 4- or 16-byte addresses; empty: any). */
static PyObject *fp_set_encap(FastPath *fp, PyObject *args) {
    int mask;
    PyObject *collectors;
    if (!PyArg_ParseTuple(args, "iO", &mask, &collectors)) return NULL;
    PyObject *seq = PySequence_Fast(collectors, "collectors must be an iterable of address bytes");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), v4 = 0;
    uint32_t *list = PyMem_Calloc(n ? (size_t)n : 1, sizeof(uint32_t));
    if (list == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *a = PySequence_Fast_GET_ITEM(seq, k);
        if (!PyBytes_Check(a) || (PyBytes_GET_SIZE(a) != 4 && PyBytes_GET_SIZE(a) != 16)) {
            PyErr_SetString(PyExc_TypeError, "a collector must be a 4- or 16-byte address");
            PyMem_Free(list);
            Py_DECREF(seq);
            return NULL;
        }
        if (PyBytes_GET_SIZE(a) == 4) {
            const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(a);
            list[v4++] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        }
    }
    Py_DECREF(seq);
    PyMem_Free(fp->collectors);
    fp->collectors = list;
    fp->n_collectors = v4;
    fp->encap_any = n == 0;
    fp->encap_mask = mask & (ENCAP_ERSPAN | ENCAP_GRE_TEB | ENCAP_VXLAN); /* TZSP: Python's */
    Py_RETURN_NONE;
}

static PyObject *fp_take_encap(FastPath *fp, PyObject *unused) {
    PyObject *r = Py_BuildValue("(LLLL)", fp->encap[K_ERSPAN2], fp->encap[K_ERSPAN3], fp->encap[K_GRETAP],
                                fp->encap[K_VXLAN]);
    if (r != NULL) memset(fp->encap, 0, sizeof fp->encap);
    return r;
}

/* The inner Ethernet frame of a remote SPAN packet that C opens: plain Ethernet, IPv4 without
 * options, not a fragment, from a collector (or any), carrying
 *   GRE 0x88BE ERSPAN II   (GRE flags none or only S: 4 or 8 bytes; ERSPAN version 1, 8 bytes),
 *   GRE 0x22EB ERSPAN III  (GRE flags none or only S; version 2, 12 bytes, frame type Ethernet,
 *                           no platform sub-header),
 *   GRE 0x6558 TEB         (plain 4-byte GRE header),
 *   UDP to 4789 VXLAN      (flags exactly I, reserved fields zero).
 * Returns the kind (K_*) and sets *inner / *inner_len (the frame up to the outer IP packet's end,
 * as capture/encap.py slices it), or -1: not one C opens, and the loop stops for Python (which
 * opens the rest, or counts why not). Reads only; no allocation. */
static int encap_inner(FastPath *fp, const unsigned char *f, Py_ssize_t len, const unsigned char **inner,
                       Py_ssize_t *inner_len) {
    if (len < 34 || f[12] != 8 || f[13] != 0 || f[14] != 0x45 || (f[20] & 0x3F) || f[21]) return -1;
    Py_ssize_t ip_end = 14 + ((f[16] << 8) | f[17]);
    if (ip_end > len || ip_end < 34) return -1;
    Py_ssize_t off;
    int kind;
    if (f[23] == 47) {
        if (!(fp->encap_mask & (ENCAP_ERSPAN | ENCAP_GRE_TEB)) || ip_end < 38) return -1;
        unsigned flags = (unsigned)(f[34] << 8 | f[35]), proto = (unsigned)(f[36] << 8 | f[37]);
        if (proto == 0x6558) {
            if (!(fp->encap_mask & ENCAP_GRE_TEB) || flags != 0) return -1;
            kind = K_GRETAP;
            off = 38;
        } else if (proto == 0x88BE || proto == 0x22EB) {
            if (!(fp->encap_mask & ENCAP_ERSPAN) || (flags != 0 && flags != 0x1000)) return -1;
            off = flags ? 42 : 38;
            if (proto == 0x88BE) {
                if (ip_end < off + 8 || f[off] >> 4 != 1) return -1;
                kind = K_ERSPAN2;
                off += 8;
            } else {
                /* version 2; the last 16 bits: P(1) FT(5) HW ID(6) D(1) Gra(2) O(1) */
                if (ip_end < off + 12 || f[off] >> 4 != 2 || (f[off + 10] & 0x7C) || (f[off + 11] & 1)) return -1;
                kind = K_ERSPAN3;
                off += 12;
            }
        } else {
            return -1;
        }
    } else if (f[23] == 17) {
        if (!(fp->encap_mask & ENCAP_VXLAN) || ip_end < 50 || ((f[36] << 8) | f[37]) != VXLAN_PORT) return -1;
        if (14 + 20 + ((f[38] << 8) | f[39]) != ip_end) return -1; /* UDP length: the whole IP payload */
        if (f[42] != 0x08 || f[43] || f[44] || f[45] || f[49]) return -1;
        kind = K_VXLAN;
        off = 50;
    } else {
        return -1;
    }
    if (!fp->encap_any) {
        uint32_t src = (uint32_t)f[26] << 24 | (uint32_t)f[27] << 16 | (uint32_t)f[28] << 8 | f[29];
        Py_ssize_t k = 0;
        while (k < fp->n_collectors && fp->collectors[k] != src) k++;
        if (k == fp->n_collectors) return -1; /* not a collector's: Python counts it */
    }
    *inner = f + off;
    *inner_len = ip_end - off;
    return kind;
}

/* run(batch, i, now, next_tick) -> (i, now, full): handle packets from batch[i] on until one needs
 * Python (returned as i; len(batch) when all were handled), or until a packet fills a buffer of its
 * recording: then i is the packet after it and ``full`` its stream (else None), whose recording
 * capture has write the buffers out (StreamAssembler.flush_buffers) before it runs the loop again.
 * ``now`` is the pipeline's packet time; a packet that moves it to or past ``next_tick`` is left to
 * Python, which runs the housekeeping first. */
/* One packet of run(): STOP (left to Python, nothing changed), NEXT (handled or dropped), FILLED
 * (handled, and a buffer of its stream's recording is full: *full is the stream) or FAILED. */
enum { STOP = 0, NEXT = 1, FILLED = 2 };

static inline int run_one(FastPath *fp, double ts, long linktype, const unsigned char *f, Py_ssize_t len,
                          double *now, double next_tick, PyObject **full) {
    if (ts > *now) {
        if (ts >= next_tick) return STOP; /* housekeeping is due: Python runs it, then this packet */
        *now = ts;
    }
    if (linktype != 1) return STOP;
    int kind = -1; /* the encapsulation it arrived in (K_*), or none */
    if (fp->encap_mask && len > 42 && (f[23] == 47 || (f[23] == 17 && (f[42] & 0xC0) != 0x80))) {
        /* perhaps a remote SPAN packet: C goes on with its inner frame, or stops here */
        kind = encap_inner(fp, f, len, &f, &len);
        if (kind < 0) return STOP;
    }
    /* the same test as CapturePipeline.feed's fast path */
    if (!(len > 54 && f[12] == 8 && f[13] == 0 && f[14] == 0x45 && f[23] == 17 && !(f[20] & 0x3F) && !f[21] &&
          (f[42] & 0xC0) == 0x80))
        return STOP;
    Py_ssize_t end = 14 + ((f[16] << 8) | f[17]);
    if (!(54 < end && end <= len)) return STOP;
    uint64_t ip = (uint64_t)f[30] << 24 | (uint64_t)f[31] << 16 | (uint64_t)f[32] << 8 | f[33];
    Slot *sl = table_find(fp, 2 + ((ip << 16) | (uint64_t)((f[36] << 8) | f[37])));
    if (sl->key == EMPTY) {
        fp->not_recorded++;
        if (kind >= 0) fp->encap[kind]++;
        return NEXT;
    }
    PyObject *stream = sl->value;
    if (!PyObject_TypeCheck(stream, &StreamCoreType)) return STOP;
    StreamCore *s = (StreamCore *)stream;
    uint64_t src = (uint64_t)f[26] << 24 | (uint64_t)f[27] << 16 | (uint64_t)f[28] << 8 | f[29];
    uint64_t src_key = 2 + ((src << 16) | (uint64_t)((f[34] << 8) | f[35]));
    if (src_key != s->src_key) {
        /* its source is to be learned, or it comes from a media endpoint of a call (perhaps
         * one the sender's SDP announced): Python decides; from anywhere else it is not the
         * sender's, dropped as in Python */
        if (!s->learned || table_find(fp, src_key)->key != EMPTY) return STOP;
        s->other_source++;
        fp->other_source++;
        if (kind >= 0) fp->encap[kind]++;
        return NEXT;
    }
    int pt = f[43] & 0x7F;
    if (f[42] != 0x80 || (pt >= RTCP_PT_FIRST && pt <= RTCP_PT_LAST)) return STOP;
    long seq = (f[44] << 8) | f[45];
    long long rtp_ts = (long long)f[46] << 24 | f[47] << 16 | f[48] << 8 | f[49];
    long long ssrc = (long long)f[50] << 24 | f[51] << 16 | f[52] << 8 | f[53];
    int r = core_packet(s, ts, (int)linktype, pt, seq, rtp_ts, ssrc, f, len, 54, end - 54);
    if (r == FAILED) return FAILED;
    if (r == BAIL) return STOP;
    fp->handled++;
    if (kind >= 0) fp->encap[kind]++;
    if (r == DUE) { /* a buffer is full: capture has it written out, then calls run() again */
        *full = stream;
        return FILLED;
    }
    return NEXT;
}

/* Prefetching ahead in a batch. With thousands of calls in progress, a packet's state is rarely in
 * the cache, and run_one() meets it through a chain of dependent loads: the table's slot, then the
 * stream, then its Lanes and Records, then their bytearrays, each a miss waiting for the one before
 * (perf annotate: ~80 % of run_one's time at 3,000 calls). So the loop looks ahead, each stage using
 * only what an earlier one prefetched: for the packet AHEAD_FRAME places on it the frame's headers,
 * AHEAD_SLOT on it the destination's slot, AHEAD_STREAM on it the stream the slot holds, AHEAD_BUFFERS
 * on it the stream's Lanes and Records and the mirror slot its sequence number picks, AHEAD_ARRAYS on
 * it their bytearray objects: the misses of several packets are in flight at once instead of one after
 * another. Only hints: nothing is changed, a look that fails the steady case's tests is dropped,
 * run_one() decides everything as before. Every pointer followed is one nothing can change within one
 * fp_run() (the table changes only from Python, the kernel calls no Python, an armed stream keeps its
 * Lanes and Records); a prefetch faults nothing. docs/hot-path.md has the figures. */
#define AHEAD_FRAME 20
#define AHEAD_SLOT 14
#define AHEAD_STREAM 9
#define AHEAD_BUFFERS 5
#define AHEAD_ARRAYS 2
#define AHEAD_RING 32 /* a power of two above AHEAD_FRAME */

typedef struct {
    const unsigned char *f; /* the (inner) frame, or NULL: not the steady case's shape */
    uint64_t key;
    const Slot *slot;
    StreamCore *s;
} Ahead;

static inline void prefetch_lines(const void *p, int lines) {
    for (int k = 0; k < lines; k++) __builtin_prefetch((const char *)p + 64 * k, 0, 3);
}

/* Every line of a frame up to FRAME_LINES of them (a G.711 packet's headers and payload: 214 to
 * 294 bytes, 4 or 5 lines from wherever it starts): the payload is copied into its lane, and the
 * frames of a capture file lie one after another where no hardware prefetcher runs ahead. */
#define FRAME_LINES 6
static inline void prefetch_frame(const unsigned char *f, Py_ssize_t len) {
    uintptr_t line = (uintptr_t)f & ~(uintptr_t)63, last = (uintptr_t)f + (len < 64 * (FRAME_LINES - 1) ? len : 64 * (FRAME_LINES - 1));
    for (; line < last; line += 64) __builtin_prefetch((const void *)line, 0, 3);
}

static inline void ahead_slot(FastPath *fp, Ahead *a, const unsigned char *f, Py_ssize_t len) {
    a->f = NULL;
    a->s = NULL;
    if (fp->encap_mask && len > 42 && (f[23] == 47 || (f[23] == 17 && (f[42] & 0xC0) != 0x80))) {
        if (encap_inner(fp, f, len, &f, &len) < 0) return;
    }
    if (!(len > 54 && f[12] == 8 && f[13] == 0 && f[14] == 0x45 && f[23] == 17)) return;
    uint64_t ip = (uint64_t)f[30] << 24 | (uint64_t)f[31] << 16 | (uint64_t)f[32] << 8 | f[33];
    a->f = f;
    a->key = 2 + ((ip << 16) | (uint64_t)((f[36] << 8) | f[37]));
    a->slot = &fp->slots[hash_key(a->key) & fp->mask];
    __builtin_prefetch(a->slot, 0, 3);
}

static inline void ahead_stream(Ahead *a) {
    if (a->f == NULL || a->slot->key != a->key) return; /* (a probe further on: run_one walks it) */
    a->s = (StreamCore *)a->slot->value;
    prefetch_lines(a->s, (int)((offsetof(StreamCore, recent) + 63) / 64));
}

static inline void ahead_buffers(Ahead *a) {
    StreamCore *s = a->s;
    if (s == NULL) return;
    if (!PyObject_TypeCheck((PyObject *)s, &StreamCoreType) || !s->armed || s->lanes == NULL) {
        a->s = NULL; /* not a stream the steady case handles: ahead_arrays() leaves it */
        return;
    }
    __builtin_prefetch(s->lanes, 0, 3);
    if (s->records != NULL) __builtin_prefetch(s->records, 0, 3);
    prefetch_lines(&s->recent[((a->f[44] << 8) | a->f[45]) & (MIRROR_RING - 1)], 1);
}

static inline void ahead_arrays(Ahead *a) {
    StreamCore *s = a->s;
    if (s == NULL || s->channel < 1 || s->channel > 2) return; /* (ahead_buffers() checked the rest) */
    __builtin_prefetch(s->lanes->buf[s->channel - 1], 0, 3);
    if (s->records != NULL) __builtin_prefetch(s->records->buf, 0, 3);
}

/* run(batch, i, now, next_tick) -> (i, now, full): handle packets from batch[i] on until one needs
 * Python (returned as i; len(batch) when all were handled), or until a packet fills a buffer of its
 * recording: then i is the packet after it and ``full`` its stream (else None), whose recording
 * capture has write the buffers out (StreamAssembler.flush_buffers) before it runs the loop again.
 * ``now`` is the pipeline's packet time; a packet that moves it to or past ``next_tick`` is left to
 * Python, which runs the housekeeping first. ``batch`` is a Frames (read in place: no Python object
 * per packet) or a list of (ts, linktype, frame) tuples (batches made in Python). */
static PyObject *fp_run(FastPath *fp, PyObject *args) {
    PyObject *batch;
    Py_ssize_t i;
    double now, next_tick;
    PyObject *full = Py_None;
    if (!PyArg_ParseTuple(args, "Ondd", &batch, &i, &now, &next_tick)) return NULL;
    if (i < 0) i = 0;
    if (Py_IS_TYPE(batch, &FramesType)) {
        Frames *b = (Frames *)batch;
        if (!frames_usable(b)) return NULL;
        Ahead ahead[AHEAD_RING];
        Py_ssize_t n = b->n;
        for (Py_ssize_t j = i; j < n && j < i + AHEAD_FRAME; j++) prefetch_frame(b->base + b->d[j].off, b->d[j].len);
        for (Py_ssize_t j = i; j < n && j < i + AHEAD_SLOT; j++)
            ahead_slot(fp, &ahead[j & (AHEAD_RING - 1)], b->base + b->d[j].off, b->d[j].len);
        for (Py_ssize_t j = i; j < n && j < i + AHEAD_STREAM; j++) ahead_stream(&ahead[j & (AHEAD_RING - 1)]);
        for (Py_ssize_t j = i; j < n && j < i + AHEAD_BUFFERS; j++) ahead_buffers(&ahead[j & (AHEAD_RING - 1)]);
        for (Py_ssize_t j = i; j < n && j < i + AHEAD_ARRAYS; j++) ahead_arrays(&ahead[j & (AHEAD_RING - 1)]);
        for (; i < n; i++) {
            const FrameDesc *d = &b->d[i];
            Py_ssize_t j;
            if ((j = i + AHEAD_FRAME) < n) prefetch_frame(b->base + b->d[j].off, b->d[j].len);
            if ((j = i + AHEAD_SLOT) < n) ahead_slot(fp, &ahead[j & (AHEAD_RING - 1)], b->base + b->d[j].off, b->d[j].len);
            if ((j = i + AHEAD_STREAM) < n) ahead_stream(&ahead[j & (AHEAD_RING - 1)]);
            if ((j = i + AHEAD_BUFFERS) < n) ahead_buffers(&ahead[j & (AHEAD_RING - 1)]);
            if ((j = i + AHEAD_ARRAYS) < n) ahead_arrays(&ahead[j & (AHEAD_RING - 1)]);
            int r = run_one(fp, d->ts, b->linktype, b->base + d->off, d->len, &now, next_tick, &full);
            if (r == NEXT) continue;
            if (r == FAILED) return NULL;
            if (r == FILLED) i++;
            break;
        }
        return Py_BuildValue("(ndO)", i, now, full);
    }
    if (!PyList_Check(batch)) {
        PyErr_SetString(PyExc_TypeError, "run() takes a Frames or a list of (ts, linktype, frame)");
        return NULL;
    }
    for (; i < PyList_GET_SIZE(batch); i++) {
        PyObject *item = PyList_GET_ITEM(batch, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) break;
        PyObject *ts_o = PyTuple_GET_ITEM(item, 0), *lt_o = PyTuple_GET_ITEM(item, 1),
                 *fr_o = PyTuple_GET_ITEM(item, 2);
        if (!PyFloat_CheckExact(ts_o) || !PyBytes_CheckExact(fr_o) || !PyLong_CheckExact(lt_o)) break;
        long linktype = PyLong_AsLong(lt_o);
        if (linktype == -1 && PyErr_Occurred()) { /* not a link type at all: Python counts it */
            PyErr_Clear();
            break;
        }
        /* the frame is read while the list holds it: nothing here calls back into Python */
        int r = run_one(fp, PyFloat_AS_DOUBLE(ts_o), linktype, (const unsigned char *)PyBytes_AS_STRING(fr_o),
                        PyBytes_GET_SIZE(fr_o), &now, next_tick, &full);
        if (r == NEXT) continue;
        if (r == FAILED) return NULL;
        if (r == FILLED) i++;
        break;
    }
    return Py_BuildValue("(ndO)", i, now, full);
}

static PyMethodDef fp_methods[] = {
    {"set", (PyCFunction)fp_set, METH_VARARGS, "Route an IPv4 endpoint (address bytes, port) to a stream."},
    {"discard", (PyCFunction)fp_discard, METH_VARARGS, "Forget an endpoint."},
    {"run", (PyCFunction)fp_run, METH_VARARGS, "Handle packets of a batch until one needs Python."},
    {"take_not_recorded", (PyCFunction)fp_take_not_recorded, METH_NOARGS,
     "Packets dropped as media of calls not recorded since the last call."},
    {"take_other_source", (PyCFunction)fp_take_other_source, METH_NOARGS,
     "Packets dropped as coming from another source than their direction's since the last call."},
    {"set_encap", (PyCFunction)fp_set_encap, METH_VARARGS,
     "Open these remote SPAN encapsulations (EncapConfig.mask) from these collectors (empty: any)."},
    {"take_encap", (PyCFunction)fp_take_encap, METH_NOARGS,
     "(erspan2, erspan3, gretap, vxlan): outer packets handled here since the last call."},
    {NULL},
};

static PyMemberDef fp_members[] = {
    {"handled", T_LONGLONG, offsetof(FastPath, handled), READONLY, "RTP packets of recorded calls handled in C"},
    {NULL},
};

static PySequenceMethods fp_as_sequence = {.sq_length = (lenfunc)fp_len};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "capture._fastpath.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = fp_new,
    .tp_dealloc = (destructor)fp_dealloc,
    .tp_traverse = (traverseproc)fp_traverse,
    .tp_clear = (inquiry)fp_clear,
    .tp_methods = fp_methods,
    .tp_members = fp_members,
    .tp_as_sequence = &fp_as_sequence,
    .tp_doc = "The pipeline's fast path: an endpoint table and the batch loop (see capture/pipeline.py).",
};

static PyMethodDef module_methods[] = {
    {"read_pcap", read_pcap, METH_VARARGS, "One batch of a classic pcap file's records."},
    {"ring_block", ring_block, METH_VARARGS, "The packets of one TPACKET_V3 block."},
    {NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "capture._fastpath", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&FramesType) < 0 || PyType_Ready(&LanesType) < 0 || PyType_Ready(&RecordsType) < 0 || PyType_Ready(&StreamCoreType) < 0 ||
        PyType_Ready(&FastPathType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&FramesType);
    Py_INCREF(&LanesType);
    Py_INCREF(&RecordsType);
    Py_INCREF(&StreamCoreType);
    Py_INCREF(&FastPathType);
    if (PyModule_AddObject(m, "Frames", (PyObject *)&FramesType) < 0 ||
        PyModule_AddObject(m, "Lanes", (PyObject *)&LanesType) < 0 ||
        PyModule_AddObject(m, "Records", (PyObject *)&RecordsType) < 0 ||
        PyModule_AddObject(m, "StreamCore", (PyObject *)&StreamCoreType) < 0 ||
        PyModule_AddObject(m, "FastPath", (PyObject *)&FastPathType) < 0 ||
        PyModule_AddIntConstant(m, "MAX_SNAPLEN", MAX_SNAPLEN) < 0 ||
        PyModule_AddIntConstant(m, "SEQ_WINDOW", SEQ_WINDOW) < 0 ||
        PyModule_AddIntConstant(m, "MIRROR_RING", MIRROR_RING) < 0 ||
        PyModule_AddIntConstant(m, "RTCP_PT_FIRST", RTCP_PT_FIRST) < 0 ||
        PyModule_AddIntConstant(m, "RTCP_PT_LAST", RTCP_PT_LAST) < 0 ||
        PyModule_AddObject(m, "MIRROR_WINDOW_S", PyFloat_FromDouble(MIRROR_WINDOW_S)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
