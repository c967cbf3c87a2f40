"""Builds a kasa-monitor-shaped SQLite database for kasad's import test.

The tables are kasa-monitor's own (backend/database.py, _create_sqlite_tables); readings
are inserted the way it inserts them, with Python datetimes stored as their text form
(`YYYY-MM-DD HH:MM:SS.ffffff+00:00`). Usage: kasa_monitor_db.py PATH
"""
import datetime as dt
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1])
db.executescript("""
CREATE TABLE IF NOT EXISTS device_info (
    device_ip TEXT PRIMARY KEY, alias TEXT, model TEXT, device_type TEXT, mac TEXT,
    last_seen TIMESTAMP, metadata TEXT, is_monitored BOOLEAN DEFAULT 1,
    discovered_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, user_notes TEXT);
CREATE TABLE IF NOT EXISTS device_readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_ip TEXT, timestamp TIMESTAMP, is_on BOOLEAN,
    current_power_w REAL, voltage REAL, current REAL, today_energy_kwh REAL,
    month_energy_kwh REAL, total_energy_kwh REAL, rssi INTEGER,
    FOREIGN KEY (device_ip) REFERENCES device_info(device_ip));
CREATE INDEX IF NOT EXISTS idx_device_readings_timestamp
    ON device_readings(device_ip, timestamp DESC);
""")
UTC = dt.timezone.utc
start = dt.datetime(2025, 11, 24, 12, 0, 0, 250000, tzinfo=UTC)
# (ip, alias, model, watts, counter at start in kWh): 120 W gains 2 Wh a minute, 60 W 1 Wh.
devices = [("192.168.1.100", "Desk kasa", "HS110(EU)", 120.0, 10.0),
           ("192.168.1.101", "Fridge kasa", "KP115(US)", 60.0, 3.5)]
for ip, alias, model, watts, total0 in devices:
    db.execute("INSERT INTO device_info (device_ip, alias, model, device_type, mac, last_seen) "
               "VALUES (?, ?, ?, ?, ?, ?)", (ip, alias, model, "plug", "50:C7:BF:00:00:01", str(start)))
    # Every minute from the 24th 12:00 to the 26th 00:00 (UTC), as kasa-monitor polls.
    for m in range(36 * 60 + 1):
        t = start + dt.timedelta(minutes=m)
        total = round(total0 + watts * m / 60 / 1000, 6)
        db.execute("INSERT INTO device_readings (device_ip, timestamp, is_on, current_power_w, "
                   "voltage, current, today_energy_kwh, month_energy_kwh, total_energy_kwh, rssi) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (ip, str(t), True, watts, 230.1, round(watts / 230.1, 3), 0.0, 0.0, total, -52))
# A row whose time no tool could read.
db.execute("INSERT INTO device_readings (device_ip, timestamp, is_on, current_power_w, total_energy_kwh) "
           "VALUES ('192.168.1.101', 'not a time', 1, 60.0, 3.0)")
db.commit()
