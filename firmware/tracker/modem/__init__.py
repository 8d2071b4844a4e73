# The cellular modem: AT engine, per-family drivers, sockets, the recovery ladder.
