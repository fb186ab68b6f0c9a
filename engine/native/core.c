/* ndis_replay.engine.native._core: the CPython face of the native core.
 *
 * Engine(...) binds one strategy to a fresh runtime and a loopback miniport over the replay input's arrays (held
 * as buffers for the engine's life); Engine.round() runs one timed round as engine/replay.py's timed_round does
 * (per call: clock, build, clock, submit, clock, poll; stores after the call) with the GIL released. The clock
 * (clock.h) is the invariant TSC where there is one, else clock_gettime(CLOCK_MONOTONIC); stamps come back as
 * CLOCK_MONOTONIC ns, the time base of time.perf_counter_ns on Linux. Bad input is refused with TypeError/ValueError before anything runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "engine.h"
#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* the most packets one send call may hold (reuse pool_depth's bound too), and the largest frame, bytes (an MDL's
 * CSHORT Size must hold its PFN array) */
#define MAX_CALL_PACKETS 1000000
/* the most calls one clock reading may span (timing by runs) */
#define MAX_RUN_CALLS 1000000
#define MAX_FRAME_BYTES (1 << 24)
/* pacing sleeps (instead of spinning) while the next call is due more than this far ahead, ns (engine/replay.py) */
#define SPIN_NS 1000000

static PyObject *NativeFailure;
NATIVE_CLOCK native_clock = {0, 1.0};
static char clock_text[160] = "clock_gettime(CLOCK_MONOTONIC)";

static void calibrate_tsc(void) {
    /* an invariant TSC (CPUID 0x80000007 EDX bit 8), ns per tick measured against CLOCK_MONOTONIC over 20 ms */
#if defined(__x86_64__)
    const char *forced = getenv("NDIS_REPLAY_CLOCK");
    if (forced != NULL && strcmp(forced, "monotonic") == 0) return;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(0x80000007u, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 8))) return;
    int64_t m0 = monotonic_ns(), t0 = (int64_t)__rdtsc();
    int64_t m1 = m0, t1 = t0;
    while (m1 - m0 < 20000000) {
        m1 = monotonic_ns();
        t1 = (int64_t)__rdtsc();
    }
    if (t1 <= t0) return;
    native_clock.ns_per_tick = (double)(m1 - m0) / (double)(t1 - t0);
    native_clock.use_tsc = 1;
    snprintf(clock_text, sizeof(clock_text), "rdtsc (invariant TSC, %.6f ns/tick against CLOCK_MONOTONIC)",
             native_clock.ns_per_tick);
#endif
}

/* ticks read during a round → CLOCK_MONOTONIC ns, from the anchor pair read at the round's start */
static inline int64_t to_ns(int64_t ticks, int64_t tick_anchor, int64_t ns_anchor) {
    if (!native_clock.use_tsc) return ticks;
    return ns_anchor + (int64_t)llround((double)(ticks - tick_anchor) * native_clock.ns_per_tick);
}

/* --- buffers ------------------------------------------------------------------------------------------------------ */

static int int64_view(PyObject *obj, Py_buffer *view, const char *name, int writable, Py_ssize_t length) {
    /* a 1-d C-contiguous int64 buffer of `length` items (-1: any length) */
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a %sC-contiguous int64 array", name, writable ? "writable " : "");
        return -1;
    }
    const char *f = view->format != NULL ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@') f++;
    if (view->ndim != 1 || view->itemsize != 8 || (strcmp(f, "q") != 0 && strcmp(f, "l") != 0)) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s must be a 1-d int64 array", name);
        return -1;
    }
    if (length >= 0 && view->shape[0] != length) {
        Py_ssize_t got = view->shape[0];
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s has %zd items, expected %zd", name, got, length);
        return -1;
    }
    return 0;
}

/* --- the engine --------------------------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD NDIS_RT rt;
    LOOPBACK mp;
    STRATEGY s;
    REPLAY_INPUT in;
    WIRE_CAPTURE wire;
    TAP_WIRE tap;          /* the tap variant's device (attach_tap); tap.fd < 0: the loopback */
    PyObject *tap_drain;   /* drain(log: bytes, size: int) -> (in_flight, in_flight_bytes): the Python far side */
    PyObject *tap_error[3]; /* what drain raised during a round (type, value, traceback) */
    Py_buffer data, frame_offset, header_len, index, call_start;
    Py_buffer frame_start; /* held only when given (has_start); else frames are contiguous: frame_offset[:-1] */
    int has_start;
    int views;   /* buffers held */
    int bound;   /* strategy bound, not yet unbound */
    int broken;  /* a round failed: the engine runs no further round */
    int busy;    /* a round is running (GIL released) */
    int which;
} EngineObject;

static void engine_release(EngineObject *self) {
    if (self->bound) {
        if (!self->broken) {
            LoopbackDrain(&self->mp);
            if (!self->rt.failure) self->s.unbind(&self->s);
        }
        self->bound = 0;
    }
    NdisRtRelease(&self->rt);
    free(self->tap.log);
    free(self->tap.iov);
    free(self->tap.scratch);
    memset(&self->tap, 0, sizeof(self->tap));
    self->mp.tap = NULL;
    Py_CLEAR(self->tap_drain);
    for (int i = 0; i < 3; i++) Py_CLEAR(self->tap_error[i]);
    free(self->wire.bytes);
    free(self->wire.lengths);
    free(self->wire.nbs);
    memset(&self->wire, 0, sizeof(self->wire));
    if (self->views) {
        PyBuffer_Release(&self->data);
        PyBuffer_Release(&self->frame_offset);
        PyBuffer_Release(&self->header_len);
        PyBuffer_Release(&self->index);
        PyBuffer_Release(&self->call_start);
        if (self->has_start) PyBuffer_Release(&self->frame_start);
        self->has_start = 0;
        self->views = 0;
    }
}

static int validate_input(EngineObject *self) {
    REPLAY_INPUT *in = &self->in;
    if (in->packets < 1) {
        PyErr_SetString(PyExc_ValueError, "empty trace: no packet to replay");
        return -1;
    }
    if (in->calls < 1 || in->call_start[0] != 0 || in->call_start[in->calls] != in->packets) {
        PyErr_SetString(PyExc_ValueError, "call_start must run from 0 to the number of packets");
        return -1;
    }
    in->max_call = 0;
    for (int64_t k = 0; k < in->calls; k++) {
        int64_t size = in->call_start[k + 1] - in->call_start[k];
        if (size < 1) {
            PyErr_Format(PyExc_ValueError, "send call %lld is empty (call_start must increase)", (long long)k);
            return -1;
        }
        if (size > MAX_CALL_PACKETS) {
            PyErr_Format(PyExc_ValueError, "send call %lld holds %lld packets, more than %d", (long long)k,
                         (long long)size, MAX_CALL_PACKETS);
            return -1;
        }
        if (size > in->max_call) in->max_call = size;
    }
    if (in->frame_offset[0] < 0) {
        PyErr_SetString(PyExc_ValueError, "frame_offset must start at 0 or later");
        return -1;
    }
    in->max_frame = 0;
    for (int64_t i = 0; i < in->packets; i++) {
        int64_t length = in->frame_offset[i + 1] - in->frame_offset[i];
        if (length < 0 || length > MAX_FRAME_BYTES) {
            PyErr_Format(PyExc_ValueError, "frame %lld has %lld bytes (0 to %d allowed)", (long long)i,
                         (long long)length, MAX_FRAME_BYTES);
            return -1;
        }
        if (length > in->max_frame) in->max_frame = length;
        /* every frame lies inside data, wherever it starts (frame_start: views need not be contiguous) */
        if (in->frame_start[i] < 0 || in->frame_start[i] > in->data_len - length) {
            PyErr_Format(PyExc_ValueError, "frame %lld (%lld bytes at %lld) lies beyond the %lld bytes of data",
                         (long long)i, (long long)length, (long long)in->frame_start[i], (long long)in->data_len);
            return -1;
        }
    }
    return 0;
}

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"strategy",   "params", "completion",  "count",        "delay_ns",
                             "from_current_mdl", "data", "frame_offset", "header_len", "index",
                             "call_start", "max_in_flight", "frame_start", NULL};
    int which, kind, from_current;
    long long count, delay_ns, max_in_flight;
    PyObject *params, *data, *frame_offset, *header_len, *index, *call_start, *frame_start = Py_None;
    if (self->views || self->bound) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOiLLpOOOOOL|O", kwlist, &which, &params, &kind, &count,
                                     &delay_ns, &from_current, &data, &frame_offset, &header_len, &index, &call_start,
                                     &max_in_flight, &frame_start))
        return -1;
    if (which != STRATEGY_REUSE && which != STRATEGY_ALLOC && which != STRATEGY_NDIS5_ALLOC &&
        which != STRATEGY_NDIS5_REUSE && !(which >= STRATEGY_COPY && which <= STRATEGY_CLONE)) {
        PyErr_Format(PyExc_ValueError, "unknown native strategy %d", which);
        return -1;
    }
    if (kind < COMPLETION_SYNC || kind > COMPLETION_DELAY || (kind == COMPLETION_BATCHED && count < 1) ||
        delay_ns < 0 || max_in_flight < 0 || max_in_flight > MAX_CALL_PACKETS + 1000000LL) {
        PyErr_SetString(PyExc_ValueError, "invalid completion policy or max_in_flight");
        return -1;
    }
    int64_t p[5] = {0, 0, 0, 0, 0};
    if (!PyTuple_Check(params) || PyTuple_GET_SIZE(params) != 5) {
        PyErr_SetString(PyExc_TypeError, "params must be a tuple of 5 integers");
        return -1;
    }
    for (int i = 0; i < 5; i++) {
        p[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(params, i));
        if (p[i] == -1 && PyErr_Occurred()) return -1;
        if (p[i] < 0 || p[i] > 1000000) {
            PyErr_Format(PyExc_ValueError, "params[%d] = %lld is out of range", i, (long long)p[i]);
            return -1;
        }
    }
    if (which == STRATEGY_ALLOC && (p[0] % 16 || p[1] % 16 || p[0] + p[1] > 0xFFF0 || (p[3] && p[0] < 16))) {
        PyErr_SetString(PyExc_ValueError, "alloc: context sizes must be multiples of 16 (locked needs 16 or more)");
        return -1;
    }
    if (PyObject_GetBuffer(data, &self->data, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "data must be a bytes-like object");
        return -1;
    }
    if (int64_view(call_start, &self->call_start, "call_start", 0, -1) < 0) {
        PyBuffer_Release(&self->data);
        return -1;
    }
    Py_ssize_t calls = self->call_start.shape[0] - 1;
    if (int64_view(index, &self->index, "index", 0, -1) < 0) {
        PyBuffer_Release(&self->data);
        PyBuffer_Release(&self->call_start);
        return -1;
    }
    Py_ssize_t n = self->index.shape[0];
    if (int64_view(frame_offset, &self->frame_offset, "frame_offset", 0, n + 1) < 0) {
        PyBuffer_Release(&self->data);
        PyBuffer_Release(&self->call_start);
        PyBuffer_Release(&self->index);
        return -1;
    }
    if (int64_view(header_len, &self->header_len, "header_len", 0, n) < 0) {
        PyBuffer_Release(&self->data);
        PyBuffer_Release(&self->call_start);
        PyBuffer_Release(&self->index);
        PyBuffer_Release(&self->frame_offset);
        return -1;
    }
    if (frame_start != Py_None) {
        if (int64_view(frame_start, &self->frame_start, "frame_start", 0, n) < 0) {
            PyBuffer_Release(&self->data);
            PyBuffer_Release(&self->call_start);
            PyBuffer_Release(&self->index);
            PyBuffer_Release(&self->frame_offset);
            PyBuffer_Release(&self->header_len);
            return -1;
        }
        self->has_start = 1;
    }
    self->views = 1;
    REPLAY_INPUT *in = &self->in;
    in->data = self->data.buf;
    in->data_len = self->data.len;
    in->frame_offset = self->frame_offset.buf;
    in->frame_start = self->has_start ? (const int64_t *)self->frame_start.buf : in->frame_offset;
    in->header_len = self->header_len.buf;
    in->index = self->index.buf;
    in->call_start = self->call_start.buf;
    in->packets = n;
    in->calls = calls;
    if (validate_input(self) < 0) {
        engine_release(self);
        return -1;
    }
    NdisRtInit(&self->rt);
    LoopbackOpen(&self->mp, &self->rt, kind, count, delay_ns, from_current);
    self->which = which;
    int ndis5 = which == STRATEGY_NDIS5_ALLOC || which == STRATEGY_NDIS5_REUSE;
    if ((ndis5 ? Ndis5StrategyBind : StrategyBind)(&self->s, which, p, &self->rt, in, max_in_flight) < 0) {
        engine_release(self);
        PyErr_SetString(PyExc_ValueError, ndis5 ? "the NDIS 5 strategy's parameters are out of range"
                                                : "NdisAllocateNetBufferListPool refused the strategy's parameters");
        return -1;
    }
    self->bound = 1;
    if (self->rt.failure) {
        self->broken = 1;
        engine_release(self);
        PyErr_SetString(PyExc_MemoryError, "the native strategy could not allocate its pool at bind");
        return -1;
    }
    return 0;
}

static void Engine_dealloc(EngineObject *self) {
    engine_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* --- the tap variant's far side: Python, called with the GIL taken back (never inside a packet's latency but for
 * back-pressure, as the Python tap miniport) ------------------------------------------------------------------ */

static int tap_room(TAP_WIRE *t, int64_t size) {
    EngineObject *self = t->context;
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = -1;
    PyObject *log = PyBytes_FromStringAndSize((const char *)t->log, (Py_ssize_t)(t->logged * (int64_t)sizeof(int64_t)));
    if (log != NULL) {
        PyObject *result = PyObject_CallFunction(self->tap_drain, "NL", log, (long long)size);
        if (result != NULL) {
            long long frames, bytes;
            if (PyArg_ParseTuple(result, "LL", &frames, &bytes)) {
                t->in_flight = frames;
                t->in_flight_bytes = bytes;
                rc = 0;
            }
            Py_DECREF(result);
        }
    }
    if (rc && self->tap_error[0] == NULL) PyErr_Fetch(&self->tap_error[0], &self->tap_error[1], &self->tap_error[2]);
    PyErr_Clear();
    PyGILState_Release(gil);
    return rc;
}

static PyObject *Engine_attach_tap(EngineObject *self, PyObject *args) {
    int fd;
    PyObject *drain;
    long long window, half, budget, overhead;
    if (!PyArg_ParseTuple(args, "iOLLLL", &fd, &drain, &window, &half, &budget, &overhead)) return NULL;
    if (self->busy || !self->bound) {
        PyErr_SetString(PyExc_RuntimeError, self->busy ? "a round is running" : "the engine is closed");
        return NULL;
    }
    if (fd < 0 || !PyCallable_Check(drain) || window < 1 || half < 1 || budget < 1 || overhead < 0) {
        PyErr_SetString(PyExc_ValueError, "attach_tap needs an fd, a callable and positive window, half, budget");
        return NULL;
    }
    Py_INCREF(drain);
    Py_XSETREF(self->tap_drain, drain);
    self->tap.fd = fd;
    self->tap.window = window;
    self->tap.half = half;
    self->tap.budget = budget;
    self->tap.overhead = overhead;
    self->tap.room = tap_room;
    self->tap.context = self;
    self->mp.tap = &self->tap;
    Py_RETURN_NONE;
}

static void wait_until(int64_t target) {
    /* target in ticks: sleep while it is more than SPIN_NS away, then spin */
    int64_t now = clock_ticks();
    int64_t away = native_clock.use_tsc ? (int64_t)((double)(target - now) * native_clock.ns_per_tick) : target - now;
    if (away > SPIN_NS) {
        int64_t sleep = away - SPIN_NS;
        struct timespec ts = {(time_t)(sleep / 1000000000), (long)(sleep % 1000000000)};
        nanosleep(&ts, NULL);
    }
    while (clock_ticks() < target) {
    }
}

static inline void run_mark(int64_t *t0, int64_t *t2, int64_t k, int64_t calls, int64_t run_calls, int64_t *first,
                            int64_t *a) {
    /* timing by runs, after call k returned: mark it (t2 = 1); at its run's end read the clock once — t0 of the
     * run's first call and t2 of its last hold the readings, chained (the end is the next run's start) */
    t2[k] = 1;
    if (k + 1 - *first == run_calls || k + 1 == calls) {
        int64_t c = clock_ticks();
        t0[*first] = *a;
        t2[k] = c;
        *first = k + 1;
        *a = c;
    }
}

static int64_t timed_loop(EngineObject *self, int64_t *t0, int64_t *t1, int64_t *t2, const int64_t *due,
                          int64_t run_calls) {
    /* returns the number of calls completed; stops at the first failure (rt.failure). run_calls > 1 (sync
     * completion, asap): the clock is read once per run of that many calls, chained (a run's end is the next one's
     * start): t0 of a run's first call and t2 of its last hold the readings, t2 = 1 marks every other call that
     * returned, and completions are stamped 0 (engine/replay.py spread_runs shares the run out afterwards) */
    STRATEGY *s = &self->s;
    LOOPBACK *mp = &self->mp;
    NDIS_RT *rt = &self->rt;
    int poll = mp->kind != COMPLETION_SYNC;
    int64_t calls = self->in.calls;
    if (run_calls > 1) {
        int64_t first = 0;
        int64_t a = clock_ticks();
        for (int64_t k = 0; k < calls; k++) {
            NET_BUFFER_LIST *chain = s->build(s, k);
            if (chain == NULL || rt->failure) return k;
            s->submit(s, chain);
            if (rt->failure) return k;
            run_mark(t0, t2, k, calls, run_calls, &first, &a);
            if (mp->tap != NULL && mp->tap->in_flight >= mp->tap->half && TapRoom(mp->tap, -1)) {
                rt->failure = NDIS_FAIL_TAP;
                rt->failure_text = "tap miniport: the far side";
                return k + 1;
            }
        }
        return calls;
    }
    for (int64_t k = 0; k < calls; k++) {
        if (due != NULL && clock_ticks() < due[k]) wait_until(due[k]);
        int64_t a = clock_ticks();
        NET_BUFFER_LIST *chain = s->build(s, k);
        int64_t b = clock_ticks();
        if (chain == NULL || rt->failure) return k;
        s->submit(s, chain);
        int64_t c = clock_ticks();
        if (rt->failure) return k;
        if (poll) LoopbackPoll(mp);
        t0[k] = a;
        t1[k] = b;
        t2[k] = c;
        /* the far side reads once half the window is in flight, after this call's completions (tap.py) */
        if (mp->tap != NULL && mp->tap->in_flight >= mp->tap->half && TapRoom(mp->tap, -1)) {
            rt->failure = NDIS_FAIL_TAP;
            rt->failure_text = "tap miniport: the far side";
            return k + 1;
        }
    }
    return calls;
}

/* stamps of a round → CLOCK_MONOTONIC ns (run_calls > 1: only the run readings; markers 0/1 stay) */
static void stamps_to_ns(int64_t *t0, int64_t *t1, int64_t *t2, int64_t done, int64_t calls, int64_t run_calls,
                         int64_t tick_anchor, int64_t ns_anchor) {
    for (int64_t k = 0; k < done; k++) {
        if (run_calls > 1) {
            if (k % run_calls == 0) t0[k] = to_ns(t0[k], tick_anchor, ns_anchor);
            if ((k + 1) % run_calls == 0 || k + 1 == calls) t2[k] = to_ns(t2[k], tick_anchor, ns_anchor);
            continue;
        }
        t0[k] = to_ns(t0[k], tick_anchor, ns_anchor);
        t1[k] = to_ns(t1[k], tick_anchor, ns_anchor);
        t2[k] = to_ns(t2[k], tick_anchor, ns_anchor);
    }
}

static PyObject *Engine_round(EngineObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"t0", "t1", "t2", "complete", "offsets", "due", "capture", "run_calls", NULL};
    PyObject *o0, *o1, *o2, *ocomplete, *ooffsets = Py_None, *odue = Py_None;
    int capture = 0;
    Py_ssize_t run_calls = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO|OOpn", kwlist, &o0, &o1, &o2, &ocomplete, &ooffsets, &odue,
                                     &capture, &run_calls))
        return NULL;
    if (run_calls < 1 || run_calls > MAX_RUN_CALLS) {
        PyErr_SetString(PyExc_ValueError, "run_calls must be 1 to 1,000,000");
        return NULL;
    }
    if (run_calls > 1 && (self->mp.kind != COMPLETION_SYNC || odue != Py_None)) {
        PyErr_SetString(PyExc_ValueError, "run_calls > 1 needs sync completion and no pacing");
        return NULL;
    }
    if (!self->bound || self->broken || self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        self->busy ? "a round is running" : "the engine is closed or failed in an earlier round");
        return NULL;
    }
    Py_ssize_t calls = self->in.calls, n = self->in.packets;
    Py_buffer v[6];
    int held = 0;
    PyObject *objs[6] = {o0, o1, o2, ocomplete, ooffsets, odue};
    const char *names[6] = {"t0", "t1", "t2", "complete", "offsets", "due"};
    Py_ssize_t lengths[6] = {calls, calls, calls, n, calls, calls};
    if ((ooffsets == Py_None) != (odue == Py_None)) {
        PyErr_SetString(PyExc_TypeError, "offsets and due go together");
        return NULL;
    }
    int wanted = ooffsets == Py_None ? 4 : 6;
    for (; held < wanted; held++) {
        if (int64_view(objs[held], &v[held], names[held], held != 4, lengths[held]) < 0) {
            for (int i = 0; i < held; i++) PyBuffer_Release(&v[i]);
            return NULL;
        }
    }
    int64_t *t0 = v[0].buf, *t1 = v[1].buf, *t2 = v[2].buf, *complete = v[3].buf;
    int64_t *due = wanted == 6 ? v[5].buf : NULL;
    const int64_t *offsets = wanted == 6 ? v[4].buf : NULL;
    for (Py_ssize_t i = 0; i < n; i++) complete[i] = -1;
    for (Py_ssize_t k = 0; k < calls; k++) t2[k] = 0;
    self->wire.used = self->wire.frames = self->wire.packets = 0;
    self->mp.wire = capture ? &self->wire : NULL;
    self->mp.complete_ns = complete;
    self->mp.clock_stamps = run_calls == 1;
    self->mp.completed = 0;
    if (self->mp.tap != NULL) { /* the far side starts the round empty (FarSide.reset) */
        self->tap.position = self->tap.logged = self->tap.in_flight = self->tap.in_flight_bytes = 0;
        self->tap.raised = 0;
    }
    self->busy = 1;
    int64_t start, end, done;
    Py_BEGIN_ALLOW_THREADS int64_t ns_anchor = monotonic_ns();
    int64_t tick_anchor = clock_ticks();
    start = tick_anchor;
    if (due != NULL)
        for (Py_ssize_t k = 0; k < calls; k++) due[k] = tick_anchor + ns_to_ticks(offsets[k]);
    done = timed_loop(self, t0, t1, t2, due, run_calls);
    if (!self->rt.failure) LoopbackDrain(&self->mp);
    end = clock_ticks();
    /* the last frames go to the far side outside the timed window (it reads them at delivery()) */
    if (!self->rt.failure && self->mp.tap != NULL && self->tap.logged > 0 && TapRoom(&self->tap, -1)) {
        self->rt.failure = NDIS_FAIL_TAP;
        self->rt.failure_text = "tap miniport: the far side";
    }
    /* ticks → ns, outside the timed window */
    start = to_ns(start, tick_anchor, ns_anchor);
    end = to_ns(end, tick_anchor, ns_anchor);
    stamps_to_ns(t0, t1, t2, done, calls, run_calls, tick_anchor, ns_anchor);
    for (Py_ssize_t i = 0; i < n; i++)
        if (complete[i] > 0) complete[i] = to_ns(complete[i], tick_anchor, ns_anchor);
    if (due != NULL)
        for (Py_ssize_t k = 0; k < calls; k++) due[k] = to_ns(due[k], tick_anchor, ns_anchor);
    Py_END_ALLOW_THREADS self->busy = 0;
    self->mp.complete_ns = NULL;
    self->mp.wire = NULL;
    for (int i = 0; i < held; i++) PyBuffer_Release(&v[i]);
    if (self->rt.failure) {
        self->broken = 1;
        if (self->rt.failure == NDIS_FAIL_TAP && self->tap_error[0] != NULL) {
            PyErr_Restore(self->tap_error[0], self->tap_error[1], self->tap_error[2]);
            self->tap_error[0] = self->tap_error[1] = self->tap_error[2] = NULL;
        } else if (self->rt.failure == NDIS_FAIL_MEMORY)
            PyErr_Format(PyExc_MemoryError, "native core: out of memory in %s (send call %lld)",
                         self->rt.failure_text, (long long)done);
        else
            PyErr_Format(NativeFailure, "native core: %s (send call %lld)", self->rt.failure_text, (long long)done);
        return NULL;
    }
    if (!capture) return Py_BuildValue("(LLO)", (long long)start, (long long)end, Py_None);
    return Py_BuildValue("(LL(y#y#y#))", (long long)start, (long long)end, (const char *)self->wire.bytes,
                         (Py_ssize_t)self->wire.used, (const char *)self->wire.lengths,
                         (Py_ssize_t)(self->wire.frames * 8), (const char *)self->wire.nbs,
                         (Py_ssize_t)(self->wire.packets * 8));
}

static PyObject *Engine_counters(EngineObject *self, PyObject *Py_UNUSED(ignored)) {
    const int64_t *values = (const int64_t *)&self->rt.c;
    PyObject *out = PyTuple_New(NDIS_COUNTER_COUNT);
    if (out == NULL) return NULL;
    for (int i = 0; i < NDIS_COUNTER_COUNT; i++) {
        PyObject *value = PyLong_FromLongLong(values[i]);
        if (value == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, value);
    }
    return out;
}

static PyObject *Engine_stats(EngineObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->s.stats != NULL) { /* strategies6.c: the strategy names its own */
        const char *names[16];
        int64_t values[16];
        int count = self->s.state != NULL ? self->s.stats(&self->s, names, values, 16) : 0;
        PyObject *out = PyDict_New();
        for (int i = 0; out != NULL && i < count; i++) {
            PyObject *value = PyLong_FromLongLong(values[i]);
            if (value == NULL || PyDict_SetItemString(out, names[i], value) < 0) Py_CLEAR(out);
            Py_XDECREF(value);
        }
        return out;
    }
    if (self->which == STRATEGY_ALLOC || self->which == STRATEGY_NDIS5_ALLOC)
        return Py_BuildValue("{sL}", "failed_sends", (long long)self->s.failed_sends);
    return Py_BuildValue("{sLsLsL}", "pool_growth", (long long)self->s.pool_growth, "failed_sends",
                         (long long)self->s.failed_sends, "pool_size", (long long)self->s.pool_size);
}

static PyObject *Engine_close(EngineObject *self, PyObject *Py_UNUSED(ignored)) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "a round is running");
        return NULL;
    }
    if (self->bound && !self->broken) {
        LoopbackDrain(&self->mp);
        if (!self->rt.failure) self->s.unbind(&self->s);
        self->bound = 0;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Engine_methods[] = {
    {"round", (PyCFunction)(void (*)(void))Engine_round, METH_VARARGS | METH_KEYWORDS,
     "round(t0, t1, t2, complete, offsets=None, due=None, capture=False, run_calls=1)\n"
     "    -> (start_ns, end_ns, wire | None)\n"
     "One timed round: per call t0 = before build, t1 = after build, t2 = after submit; complete[k] = after the\n"
     "completion call of packet k. Paced: due = start + offsets. capture gathers every NB (bytes, lengths, NBs\n"
     "per packet as int64 bytes). run_calls > 1 (sync, unpaced): one clock reading per run of that many calls\n"
     "(t0 of its first call, t2 of its last; t2 = 1 and complete = 0 elsewhere: spread_runs shares it out)."},
    {"attach_tap", (PyCFunction)Engine_attach_tap, METH_VARARGS,
     "attach_tap(fd, drain, window, half, budget, overhead): every NB is written to fd (one writev) from now on;\n"
     "drain(log, size) -> (in_flight, in_flight_bytes) is the far side (log: int64 position, k, n, bytes or -errno\n"
     "per frame; size -1: read, else make room for a frame of size bytes)."},
    {"counters", (PyCFunction)Engine_counters, METH_NOARGS, "The counters, in COUNTER_NAMES order."},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "The strategy's own counts (pool_growth, failed_sends, ...)."},
    {"close", (PyCFunction)Engine_close, METH_NOARGS, "Drain the miniport, unbind the strategy (counted)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ndis_replay.engine.native._core.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One native strategy bound to a loopback miniport over a replay input's arrays.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

/* --- module functions -------------------------------------------------------------------------------------------- */

static int cmp_int64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static PyObject *clock_calibration(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_ssize_t samples = 20000;
    if (!PyArg_ParseTuple(args, "|n", &samples)) return NULL;
    if (samples < 1 || samples > 10000000) {
        PyErr_SetString(PyExc_ValueError, "samples must be 1 to 10,000,000");
        return NULL;
    }
    int64_t *d = malloc((size_t)samples * sizeof(int64_t));
    if (d == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < samples; i++) {
        int64_t a = clock_ticks();
        int64_t b = clock_ticks();
        d[i] = to_ns(b, a, 0);
    }
    qsort(d, (size_t)samples, sizeof(int64_t), cmp_int64);
    PyObject *out = Py_BuildValue("(LL)", (long long)d[samples / 2], (long long)d[0]);
    free(d);
    return out;
}

static PyObject *baseline_round(PyObject *Py_UNUSED(module), PyObject *args) {
    /* the timed loop around a no-op strategy whose submit stamps every packet of the call at once: the native
     * harness floor (LoopBaseline's counterpart) */
    PyObject *ocs, *o0, *o1, *o2, *oc;
    Py_ssize_t run_calls = 1;
    if (!PyArg_ParseTuple(args, "OOOOO|n", &ocs, &o0, &o1, &o2, &oc, &run_calls)) return NULL;
    if (run_calls < 1 || run_calls > MAX_RUN_CALLS) {
        PyErr_SetString(PyExc_ValueError, "run_calls must be 1 to 1,000,000");
        return NULL;
    }
    Py_buffer v[5];
    if (int64_view(ocs, &v[0], "call_start", 0, -1) < 0) return NULL;
    Py_ssize_t calls = v[0].shape[0] - 1;
    const int64_t *cs = v[0].buf;
    if (calls < 1 || cs[0] != 0) {
        PyBuffer_Release(&v[0]);
        PyErr_SetString(PyExc_ValueError, "call_start must start at 0 and hold at least one call");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < calls; k++) {
        if (cs[k + 1] <= cs[k]) {
            PyBuffer_Release(&v[0]);
            PyErr_SetString(PyExc_ValueError, "call_start must increase");
            return NULL;
        }
    }
    Py_ssize_t n = cs[calls];
    PyObject *objs[4] = {o0, o1, o2, oc};
    const char *names[4] = {"t0", "t1", "t2", "complete"};
    for (int i = 0; i < 4; i++) {
        if (int64_view(objs[i], &v[i + 1], names[i], 1, i == 3 ? n : calls) < 0) {
            for (int j = 0; j <= i; j++) PyBuffer_Release(&v[j]);
            return NULL;
        }
    }
    int64_t *t0 = v[1].buf, *t1 = v[2].buf, *t2 = v[3].buf, *complete = v[4].buf;
    int64_t start, end;
    Py_BEGIN_ALLOW_THREADS int64_t ns_anchor = monotonic_ns();
    int64_t tick_anchor = clock_ticks();
    start = tick_anchor;
    if (run_calls > 1) { /* timed_loop's runs: one chained reading per run, markers in between */
        int64_t first = 0;
        int64_t a = clock_ticks();
        for (Py_ssize_t k = 0; k < calls; k++) {
            for (int64_t i = cs[k]; i < cs[k + 1]; i++) complete[i] = 0;
            run_mark(t0, t2, k, calls, run_calls, &first, &a);
        }
    } else {
        for (Py_ssize_t k = 0; k < calls; k++) {
            int64_t a = clock_ticks();
            int64_t b = clock_ticks();
            int64_t stamp = clock_ticks();
            for (int64_t i = cs[k]; i < cs[k + 1]; i++) complete[i] = stamp;
            int64_t c = clock_ticks();
            t0[k] = a;
            t1[k] = b;
            t2[k] = c;
        }
    }
    end = to_ns(clock_ticks(), tick_anchor, ns_anchor);
    start = to_ns(start, tick_anchor, ns_anchor);
    stamps_to_ns(t0, t1, t2, calls, calls, run_calls, tick_anchor, ns_anchor);
    for (Py_ssize_t i = 0; i < n; i++)
        if (complete[i] > 0) complete[i] = to_ns(complete[i], tick_anchor, ns_anchor);
    Py_END_ALLOW_THREADS for (int i = 0; i < 5; i++) PyBuffer_Release(&v[i]);
    return Py_BuildValue("(LL)", (long long)start, (long long)end);
}

static int add_layout(PyObject *out, const char *name, size_t size, const char *const *fields, const size_t *offsets,
                      int count) {
    PyObject *table = PyDict_New();
    if (table == NULL) return -1;
    for (int i = 0; i < count; i++) {
        PyObject *value = PyLong_FromSize_t(offsets[i]);
        if (value == NULL || PyDict_SetItemString(table, fields[i], value) < 0) {
            Py_XDECREF(value);
            Py_DECREF(table);
            return -1;
        }
        Py_DECREF(value);
    }
    PyObject *entry = Py_BuildValue("{snsN}", "size", (Py_ssize_t)size, "offsets", table);
    if (entry == NULL) return -1;
    int rc = PyDict_SetItemString(out, name, entry);
    Py_DECREF(entry);
    return rc;
}


static PyObject *layouts(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    static const char *const nbl_names[] = {"Next", "FirstNetBuffer", "Context", "ParentNetBufferList",
                                            "NdisPoolHandle", "NdisReserved", "ProtocolReserved",
                                            "MiniportReserved", "Scratch", "SourceHandle", "NblFlags",
                                            "ChildRefCount", "Flags", "Status", "NetBufferListInfo"};
    const size_t nbl_offsets[] = {
        offsetof(NET_BUFFER_LIST, Next),          offsetof(NET_BUFFER_LIST, FirstNetBuffer),
        offsetof(NET_BUFFER_LIST, Context),       offsetof(NET_BUFFER_LIST, ParentNetBufferList),
        offsetof(NET_BUFFER_LIST, NdisPoolHandle), offsetof(NET_BUFFER_LIST, NdisReserved),
        offsetof(NET_BUFFER_LIST, ProtocolReserved), offsetof(NET_BUFFER_LIST, MiniportReserved),
        offsetof(NET_BUFFER_LIST, Scratch),       offsetof(NET_BUFFER_LIST, SourceHandle),
        offsetof(NET_BUFFER_LIST, NblFlags),      offsetof(NET_BUFFER_LIST, ChildRefCount),
        offsetof(NET_BUFFER_LIST, Flags),         offsetof(NET_BUFFER_LIST, Status),
        offsetof(NET_BUFFER_LIST, NetBufferListInfo)};
    static const char *const nb_names[] = {"Next", "CurrentMdl", "CurrentMdlOffset", "DataLength", "MdlChain",
                                           "DataOffset", "ChecksumBias", "NdisPoolHandle", "NdisReserved",
                                           "ProtocolReserved", "MiniportReserved", "DataPhysicalAddress",
                                           "SharedMemoryInfo"};
    const size_t nb_offsets[] = {offsetof(NET_BUFFER, Next),           offsetof(NET_BUFFER, CurrentMdl),
                                 offsetof(NET_BUFFER, CurrentMdlOffset), offsetof(NET_BUFFER, DataLength),
                                 offsetof(NET_BUFFER, MdlChain),        offsetof(NET_BUFFER, DataOffset),
                                 offsetof(NET_BUFFER, ChecksumBias),    offsetof(NET_BUFFER, NdisPoolHandle),
                                 offsetof(NET_BUFFER, NdisReserved),    offsetof(NET_BUFFER, ProtocolReserved),
                                 offsetof(NET_BUFFER, MiniportReserved), offsetof(NET_BUFFER, DataPhysicalAddress),
                                 offsetof(NET_BUFFER, SharedMemoryInfo)};
    static const char *const mdl_names[] = {"Next",           "Size",    "MdlFlags",  "Process",
                                            "MappedSystemVa", "StartVa", "ByteCount", "ByteOffset"};
    const size_t mdl_offsets[] = {offsetof(MDL, Next),           offsetof(MDL, Size),    offsetof(MDL, MdlFlags),
                                  offsetof(MDL, Process),        offsetof(MDL, MappedSystemVa),
                                  offsetof(MDL, StartVa),        offsetof(MDL, ByteCount),
                                  offsetof(MDL, ByteOffset)};
    static const char *const ctx_names[] = {"Next", "Size", "Offset", "ContextData"};
    const size_t ctx_offsets[] = {offsetof(NET_BUFFER_LIST_CONTEXT, Next), offsetof(NET_BUFFER_LIST_CONTEXT, Size),
                                  offsetof(NET_BUFFER_LIST_CONTEXT, Offset),
                                  offsetof(NET_BUFFER_LIST_CONTEXT, ContextData)};
    static const char *const packet_names[] = {"Private", "MiniportReserved", "WrapperReserved", "Reserved",
                                               "ProtocolReserved"};
    const size_t packet_offsets[] = {offsetof(NDIS_PACKET, Private), offsetof(NDIS_PACKET, MiniportReserved),
                                     offsetof(NDIS_PACKET, WrapperReserved), offsetof(NDIS_PACKET, Reserved),
                                     offsetof(NDIS_PACKET, ProtocolReserved)};
    static const char *const private_names[] = {"PhysicalCount", "TotalLength", "Head",  "Tail",
                                                "Pool",          "Count",       "Flags", "ValidCounts",
                                                "NdisPacketFlags", "NdisPacketOobOffset"};
    const size_t private_offsets[] = {
        offsetof(NDIS_PACKET_PRIVATE, PhysicalCount), offsetof(NDIS_PACKET_PRIVATE, TotalLength),
        offsetof(NDIS_PACKET_PRIVATE, Head),          offsetof(NDIS_PACKET_PRIVATE, Tail),
        offsetof(NDIS_PACKET_PRIVATE, Pool),          offsetof(NDIS_PACKET_PRIVATE, Count),
        offsetof(NDIS_PACKET_PRIVATE, Flags),         offsetof(NDIS_PACKET_PRIVATE, ValidCounts),
        offsetof(NDIS_PACKET_PRIVATE, NdisPacketFlags), offsetof(NDIS_PACKET_PRIVATE, NdisPacketOobOffset)};
#define COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))
    if (add_layout(out, "NET_BUFFER_LIST", sizeof(NET_BUFFER_LIST), nbl_names, nbl_offsets, COUNT_OF(nbl_names)) ||
        add_layout(out, "NET_BUFFER", sizeof(NET_BUFFER), nb_names, nb_offsets, COUNT_OF(nb_names)) ||
        add_layout(out, "MDL", sizeof(MDL), mdl_names, mdl_offsets, COUNT_OF(mdl_names)) ||
        add_layout(out, "NET_BUFFER_LIST_CONTEXT", sizeof(NET_BUFFER_LIST_CONTEXT), ctx_names, ctx_offsets,
                   COUNT_OF(ctx_names)) ||
        add_layout(out, "NDIS_PACKET", sizeof(NDIS_PACKET), packet_names, packet_offsets, COUNT_OF(packet_names)) ||
        add_layout(out, "NDIS_PACKET_PRIVATE", sizeof(NDIS_PACKET_PRIVATE), private_names, private_offsets,
                   COUNT_OF(private_names))) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyMethodDef module_methods[] = {
    {"layouts", layouts, METH_NOARGS,
     "{struct: {'size': bytes, 'offsets': {field: offset}}} of the native x64 structures."},
    {"clock_calibration", clock_calibration, METH_VARARGS,
     "clock_calibration(samples=20000) -> (median_ns, min_ns) of back-to-back clock readings."},
    {"baseline_round", baseline_round, METH_VARARGS,
     "baseline_round(call_start, t0, t1, t2, complete, run_calls=1) -> (start_ns, end_ns): the no-op loop\n"
     "(harness floor), timed per call or by runs as Engine.round."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_core", "The native core of ndis-replay (see engine/native/README in the package).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__core(void) {
    calibrate_tsc();
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    NativeFailure = PyErr_NewException("ndis_replay.engine.native._core.NativeFailure", PyExc_RuntimeError, NULL);
    PyObject *names = PyTuple_New(NDIS_COUNTER_COUNT);
    if (NativeFailure == NULL || names == NULL) goto error;
    for (int i = 0; i < NDIS_COUNTER_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(ndis_counter_names[i]);
        if (name == NULL) goto error;
        PyTuple_SET_ITEM(names, i, name);
    }
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddObject(m, "NativeFailure", NativeFailure) < 0 ||
        PyModule_AddObject(m, "COUNTER_NAMES", names) < 0 ||
        PyModule_AddIntConstant(m, "STRATEGY_REUSE", STRATEGY_REUSE) < 0 ||
        PyModule_AddIntConstant(m, "STRATEGY_ALLOC", STRATEGY_ALLOC) < 0 ||
        PyModule_AddIntConstant(m, "STRATEGY_COPY", STRATEGY_COPY) < 0 ||
        PyModule_AddIntConstant(m, "STRATEGY_CACHE", STRATEGY_CACHE) < 0 ||
        PyModule_AddIntConstant(m, "STRATEGY_CLONE", STRATEGY_CLONE) < 0 ||
        PyModule_AddIntConstant(m, "STRATEGY_NDIS5_ALLOC", STRATEGY_NDIS5_ALLOC) < 0 ||
        PyModule_AddIntConstant(m, "STRATEGY_NDIS5_REUSE", STRATEGY_NDIS5_REUSE) < 0 ||
        PyModule_AddIntConstant(m, "COMPLETION_SYNC", COMPLETION_SYNC) < 0 ||
        PyModule_AddIntConstant(m, "COMPLETION_DEFERRED", COMPLETION_DEFERRED) < 0 ||
        PyModule_AddIntConstant(m, "COMPLETION_BATCHED", COMPLETION_BATCHED) < 0 ||
        PyModule_AddIntConstant(m, "COMPLETION_DELAY", COMPLETION_DELAY) < 0 ||
        PyModule_AddStringConstant(m, "CLOCK", clock_text) < 0)
        goto error;
    return m;
error:
    Py_XDECREF(names);
    Py_DECREF(m);
    return NULL;
}
