# Board factory of the LilyGO T-SIM7600 (ESP32-WROVER-B + SIM7600). Pin numbers come from
# board.json (sources cited there); the machine objects are built by esp32_board.py, a symlink
# to the one in boards/esp32_generic_sim7600/ (the two boards differ only in data).
import esp32_board


def create(info_path=None):
    return esp32_board.create("lilygo_t_sim7600", info_path)
