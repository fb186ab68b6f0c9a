/* The loopback miniport of engine/miniports/loopback.py, NDIS 6 side: MiniportSendNetBufferLists writes each NBL's
 * Status and completes per policy (sync: at once; deferred: one completion per send call on the next poll;
 * batched:N: chains of N relinked by the miniport; delay:D: each send call once D has passed), FIFO throughout.
 * Each NB's bytes are gathered from its MDL chain only when a wire capture is asked for (checked/differential
 * use), never in a timed round. complete_ns[k] is read right after the completion call of packet k returns (in clock
 * ticks: the engine converts them to ns after the round, clock.h).
 * NDIS 5 side: MiniportSendPackets sets each packet's status PENDING (NDIS_SET_PACKET_STATUS) and completes each with
 * its own NdisMSendComplete, grouped by the same policies (NDIS 5 has no chained completion).
 * The tap variant (mp->tap set, engine.h TAP_WIRE): at send time, before completion, every NB (NDIS 5: every packet)
 * is written to the TAP/TUN fd with one writev, an iovec per MDL, as engine/miniports/tap.py's _DeviceWire does. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "engine.h"
#include "ndis5.h"

static int grow(void **buffer, int64_t *capacity, int64_t need, size_t item) {
    if (need <= *capacity) return 0;
    int64_t next = *capacity ? *capacity : 4096;
    while (next < need) next *= 2;
    void *bigger = realloc(*buffer, (size_t)next * item);
    if (bigger == NULL) return -1;
    *buffer = bigger;
    *capacity = next;
    return 0;
}

/* where an NB's data starts: the MDL and the offset in it — DataOffset walked along the MDL chain, or CurrentMdl +
 * CurrentMdlOffset when the miniport gathers from there */
static inline MDL *data_start(const LOOPBACK *mp, NET_BUFFER *nb, uint32_t *offset) {
    if (mp->from_current_mdl) {
        *offset = nb->CurrentMdlOffset;
        return nb->CurrentMdl;
    }
    MDL *mdl = nb->MdlChain;
    uint32_t left = nb->DataOffset;
    while (mdl != NULL && left >= mdl->ByteCount) {
        left -= mdl->ByteCount;
        mdl = mdl->Next;
    }
    *offset = left;
    return mdl;
}

static int gather(LOOPBACK *mp, NET_BUFFER *nb) {
    /* DMA: DataLength bytes from DataOffset along the MDL chain (or from CurrentMdl + CurrentMdlOffset) */
    WIRE_CAPTURE *w = mp->wire;
    int64_t start = w->used;
    uint32_t remaining = nb->DataLength;
    uint32_t offset;
    MDL *mdl = data_start(mp, nb, &offset);
    if (grow((void **)&w->bytes, &w->capacity, w->used + remaining, 1)) return -1;
    while (mdl != NULL && remaining > 0) {
        uint32_t take = mdl->ByteCount - offset;
        if (take > remaining) take = remaining;
        if (take > 0) {
            memcpy(w->bytes + w->used, (const uint8_t *)mdl->MappedSystemVa + offset, take);
            w->used += take;
            remaining -= take;
        }
        offset = 0;
        mdl = mdl->Next;
    }
    if (grow((void **)&w->lengths, &w->frames_capacity, w->frames + 1, sizeof(int64_t))) return -1;
    w->lengths[w->frames++] = w->used - start;
    return 0;
}

static void transmit(LOOPBACK *mp, NET_BUFFER_LIST *chain) {
    WIRE_CAPTURE *w = mp->wire;
    for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) {
        int64_t nbs = 0;
        for (NET_BUFFER *nb = nbl->FirstNetBuffer; nb != NULL; nb = nb->Next, nbs++) {
            if (gather(mp, nb)) {
                mp->rt->failure = NDIS_FAIL_MEMORY;
                mp->rt->failure_text = "loopback wire capture";
                return;
            }
        }
        if (grow((void **)&w->nbs, &w->packets_capacity, w->packets + 1, sizeof(int64_t))) {
            mp->rt->failure = NDIS_FAIL_MEMORY;
            mp->rt->failure_text = "loopback wire capture";
            return;
        }
        w->nbs[w->packets++] = nbs;
    }
}

/* --- the tap variant: one writev per NB (engine/miniports/tap.py _DeviceWire) ------------------------------------ */

/* iovecs one writev takes on Linux (UIO_MAXIOV) */
#define TAP_IOV_MAX 1024

int TapRoom(TAP_WIRE *t, int64_t size) {
    if (t->room(t, size)) {
        t->raised = 1;
        return -1;
    }
    t->logged = 0;
    return 0;
}

static int tap_iov(TAP_WIRE *t, int64_t count) {
    return grow((void **)&t->iov, &t->iov_capacity, count, sizeof(struct iovec));
}

static int tap_write(LOOPBACK *mp, int count, int64_t length, int64_t position, int64_t k, int64_t n) {
    /* back-pressure first (as _DeviceWire.transmit: make room, then write), then the write, then the log */
    TAP_WIRE *t = mp->tap;
    if (t->in_flight >= t->window || t->in_flight_bytes + length + t->overhead > t->budget) {
        if (TapRoom(t, length)) return -1;
    }
    struct iovec *iov = t->iov;
    struct iovec one;
    if (count > TAP_IOV_MAX) { /* more MDLs than one writev takes: gathered into one buffer, as DMA to a bounce buffer */
        if (grow((void **)&t->scratch, &t->scratch_capacity, length, 1)) return -1;
        int64_t at = 0;
        for (int i = 0; i < count; i++) {
            memcpy(t->scratch + at, iov[i].iov_base, iov[i].iov_len);
            at += (int64_t)iov[i].iov_len;
        }
        one.iov_base = t->scratch;
        one.iov_len = (size_t)length;
        iov = &one;
        count = 1;
    }
    ssize_t wrote;
    do {
        wrote = writev(t->fd, iov, count);
    } while (wrote < 0 && errno == EINTR);
    int64_t result = wrote < 0 ? -(int64_t)errno : length;
    if (wrote >= 0) {
        t->in_flight += 1;
        t->in_flight_bytes += length + t->overhead;
    }
    if (grow((void **)&t->log, &t->log_capacity, t->logged + 4, sizeof(int64_t))) return -1;
    int64_t *record = t->log + t->logged;
    record[0] = position;
    record[1] = k;
    record[2] = n;
    record[3] = result;
    t->logged += 4;
    return 0;
}

static int tap_nb(LOOPBACK *mp, NET_BUFFER *nb, int64_t position, int64_t k, int64_t n) {
    /* the iovec of DataLength bytes from DataOffset along the MDL chain (or CurrentMdl + CurrentMdlOffset) */
    TAP_WIRE *t = mp->tap;
    uint32_t remaining = nb->DataLength;
    uint32_t offset;
    MDL *mdl = data_start(mp, nb, &offset);
    int count = 0;
    int64_t length = 0;
    while (mdl != NULL && remaining > 0) {
        uint32_t take = mdl->ByteCount - offset;
        if (take > remaining) take = remaining;
        if (take > 0) {
            if (tap_iov(t, count + 1)) return -1;
            t->iov[count].iov_base = (uint8_t *)mdl->MappedSystemVa + offset;
            t->iov[count].iov_len = take;
            count++;
            length += take;
            remaining -= take;
        }
        offset = 0;
        mdl = mdl->Next;
    }
    return tap_write(mp, count, length, position, k, n);
}

static void tap_fail(LOOPBACK *mp) {
    if (mp->rt->failure) return;
    mp->rt->failure = mp->tap->raised ? NDIS_FAIL_TAP : NDIS_FAIL_MEMORY;
    mp->rt->failure_text = mp->tap->raised ? "tap miniport: the far side" : "tap miniport: iovec or log";
}

static void tap_transmit(LOOPBACK *mp, NET_BUFFER_LIST *chain) {
    for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) {
        int64_t n = 0;
        for (NET_BUFFER *nb = nbl->FirstNetBuffer; nb != NULL; nb = nb->Next) n++;
        int64_t position = mp->tap->position++;
        int64_t k = 0;
        for (NET_BUFFER *nb = nbl->FirstNetBuffer; nb != NULL; nb = nb->Next, k++) {
            if (tap_nb(mp, nb, position, k, n)) {
                tap_fail(mp);
                return;
            }
        }
    }
}

static int tap_packet(LOOPBACK *mp, NDIS_PACKET *packet) {
    /* an NDIS 5 packet's frame: every chained buffer's ByteCount bytes, one iovec each */
    TAP_WIRE *t = mp->tap;
    int count = 0;
    int64_t length = 0;
    for (MDL *buffer = packet->Private.Head; buffer != NULL; buffer = buffer->Next) {
        if (buffer->ByteCount == 0) continue;
        if (tap_iov(t, count + 1)) return -1;
        t->iov[count].iov_base = buffer->MappedSystemVa;
        t->iov[count].iov_len = buffer->ByteCount;
        count++;
        length += buffer->ByteCount;
    }
    return tap_write(mp, count, length, t->position++, 0, 1);
}

static inline void stamp(LOOPBACK *mp, int64_t n) {
    int64_t *stamps = mp->complete_ns;
    int64_t k = mp->completed;
    if (stamps != NULL) {
        int64_t now = mp->clock_stamps ? clock_ticks() : 0;
        for (int64_t i = 0; i < n; i++) stamps[k + i] = now;
    }
    mp->completed = k + n;
}

static inline void enqueue(LOOPBACK *mp, NET_BUFFER_LIST *nbl) {
    nbl->MiniportReserved[0] = NULL;
    if (mp->tail != NULL)
        mp->tail->MiniportReserved[0] = nbl;
    else
        mp->head = nbl;
    mp->tail = nbl;
}

static inline NET_BUFFER_LIST *dequeue(LOOPBACK *mp) {
    NET_BUFFER_LIST *nbl = mp->head;
    mp->head = nbl->MiniportReserved[0];
    if (mp->head == NULL) mp->tail = NULL;
    nbl->MiniportReserved[0] = NULL;
    return nbl;
}

static void send_sync(void *context, NET_BUFFER_LIST *chain) {
    LOOPBACK *mp = context;
    if (mp->wire != NULL) transmit(mp, chain);
    if (mp->tap != NULL) tap_transmit(mp, chain);
    int64_t n = 0;
    for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) {
        nbl->Status = NDIS_STATUS_SUCCESS;
        n++;
    }
    /* the NBLs belong to the protocol again once this returns: counted first, never touched after */
    NdisMSendNetBufferListsComplete(mp->rt, chain);
    stamp(mp, n);
}

static void send_queue(void *context, NET_BUFFER_LIST *chain) {
    LOOPBACK *mp = context;
    if (mp->wire != NULL) transmit(mp, chain);
    if (mp->tap != NULL) tap_transmit(mp, chain);
    int64_t n = 0;
    for (NET_BUFFER_LIST *nbl = chain; nbl != NULL; nbl = nbl->Next) {
        nbl->Status = NDIS_STATUS_SUCCESS;
        n++;
    }
    chain->MiniportReserved[1] = (void *)(intptr_t)n;
    if (mp->kind == COMPLETION_DELAY) chain->Scratch = (void *)(intptr_t)clock_ticks();
    enqueue(mp, chain);
    mp->queued += n;
}

static void send_queue_nbls(void *context, NET_BUFFER_LIST *chain) {
    LOOPBACK *mp = context;
    if (mp->wire != NULL) transmit(mp, chain);
    if (mp->tap != NULL) tap_transmit(mp, chain);
    NET_BUFFER_LIST *nbl = chain;
    while (nbl != NULL) {
        NET_BUFFER_LIST *next = nbl->Next; /* Next stays as sent until the miniport relinks at completion */
        nbl->Status = NDIS_STATUS_SUCCESS;
        enqueue(mp, nbl);
        mp->queued += 1;
        nbl = next;
    }
}

/* --- NDIS 5: MiniportSendPackets, one NdisMSendComplete per packet -------------------------------------------- */

static inline NDIS_PACKET *packet_link(const NDIS_PACKET *packet) {
    NDIS_PACKET *next;
    memcpy(&next, packet->MiniportReserved, sizeof(next));
    return next;
}
static inline int64_t packet_mark(const NDIS_PACKET *packet) {
    int64_t mark;
    memcpy(&mark, packet->MiniportReserved + sizeof(void *), sizeof(mark));
    return mark;
}
static inline void packet_set(NDIS_PACKET *packet, NDIS_PACKET *next, int64_t mark) {
    memcpy(packet->MiniportReserved, &next, sizeof(next));
    memcpy(packet->MiniportReserved + sizeof(void *), &mark, sizeof(mark));
}

static int gather_packet(LOOPBACK *mp, NDIS_PACKET *packet) {
    /* the frame an NDIS 5 packet describes: every chained buffer's ByteCount bytes, Head to the end */
    WIRE_CAPTURE *w = mp->wire;
    int64_t start = w->used;
    for (MDL *buffer = packet->Private.Head; buffer != NULL; buffer = buffer->Next) {
        if (grow((void **)&w->bytes, &w->capacity, w->used + buffer->ByteCount, 1)) return -1;
        memcpy(w->bytes + w->used, buffer->MappedSystemVa, buffer->ByteCount);
        w->used += buffer->ByteCount;
    }
    if (grow((void **)&w->lengths, &w->frames_capacity, w->frames + 1, sizeof(int64_t))) return -1;
    w->lengths[w->frames++] = w->used - start;
    if (grow((void **)&w->nbs, &w->packets_capacity, w->packets + 1, sizeof(int64_t))) return -1;
    w->nbs[w->packets++] = 1;
    return 0;
}

static int accept_packets(LOOPBACK *mp, NDIS_PACKET **packets, uint32_t count) {
    /* transmit (when capturing) and NDIS_SET_PACKET_STATUS(PENDING) each: a deserialized miniport owns them now */
    for (uint32_t i = 0; i < count; i++) {
        if (mp->wire != NULL && gather_packet(mp, packets[i])) {
            mp->rt->failure = NDIS_FAIL_MEMORY;
            mp->rt->failure_text = "loopback wire capture";
            return -1;
        }
        if (mp->tap != NULL && tap_packet(mp, packets[i])) {
            tap_fail(mp);
            return -1;
        }
        NDIS_SET_PACKET_STATUS(mp->rt, packets[i], NDIS_STATUS_PENDING);
    }
    return 0;
}

static void send_packets_sync(void *context, NDIS_PACKET **packets, uint32_t count) {
    LOOPBACK *mp = context;
    if (accept_packets(mp, packets, count)) return;
    for (uint32_t i = 0; i < count && !mp->rt->failure; i++) {
        NdisMSendComplete(mp->rt, packets[i], NDIS_STATUS_SUCCESS);
        stamp(mp, 1);
    }
}

static void send_packets_queue(void *context, NDIS_PACKET **packets, uint32_t count) {
    LOOPBACK *mp = context;
    if (accept_packets(mp, packets, count)) return;
    int64_t head_mark = mp->kind == COMPLETION_DELAY ? clock_ticks() + 1 : 1;
    for (uint32_t i = 0; i < count; i++) {
        NDIS_PACKET *packet = packets[i];
        packet_set(packet, NULL, i == 0 ? head_mark : 0);
        if (mp->packet_tail != NULL)
            packet_set(mp->packet_tail, packet, packet_mark(mp->packet_tail));
        else
            mp->packet_head = packet;
        mp->packet_tail = packet;
    }
    mp->packets_queued += count;
}

static void complete_packets(LOOPBACK *mp, int64_t n) {
    /* NdisMSendComplete(SUCCESS) for the next n pending packets, FIFO: unlinked before the call (the packet is the
     * protocol's again once it returns) */
    for (int64_t i = 0; i < n && mp->packet_head != NULL && !mp->rt->failure; i++) {
        NDIS_PACKET *packet = mp->packet_head;
        mp->packet_head = packet_link(packet);
        if (mp->packet_head == NULL) mp->packet_tail = NULL;
        packet_set(packet, NULL, 0);
        mp->packets_queued -= 1;
        NdisMSendComplete(mp->rt, packet, NDIS_STATUS_SUCCESS);
        stamp(mp, 1);
    }
}

static int64_t call_size(const LOOPBACK *mp) {
    /* packets of the send call at the head of the queue */
    int64_t n = 1;
    for (NDIS_PACKET *p = packet_link(mp->packet_head); p != NULL && packet_mark(p) == 0; p = packet_link(p)) n++;
    return n;
}

static void poll_packets(LOOPBACK *mp) {
    if (mp->kind == COMPLETION_BATCHED) {
        while (mp->packets_queued >= mp->count && !mp->rt->failure) complete_packets(mp, mp->count);
    } else if (mp->kind == COMPLETION_DELAY) {
        int64_t limit = clock_ticks() - mp->delay_ticks;
        while (mp->packet_head != NULL && !mp->rt->failure && packet_mark(mp->packet_head) - 1 <= limit)
            complete_packets(mp, call_size(mp));
    } else {
        complete_packets(mp, mp->packets_queued);
    }
}

void LoopbackOpen(LOOPBACK *mp, NDIS_RT *rt, int kind, int64_t count, int64_t delay_ns, int from_current_mdl) {
    memset(mp, 0, sizeof(*mp));
    mp->rt = rt;
    mp->kind = kind;
    mp->count = count;
    mp->delay_ticks = ns_to_ticks(delay_ns);
    mp->from_current_mdl = from_current_mdl;
    NdisRegisterMiniport(rt, kind == COMPLETION_SYNC      ? send_sync
                             : kind == COMPLETION_BATCHED ? send_queue_nbls
                                                          : send_queue,
                         mp);
    NdisRegisterMiniport5(rt, kind == COMPLETION_SYNC ? send_packets_sync : send_packets_queue, mp);
}

static void complete_chains(LOOPBACK *mp, int64_t limit_ns, int limited) {
    while (mp->head != NULL && !mp->rt->failure) {
        if (limited && (int64_t)(intptr_t)mp->head->Scratch > limit_ns) break;
        NET_BUFFER_LIST *chain = dequeue(mp);
        int64_t n = (int64_t)(intptr_t)chain->MiniportReserved[1];
        chain->MiniportReserved[1] = NULL;
        chain->Scratch = NULL;
        mp->queued -= n;
        NdisMSendNetBufferListsComplete(mp->rt, chain);
        stamp(mp, n);
    }
}

static void complete_batches(LOOPBACK *mp, int everything) {
    while (mp->head != NULL && !mp->rt->failure && (everything || mp->queued >= mp->count)) {
        int64_t take = mp->queued < mp->count ? mp->queued : mp->count;
        NET_BUFFER_LIST *head = dequeue(mp);
        NET_BUFFER_LIST *tail = head;
        for (int64_t i = 1; i < take; i++) {
            NET_BUFFER_LIST *nbl = dequeue(mp);
            tail->Next = nbl;
            tail = nbl;
        }
        tail->Next = NULL;
        mp->queued -= take;
        NdisMSendNetBufferListsComplete(mp->rt, head);
        stamp(mp, take);
    }
}

void LoopbackPoll(LOOPBACK *mp) {
    if (mp->packet_head != NULL) poll_packets(mp);
    if (mp->head == NULL) return;
    if (mp->kind == COMPLETION_BATCHED)
        complete_batches(mp, 0);
    else if (mp->kind == COMPLETION_DELAY)
        complete_chains(mp, clock_ticks() - mp->delay_ticks, 1);
    else
        complete_chains(mp, 0, 0);
}

void LoopbackDrain(LOOPBACK *mp) {
    complete_packets(mp, mp->packets_queued);
    if (mp->kind == COMPLETION_BATCHED)
        complete_batches(mp, 1);
    else
        complete_chains(mp, 0, 0);
}
