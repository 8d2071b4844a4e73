# Runs first at every reset, before main.py. Kept empty of logic on purpose: anything that
# can fail belongs in tracker.app, where failures are caught and reported.
