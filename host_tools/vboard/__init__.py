"""The virtual board: supervisor, flash image runner and the simulated bench."""
