/* The native engine: the replay input as arrays, the loopback miniport, the strategies and the timed loop. */
#ifndef NDIS_REPLAY_NATIVE_ENGINE_H
#define NDIS_REPLAY_NATIVE_ENGINE_H

#include <sys/uio.h>

#include "ndis.h"

/* The replay input (engine/replay.py ReplayInput): n packets, C calls, one data buffer. Frame i is frame_len(i) bytes
 * (the step of frame_offset) at data + frame_start[i]: frames need not be contiguous nor distinct (a trace without
 * bytes has every synthesized frame as a view into one small pattern buffer). */
typedef struct _REPLAY_INPUT {
    const uint8_t *data;
    int64_t data_len;
    const int64_t *frame_offset; /* [n + 1] cumulative frame lengths, bytes */
    const int64_t *frame_start;  /* [n] where each frame starts in data, bytes */
    const int64_t *header_len;   /* [n] */
    const int64_t *index;        /* [n] */
    const int64_t *call_start;   /* [C + 1] */
    int64_t packets;
    int64_t calls;
    int64_t max_call;
    int64_t max_frame;
} REPLAY_INPUT;

/* the bytes and the length of frame i (every strategy reads a frame through these) */
static inline uint8_t *frame_of(const REPLAY_INPUT *in, int64_t i) {
    return (uint8_t *)in->data + in->frame_start[i];
}
static inline uint32_t length_of(const REPLAY_INPUT *in, int64_t i) {
    return (uint32_t)(in->frame_offset[i + 1] - in->frame_offset[i]);
}

/* --- loopback miniport (engine/miniports/loopback.py) ------------------------------------------------------------ */
#define COMPLETION_SYNC 0
#define COMPLETION_DEFERRED 1
#define COMPLETION_BATCHED 2
#define COMPLETION_DELAY 3

typedef struct _WIRE_CAPTURE {
    uint8_t *bytes; /* every gathered NB's bytes, back to back */
    int64_t used, capacity;
    int64_t *lengths; /* one per NB */
    int64_t *nbs;     /* NBs per NBL (one record per transmitted packet) */
    int64_t frames, packets, frames_capacity, packets_capacity;
} WIRE_CAPTURE;

/* The tap variant's wire (engine/miniports/tap.py): each NB's frame goes to a TAP/TUN fd with one writev (an iovec per
 * MDL, no copy). The far side is read and checked in Python: `room` hands it the frames written since the last call
 * (`log`, 4 int64 per frame: packet position in transmit order, fragment k, of n, bytes written or -errno when the
 * device refused it), asks it to read (size -1) or to make room for a frame of `size` bytes (back-pressure), and
 * takes back what is still unread (in_flight, in_flight_bytes); 0 on success, -1 when Python raised. */
typedef struct _TAP_WIRE TAP_WIRE;
struct _TAP_WIRE {
    int fd;
    int64_t window, half, budget, overhead; /* frames; frames; kernel bytes; kernel bytes per frame beyond its length */
    int64_t in_flight, in_flight_bytes;     /* written and not yet read on the far side, as of the last room() */
    int64_t position;                       /* the next transmitted packet's position in this round */
    int64_t *log;
    int64_t logged, log_capacity; /* int64 items */
    struct iovec *iov;
    int64_t iov_capacity;
    uint8_t *scratch; /* a frame of more MDLs than IOV_MAX, gathered */
    int64_t scratch_capacity;
    int (*room)(TAP_WIRE *t, int64_t size);
    void *context;
    int raised; /* room() failed: Python raised */
};
#define NDIS_FAIL_TAP 3 /* the far side (Python) raised: the round stops and the exception propagates */
int TapRoom(TAP_WIRE *t, int64_t size); /* hand the log over: t->room, then the log is empty */

typedef struct _LOOPBACK {
    NDIS_RT *rt;
    int kind;
    int64_t count;    /* batched:N */
    int64_t delay_ticks; /* delay:D, in clock ticks (clock.h) */
    int from_current_mdl;
    /* per round: where completion times go ([n], NULL: no timing) and what was transmitted (NULL: gather nothing) */
    int64_t *complete_ns;
    int clock_stamps; /* 0: completions are marked 0, not read from the clock (timing by runs) */
    int64_t completed;
    WIRE_CAPTURE *wire;
    TAP_WIRE *tap; /* NULL: no device (the loopback); else every NB is written to it at send time */
    /* pending work, FIFO, linked through MiniportReserved[0] (the miniport's own field): chain heads with their NBL
     * count in MiniportReserved[1] and, under delay, the send time in Scratch (deferred, delay), or single NBLs
     * (batched) */
    NET_BUFFER_LIST *head, *tail;
    int64_t queued; /* NBLs pending */
    /* NDIS 5 pending packets, FIFO, linked through MiniportReserved[0]; MiniportReserved[1] marks the first packet
     * of each send call (its send time + 1 under delay, 1 otherwise; 0 on the call's other packets) */
    NDIS_PACKET *packet_head, *packet_tail;
    int64_t packets_queued;
} LOOPBACK;

void LoopbackOpen(LOOPBACK *mp, NDIS_RT *rt, int kind, int64_t count, int64_t delay_ns, int from_current_mdl);
void LoopbackPoll(LOOPBACK *mp);
void LoopbackDrain(LOOPBACK *mp);

/* --- strategies -------------------------------------------------------------------------------------------------- */
#define STRATEGY_REUSE 1
#define STRATEGY_ALLOC 2
/* NDIS 5 (ndis5.c): build returns a non-NULL stand-in and keeps the NdisSendPackets array for submit */
#define STRATEGY_NDIS5_ALLOC 6
#define STRATEGY_NDIS5_REUSE 7
/* strategies6.c: NDIS 6 copy (DataSize pools), cache (alloc behind per-CPU caches), clone (a filter) */
#define STRATEGY_COPY 3
#define STRATEGY_CACHE 4
#define STRATEGY_CLONE 5

typedef struct _STRATEGY STRATEGY;
struct _STRATEGY {
    NDIS_RT *rt;
    const REPLAY_INPUT *in;
    void *binding;
    NDIS_NBL_POOL *pool;
    /* parameters: reuse (pool_depth, header split, mdl_reuse, clear_oob, reset_status); alloc (context_size,
     * context_backfill, split_header, locked) */
    int64_t p[5];
    int64_t failed_sends;
    int64_t pool_growth;
    int64_t pool_size;
    /* reuse: the driver's free list of NBLs (a stack; pop hands out the first allocated first) */
    NET_BUFFER_LIST **free_nbls;
    int64_t free_count, free_capacity;
    uint32_t context_size; /* reuse: embedded MDL storage per NBL (mdl_reuse) */
    uint32_t mdl_slot;     /* reuse: bytes per embedded MDL */
    struct _NDIS5_STRATEGY *ndis5; /* the NDIS 5 strategies' pools, packet array and free lists (ndis5.c) */
    NET_BUFFER_LIST *(*build)(STRATEGY *s, int64_t call);
    void (*submit)(STRATEGY *s, NET_BUFFER_LIST *chain);
    void (*unbind)(STRATEGY *s);
    /* strategies6.c: the strategy's own state, and its stats as (name, value) pairs (NULL: core.c's reuse/alloc
     * stats); returns how many it wrote, at most `room` */
    void *state;
    int (*stats)(STRATEGY *s, const char **names, int64_t *values, int room);
};

/* strategies6.c: bind copy, cache or clone (StrategyBind's contract) */
int Strategy6Bind(STRATEGY *s, int which, const int64_t p[5], int64_t max_in_flight);

/* a driver's free list filled at bind: `depth` NBLs (0: enough for the most in flight, at least one call), reversed
 * so that pop() hands out the first allocated first; an allocation failure stops it (rt->failure says why) */
void FillFreeList(STRATEGY *s, int64_t depth, int64_t max_in_flight, NET_BUFFER_LIST *(*allocate)(STRATEGY *s));

/* binds (pools, the free list); 0 on success, -1 on invalid parameters, rt->failure on failed allocations */
int StrategyBind(STRATEGY *s, int which, const int64_t p[5], NDIS_RT *rt, const REPLAY_INPUT *in,
                 int64_t max_in_flight);
/* the same for STRATEGY_NDIS5_ALLOC (descriptors, overflow + 1, protocol_reserved, split_header) and
 * STRATEGY_NDIS5_REUSE (pool_depth, keep_buffers, split_header, protocol_reserved) */
int Ndis5StrategyBind(STRATEGY *s, int which, const int64_t p[5], NDIS_RT *rt, const REPLAY_INPUT *in,
                      int64_t max_in_flight);

#endif
