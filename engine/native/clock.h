/* The native core's clock: raw TSC ticks where the TSC is invariant (x86-64, CPUID 0x80000007 EDX bit 8), else
 * clock_gettime(CLOCK_MONOTONIC) nanoseconds. Why the TSC: on such machines the kernel's CLOCK_MONOTONIC is the
 * TSC too (clocksource tsc), read through the vDSO with a seqlock and a multiply: ~27 ns per reading here against
 * ~21 ns for lfence + rdtsc, and two readings sit inside every packet's latency window (after build, at
 * completion) of a ~20-60 ns operation. Ticks are converted to CLOCK_MONOTONIC nanoseconds after the round (anchor taken at
 * its start, ns per tick calibrated against CLOCK_MONOTONIC when the module loads), so stamps share
 * time.perf_counter_ns's time base. NDIS_REPLAY_CLOCK=monotonic forces the fallback. A bare rdtsc is not
 * serialising: an lfence before it keeps a reading from passing the work before it (without it the readings
 * overlap the ~20 ns of work being measured and latencies collapse to the clock's own cost). */
#ifndef NDIS_REPLAY_NATIVE_CLOCK_H
#define NDIS_REPLAY_NATIVE_CLOCK_H

#include <stdint.h>
#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

typedef struct {
    int use_tsc;
    double ns_per_tick;
} NATIVE_CLOCK;
extern NATIVE_CLOCK native_clock;

static inline int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t clock_ticks(void) {
#if defined(__x86_64__)
    if (native_clock.use_tsc) {
        _mm_lfence();
        return (int64_t)__rdtsc();
    }
#endif
    return monotonic_ns();
}

/* a duration in ns as ticks (rounded down; at least 0) */
static inline int64_t ns_to_ticks(int64_t ns) {
    return native_clock.use_tsc ? (int64_t)((double)ns / native_clock.ns_per_tick) : ns;
}

#endif
