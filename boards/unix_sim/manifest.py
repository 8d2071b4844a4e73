# Frozen build of the virtual board (`albatross runtime build --board unix_sim`): the app and
# this board's HAL in the runtime's "flash", as a production ESP32 build would freeze them
# (boards/esp32_generic_sim7600/manifest.py is the real board's). The filesystem then holds
# only boot.py, main.py and data (host_tools/image.py, frozen=True).
# What every faithful runtime freezes (asyncio, the virtual board's ROM), then the app.
include("../../host_tools/vboard/runtime/variant/manifest.py")
package("tracker", base_path="../../firmware")
module("board.py")
module("simhal.py")
module("simuart.py")
