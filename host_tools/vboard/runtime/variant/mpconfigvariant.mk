# ESP32 stand-in: no btree, TLS or FFI (no ESP32 build of ours uses them, and they need
# submodules the vendored source does not carry); asyncio frozen in, as on ESP32.
MICROPY_PY_BTREE = 0
MICROPY_PY_SSL = 0
MICROPY_PY_FFI = 0
MICROPY_STANDALONE = 0
FROZEN_MANIFEST ?= $(VARIANT_DIR)/manifest.py
# build.py links with -m32 -static and --wrap for libc's clock (esp32_clock.c) and the GC's
# entry points (vstats.c): see WRAPPED there.
