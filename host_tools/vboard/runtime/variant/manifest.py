# Frozen into the faithful runtime, as an ESP32 build has them in flash:
# - asyncio (ports/esp32/boards/manifest.py freezes it too);
# - the virtual board's ROM (host_tools/vboard/rom: boot sequence, REPL, machine, flash block
#   device). On an ESP32 that is C code that takes no heap; loaded as source it would take
#   ~15 KB of the firmware's heap, so it is frozen and run with `micropython -m _vboot`.
include("$(MPY_DIR)/extmod/asyncio")
freeze("../../rom")
