"""python-kasa (0.12.0, an independent client) reads a simulated KLAP device by host.

usage: pykasa_check.py HOST HTTP_PORT FAMILY ENCRYPTION LOGIN_VERSION USERNAME PASSWORD
  FAMILY: IOT.SMARTPLUGSWITCH or SMART.KASAPLUG; ENCRYPTION: KLAP or AES.
Prints one JSON object: model, alias, is_on, power_w, energy_today_kwh, energy_month_kwh,
voltage, and per child the same. Never broadcasts: connects to HOST only.
"""

import asyncio
import json
import sys

from kasa import Credentials, Device, DeviceConfig, DeviceConnectionParameters


def energy(dev):
    e = dev.modules.get("Energy")
    if e is None:
        return {}
    return {
        "power_w": e.current_consumption,
        "energy_today_kwh": e.consumption_today,
        "energy_month_kwh": e.consumption_this_month,
        "voltage": e.voltage,
    }


def describe(dev):
    out = {"model": dev.model, "alias": dev.alias, "is_on": dev.is_on, "device_id": dev.device_id}
    out.update(energy(dev))
    return out


async def main():
    host, port, family, enc, lv, user, password = sys.argv[1:8]
    params = DeviceConnectionParameters.from_values(
        family, enc, login_version=int(lv), https=False, http_port=int(port)
    )
    config = DeviceConfig(host=host, credentials=Credentials(user, password), connection_type=params, timeout=10)
    dev = await Device.connect(config=config)
    try:
        await dev.update()
        out = describe(dev)
        out["children"] = [describe(c) for c in dev.children]
        print(json.dumps(out))
    finally:
        await dev.disconnect()


asyncio.run(main())
