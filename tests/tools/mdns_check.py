#!/usr/bin/env python3
"""Finds a running kasad by mDNS with python-zeroconf, an independent implementation.

Runs only inside a fresh network namespace of its own (`unshare --net --uts --map-root-user`),
where it makes a veth pair (198.18.0.1 and .2, RFC 2544 test addresses), names the host
`kasad-netns`, starts `kasad run` with [mdns] on, browses `_http._tcp` and `_kasad._tcp`,
resolves both, asks /api/health at the announced address and port, adds an address
and resolves again, stops the daemon with
SIGTERM and waits for its goodbye. Prints one JSON object with what it saw.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

TYPES = ["_http._tcp.local.", "_kasad._tcp.local."]


def sh(*args):
    subprocess.run(args, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kasad", required=True)
    ap.add_argument("--dir", required=True)
    a = ap.parse_args()
    links = [x["ifname"] for x in json.loads(subprocess.check_output(["ip", "-j", "link"]))]
    if links != ["lo"]:
        sys.exit(f"refusing to run outside a fresh network namespace (interfaces: {links})")
    sh("hostname", "kasad-netns")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
    sh("ip", "addr", "add", "198.18.0.1/24", "dev", "v0")
    sh("ip", "addr", "add", "198.18.0.2/24", "dev", "v1")
    sh("ip", "link", "set", "v0", "up")
    sh("ip", "link", "set", "v1", "up")

    cfg = os.path.join(a.dir, "kasad.toml")
    with open(cfg, "w") as f:
        f.write(f'data_dir = "{a.dir}"\n[http]\nlisten = "0.0.0.0:5272"\n')
        f.write("[discovery]\nenabled = false\n")
        f.write('[mdns]\nenabled = true\ninstance = "kasad test on %h"\nresponder = "builtin"\n')
    log = open(os.path.join(a.dir, "kasad.log"), "w")
    d = subprocess.Popen([a.kasad, "run", "--config", cfg], stderr=log, stdout=log,
                         env=dict(os.environ, RUST_LOG="info,mdns_sd=warn"))

    seen = {t: {"added": [], "removed": []} for t in TYPES}
    lock = threading.Lock()

    def on_change(zeroconf, service_type, name, state_change):
        with lock:
            if state_change is ServiceStateChange.Added:
                seen[service_type]["added"].append(name)
            elif state_change is ServiceStateChange.Removed:
                seen[service_type]["removed"].append(name)

    zc = Zeroconf(interfaces=["198.18.0.2"], ip_version=IPVersion.V4Only)
    out = {"services": {}}
    try:
        ServiceBrowser(zc, TYPES, handlers=[on_change])
        deadline = time.time() + 30
        while time.time() < deadline and not all(seen[t]["added"] for t in TYPES):
            time.sleep(0.1)
        for t in TYPES:
            if not seen[t]["added"]:
                out["services"][t] = None
                continue
            name = seen[t]["added"][0]
            info = zc.get_service_info(t, name, timeout=5000)
            out["services"][t] = info and {
                "name": name,
                "server": info.server,
                "port": info.port,
                "addresses": sorted(info.parsed_addresses()),
                "txt": {k.decode(): (v or b"").decode() for k, v in info.properties.items()},
            }
        api = out["services"].get("_kasad._tcp.local.")
        if api and api["addresses"]:
            url = f"http://{api['addresses'][0]}:{api['port']}{api['txt'].get('path', '')}/health"
            with urllib.request.urlopen(url, timeout=10) as r:
                out["health_via_mdns"] = {"url": url, "status": r.status, "body": json.load(r)}
        # A new address (DHCP renews, a second network) is announced without a restart.
        sh("ip", "addr", "add", "198.18.0.3/24", "dev", "v0")
        deadline, now_at = time.time() + 30, []
        while time.time() < deadline and "198.18.0.3" not in now_at:
            time.sleep(1)
            info = zc.get_service_info("_kasad._tcp.local.", api["name"], timeout=2000) if api else None
            now_at = sorted(info.parsed_addresses()) if info else []
        out["addresses_after_change"] = now_at
        d.send_signal(signal.SIGTERM)
        out["exit_code"] = d.wait(timeout=60)
        deadline = time.time() + 10
        while time.time() < deadline and not all(seen[t]["removed"] for t in TYPES):
            time.sleep(0.1)
        out["removed"] = {t: seen[t]["removed"] for t in TYPES}
    finally:
        if d.poll() is None:
            d.kill()
        zc.close()
        log.close()
    with open(os.path.join(a.dir, "kasad.log")) as f:
        out["log"] = f.read()[-4000:]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
