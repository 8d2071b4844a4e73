# Sensor drivers and sampling.
