# Where the tracker is: GNSS receivers, their NMEA and AT answers, and the fixes they give.
