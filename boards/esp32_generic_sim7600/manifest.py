# Production firmware for this board: MicroPython's stock ESP32_GENERIC build with the app
# frozen in, so its bytecode stays in flash and the heap is left to data (on an ESP32 without
# PSRAM the app does not fit as .mpy files: `make bench` measures both). With ESP-IDF set up
# (MicroPython's ports/esp32/README.md), in a checkout of MicroPython v1.28.0 with its
# submodules (third_party/README.md):
#   make -C ports/esp32 BOARD=ESP32_GENERIC submodules
#   make -C ports/esp32 BOARD=ESP32_GENERIC \
#       FROZEN_MANIFEST=$ALBATROSS/boards/esp32_generic_sim7600/manifest.py
# then flash build-ESP32_GENERIC/firmware.bin at 0x1000 and put boot.py, main.py, board.json
# and config.json on the filesystem (the virtual board's frozen runtime is built from
# boards/unix_sim/manifest.py the same way: `albatross runtime build --board unix_sim`).
include("$(PORT_DIR)/boards/manifest.py")  # the stock build's modules (asyncio included)
package("tracker", base_path="../../firmware")
module("board.py")
module("esp32_board.py")
