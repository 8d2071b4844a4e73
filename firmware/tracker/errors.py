# Error bases that modules catch without importing the code that raises them: the uplink
# catches modem failures, but a board without a modem must not load the AT engine (RAM).


class ModemError(Exception):
    """Any failure talking to the cellular modem (AT timeouts, errors, power, sockets)."""
