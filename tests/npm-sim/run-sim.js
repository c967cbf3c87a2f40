// Starts tplink-smarthome-simulator devices on loopback for kasad's interop tests.
//
// usage: node run-sim.js '[{"model":"hs110","address":"127.0.0.2"}, ...]'
// Prints one JSON line per device ({model, address, port, sysinfo, realtime: [per outlet]}),
// computed by the simulator itself, then "ready". Stops when stdin closes or on SIGTERM.
// Loopback only: every device binds the address it is given (never 0.0.0.0), and the
// simulator's broadcast UdpServer is never started.
'use strict';
const { Device } = require('tplink-smarthome-simulator');

const specs = JSON.parse(process.argv[2] || '[]');

function ask(device, request) {
  const { response } = device.processMessage(JSON.stringify(request), (x) => x);
  return JSON.parse(response);
}

async function main() {
  const devices = [];
  for (const [i, spec] of specs.entries()) {
    if (!spec.address.startsWith('127.')) throw new Error(`refusing non-loopback address ${spec.address}`);
    const d = new Device({ model: spec.model, address: spec.address, port: 0, alias: `Interop ${spec.model} ${i}` });
    // Distinct, non-default meter values so the comparison means something.
    if (spec.model === 'hs300') {
      d.children.forEach((c, j) => {
        Object.assign(c.emeter.realtime, { power: 10.5 + 7 * j, voltage: 120.25 + j, current: 0.125 + j / 10, total: 3.5 + j });
      });
    } else if (d.data.emeter && d.data.emeter.realtime) {
      Object.assign(d.data.emeter.realtime, { power: 61.753 + i, voltage: 230.837, current: 0.451, total: 16.323 + i });
    }
    d.deviceNetworking.on('error', (e) => console.error(`simulator error (${spec.model}): ${e.message}`));
    await d.start();
    devices.push(d);
    const sysinfo = ask(d, { system: { get_sysinfo: {} } }).system.get_sysinfo;
    const ids = (sysinfo.children || []).map((c) => c.id);
    const realtime = ids.length
      ? ids.map((id) => ask(d, { context: { child_ids: [id] }, emeter: { get_realtime: {} } }).emeter)
      : [ask(d, { emeter: { get_realtime: {} } }).emeter];
    console.log(JSON.stringify({ model: spec.model, address: d.address, port: d.port, sysinfo, realtime }));
  }
  console.log('ready');
  const stop = async () => {
    for (const d of devices) await d.stop().catch(() => {});
    process.exit(0);
  };
  process.stdin.on('end', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
