# Board factory of the generic PSRAM-less tracker: an ESP32-WROOM-32E DevKit wired to a SIM7600
# breakout. Pins, polarities and buffer sizes are data in board.json (what is a datasheet fact
# and what is our wiring choice is said there); the machine objects are built by
# esp32_board.py, shared with the LilyGO T-SIM7600 (see its header).
import esp32_board


def create(info_path=None):
    return esp32_board.create("esp32_generic_sim7600", info_path)
