# Runs first at every reset, before main.py. Kept empty of logic on purpose: anything that
# can fail belongs in tracker.app, where failures are caught and reported. The one exception:
# an `albatross deploy` cut short after writing its journal (host_tools/deploy.py) is
# finished here, before main.py imports the app, so the board boots the new app whole, never
# a mix. It runs only when deploy.journal exists, and nothing in it can stop the boot.
try:
    import os

    os.stat("deploy.journal")
    for p in open("deploy.journal").read().split("\n"):
        try:
            if p[:1] == "-":
                os.remove(p[1:])
            elif p:
                os.rename(p + ".new", p)
        except OSError:
            pass  # already done by an earlier, interrupted finish
    os.remove("deploy.journal")
except Exception:
    pass
