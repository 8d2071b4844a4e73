"""The HIL suite's pytest plugin (hil_tests/plugin/core.py), registered by
hil_tests/conftest.py: targets vboard, serial and labgrid; the `board` fixture; bench.yaml
(benchfile.py); failure reports naming the board with its logs. docs/hil.md is the guide."""
