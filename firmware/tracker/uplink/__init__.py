# Delivery to the cloud: MQTT over a modem socket or the board's own TCP.
