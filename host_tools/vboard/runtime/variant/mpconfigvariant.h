// The virtual board's ESP32-faithful MicroPython: the Unix port built 32-bit (-m32, set by
// host_tools/vboard/runtime/build.py) with the ESP32 port's feature level and its
// single-precision floats (ports/esp32/mpconfigport.h: MICROPY_FLOAT_IMPL_FLOAT), so object
// sizes, the small-int range, float rounding and the 2^30 ms ticks wrap are an ESP32's.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)

// The tick counter and the wall clock can start at any value (esp32_clock.c), so weeks of
// uptime, the ticks_ms wrap and any calendar date are reached in minutes.
#define mp_hal_ticks_ms albatross_ticks_ms
#define mp_hal_ticks_us albatross_ticks_us
unsigned long albatross_ticks_ms(void);
unsigned long albatross_ticks_us(void);

#include "variants/mpconfigvariant_common.h"
