# Production firmware for this board: MicroPython's stock ESP32_GENERIC SPIRAM build with
# the app frozen in, so its bytecode stays in flash and the heap is left to data (with PSRAM
# the app also runs as .mpy files from the filesystem; without, it does not fit: `make
# bench`). With ESP-IDF set up (MicroPython's ports/esp32/README.md), in a checkout of
# MicroPython v1.28.0 with its submodules (third_party/README.md):
#   make -C ports/esp32 BOARD=ESP32_GENERIC BOARD_VARIANT=SPIRAM submodules
#   make -C ports/esp32 BOARD=ESP32_GENERIC BOARD_VARIANT=SPIRAM \
#       FROZEN_MANIFEST=$ALBATROSS/boards/lilygo_t_sim7600/manifest.py
# then flash build-ESP32_GENERIC-SPIRAM/firmware.bin at 0x1000 and put boot.py, main.py,
# board.json and config.json on the filesystem (the virtual board's frozen runtime is built
# from boards/unix_sim/manifest.py the same way: `albatross runtime build --board unix_sim`).
include("$(PORT_DIR)/boards/manifest.py")  # the stock build's modules (asyncio included)
package("tracker", base_path="../../firmware")
module("board.py")
module("esp32_board.py")
