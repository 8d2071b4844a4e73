# Runs after boot.py at every reset. Everything lives in the tracker package.
import tracker.app

tracker.app.run()
