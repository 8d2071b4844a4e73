# Runs every firmware/tests/test_*.py under the MicroPython Unix port:
#   micropython firmware/tests/run_mp.py [module-name-filter]
# Each test module is unloaded after it ran, so the suite fits the device-sized heap.
# Prints one line per failure or skip and a closing "N passed, N failed, N skipped" line; exit 1
# on failure. A test skips by raising mptest.Skipped (mptest.skip), never by returning early.
import gc
import os
import sys

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
if not HERE.startswith("/"):  # tests chdir into their own "flash" directory
    HERE = os.getcwd() + "/" + HERE
sys.path.insert(0, HERE)
sys.path.insert(0, HERE + "/..")


def main():
    pattern = sys.argv[1] if len(sys.argv) > 1 else ""
    passed = failed = skipped = 0
    before = set(sys.modules)
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        modname = name[:-3]
        if pattern not in modname or (pattern.startswith("test_") and pattern != modname):
            continue  # "at" matches every module with "at" in its name; "test_x" only test_x
        try:
            mod = __import__(modname)
        except Exception as e:
            print("FAIL %s (import): %s: %s" % (modname, type(e).__name__, e))
            sys.print_exception(e)
            failed += 1
            continue
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_"):
                continue
            fn = getattr(mod, attr)
            if not callable(fn):
                continue
            try:
                fn()
                passed += 1
            except Exception as e:
                # By name: mptest is unloaded with each module, so its class differs each time.
                if type(e).__name__ == "Skipped":
                    skipped += 1
                    print("SKIP %s.%s: %s" % (modname, attr, e))
                    continue
                failed += 1
                print("FAIL %s.%s: %s: %s" % (modname, attr, type(e).__name__, e))
                sys.print_exception(e)
        # Forget the module (and what it imported for itself) before the next one.
        for loaded in list(sys.modules):
            if loaded not in before:
                del sys.modules[loaded]
        mod = fn = None
        gc.collect()
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    sys.exit(1 if failed else 0)


main()
