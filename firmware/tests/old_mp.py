# Honest fakes of what older MicroPython releases do differently, so the firmware's tests
# can hold it to the oldest release it supports (tracker/compat.py) on any interpreter.
import json as _json


class StrictStr(str):
    """A str whose startswith/endswith behave as before MicroPython v1.25: the prefix or
    suffix is one str (a tuple raises TypeError), startswith takes a start but no end, and
    endswith takes neither."""

    def startswith(self, prefix, start=0, *end):
        if not isinstance(prefix, str):
            raise TypeError("startswith(%s) before MicroPython v1.25" % type(prefix).__name__)
        if end:
            raise TypeError("startswith(prefix, start, end) before MicroPython v1.25")
        return self[:].startswith(prefix, start)  # self[:] is a plain str

    def endswith(self, suffix, *where):
        if not isinstance(suffix, str):
            raise TypeError("endswith(%s) before MicroPython v1.25" % type(suffix).__name__)
        if where:
            raise NotImplementedError("start/end indices")
        return self[:].endswith(suffix)


class strict_lines:
    """`with strict_lines():` every line the AT line assembler makes is a StrictStr (it
    builds them with str(buf, "ascii"), looked up in tracker.modem.at_lines' globals)."""

    def __enter__(self):
        from tracker.modem import at_lines

        self.module = at_lines
        at_lines.str = StrictStr
        return self

    def __exit__(self, *exc):
        del self.module.str
        return False


class OldJson:
    """The json module as MicroPython v1.22-v1.25 has it: loads() of an object cut short
    returns what it read instead of raising (here: the complete items before the last ",",
    which for config.save()'s one-key-per-line file is exactly what was read)."""

    def __init__(self):
        self.dumps = _json.dumps
        self.dump = _json.dump
        self.load = _json.load
        self.lenient_loads = 0  # how often a cut object was returned instead of refused

    def loads(self, raw):
        try:
            return _json.loads(raw)
        except ValueError:
            pass
        text = raw.decode() if isinstance(raw, (bytes, bytearray)) else raw
        if not text.strip().startswith("{"):
            raise ValueError("syntax error in JSON")
        self.lenient_loads += 1
        cut = text.rfind(",")
        try:
            return _json.loads(text[:cut] + "}") if cut > 0 else {}
        except ValueError:
            return {}


class patched:
    """`with patched(module, name, value):` module.name is value inside the block."""

    def __init__(self, module, name, value):
        self.module = module
        self.name = name
        self.value = value

    def __enter__(self):
        self.old = getattr(self.module, self.name)
        setattr(self.module, self.name, self.value)
        return self.value

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.old)
        return False
