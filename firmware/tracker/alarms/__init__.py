# Alarm rules, geofences and cold-chain statistics: pure logic (no I/O), see docs/alarms.md.
