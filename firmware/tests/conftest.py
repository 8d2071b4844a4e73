import os
import sys

# Firmware modules import as `tracker.x`, exactly as on the device.
HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..")))
sys.path.insert(0, HERE)
