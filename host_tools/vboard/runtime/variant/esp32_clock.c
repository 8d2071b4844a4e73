// Tick counter and wall clock of the virtual board, set from the environment at start:
//   ALBATROSS_TICKS_START_MS  ticks_ms() at boot (an ESP32 counts from 0 at reset; a value
//                             just below 2^30 puts the wrap minutes away)
//   ALBATROSS_CLOCK_START     the wall clock at boot, seconds since 1970-01-01 (an ESP32's RTC
//                             starts at 2000-01-01 after power-on); unset: the host's clock
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static int started;
static unsigned long long mono_base_us;   // host CLOCK_MONOTONIC at the first call
static unsigned long long ticks_start_us;
static long long clock_shift_s;           // added to the host's wall clock

static unsigned long long host_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000ULL;
}

// The port builds with -D_TIME_BITS=64: on 32-bit glibc time() and gettimeofday() are the
// symbols __time64 and __gettimeofday64, which the link wraps (build.py).
int __real___gettimeofday64(struct timeval *tv, void *tz);

static void start(void) {
    if (started) {
        return;
    }
    started = 1;
    mono_base_us = host_mono_us();
    const char *ticks = getenv("ALBATROSS_TICKS_START_MS");
    ticks_start_us = ticks ? strtoull(ticks, NULL, 10) * 1000ULL : 0;
    const char *clock = getenv("ALBATROSS_CLOCK_START");
    if (clock && *clock) {
        struct timeval now;
        __real___gettimeofday64(&now, NULL);
        clock_shift_s = strtoll(clock, NULL, 10) - (long long)now.tv_sec;
    }
}

static unsigned long long uptime_us(void) {
    start();
    return ticks_start_us + (host_mono_us() - mono_base_us);
}

unsigned long albatross_ticks_ms(void) {
    return (unsigned long)(uptime_us() / 1000ULL);
}

unsigned long albatross_ticks_us(void) {
    return (unsigned long)uptime_us();
}

int __wrap___gettimeofday64(struct timeval *tv, void *tz) {
    start();
    int r = __real___gettimeofday64(tv, tz);
    if (r == 0 && tv) {
        tv->tv_sec += (time_t)clock_shift_s;
    }
    return r;
}

time_t __real___time64(time_t *t);

time_t __wrap___time64(time_t *t) {
    start();
    time_t now = __real___time64(NULL) + (time_t)clock_shift_s;
    if (t) {
        *t = now;
    }
    return now;
}
