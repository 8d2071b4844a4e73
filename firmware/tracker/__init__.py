# Albatross tracker firmware. Runs on MicroPython (ESP32, Unix port) and, for its pure
# logic, on CPython.
VERSION = "0.1.0"
