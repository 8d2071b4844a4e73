"""Flashing boards over USB with esptool used as a library.

payload.Payload / build_payload   the image of `albatross build-image`, provisioned per device
flasher.flash_board               one board: connect, check, mac, provision, write, verify,
                                  reset, first boot (`albatross flash`)
fleet.fleet_flash                 a tray at once, one thread per port, CSV/JSON report,
                                  reruns skip boards done (`albatross fleet flash`)
ports.open_port                   the port, locked; rfc2217 without a renegotiation per command
progress                          stage lines, progress bars, esptool's output per thread
errors                            FlashError and its kinds, one line each
measure                           throughput and tray figures on simulated ESP32s
"""
