# What an ESP32 build freezes that the tracker uses: asyncio (ports/esp32/boards/manifest.py).
include("$(MPY_DIR)/extmod/asyncio")
