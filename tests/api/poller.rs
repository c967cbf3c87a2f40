//! Discovery and polling over real loopback sockets against the simulator, driven cycle by
//! cycle with `poll_once` / `discover_once`; time comes from a manual clock shared by the
//! simulated devices and the daemon, so values and energy are exact.

use kasad::clock::{Clock, ManualClock, SharedClock};
use kasad::domain::{DeviceId, DeviceStatus};
use kasad::poller::discovery::Discoverer;
use kasad::poller::registry::Registry;
use kasad::poller::{Outcome, PollConfig, Poller};
use kasad::series::{self, Resolution};
use kasad::sim::{self, Fault, Load, Model, SimDevice, SimHandle, SimSpec};
use kasad::store::{Store, WriterHandle, writer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_764_064_800_000; // 2025-11-25T10:00:00Z

struct Rig {
    clock: Arc<ManualClock>,
    poller: Poller,
    discoverer: Discoverer,
    store: Store,
    writer: WriterHandle,
    sims: Vec<SimHandle>,
    _dir: tempfile::TempDir,
}

async fn rig(specs: Vec<SimSpec>, extra_targets: &[SocketAddr]) -> Rig {
    let clock = Arc::new(ManualClock::new(T0));
    let shared: SharedClock = clock.clone();
    let mut sims = Vec::new();
    for (i, s) in specs.into_iter().enumerate() {
        let d = SimDevice::new(s, T0);
        sims.push(
            sim::start(d, sim::fleet_ip(40 + i as u32), 0, shared.clone())
                .await
                .unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("k.redb"), 8).unwrap();
    let (writer, _task) = writer::spawn(store.clone(), Duration::from_secs(3600), None);
    let registry = Arc::new(Registry::default());
    let mut targets: Vec<SocketAddr> = sims.iter().map(|s| s.addr).collect();
    targets.extend_from_slice(extra_targets);
    let poller = Poller {
        cfg: PollConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(1500),
            concurrency: 16,
            max_backoff: Duration::from_secs(60),
            static_hosts: vec![],
        },
        registry: registry.clone(),
        writer: writer.clone(),
        clock: shared.clone(),
        status: Default::default(),
        conns: Arc::new(kasad::poller::conns::ConnPool::new(64)),
        sent: Default::default(),
    };
    let discoverer = Discoverer {
        targets,
        targets_20002: vec![],
        window: Duration::from_millis(300),
        registry,
        writer: writer.clone(),
        clock: shared,
        allow_login_v1: false,
    };
    Rig {
        clock,
        poller,
        discoverer,
        store,
        writer,
        sims,
        _dir: dir,
    }
}

fn plug(i: u32, mw: i64) -> SimSpec {
    SimSpec::numbered(i, Model::Kp115, vec![Load::Constant(mw)])
}

fn id_of(s: &SimHandle) -> DeviceId {
    s.with_device(|d| DeviceId::parse(&d.spec().device_id).unwrap())
}

#[tokio::test]
async fn a_hung_or_broken_device_delays_no_other_device() {
    let r = rig(
        (0..6).map(|i| plug(i, 1_000 * (i as i64 + 1))).collect(),
        &[],
    )
    .await;
    assert_eq!(r.discoverer.discover_once().await.unwrap(), 6);
    r.sims[1].set_fault(Some(Fault::Hang));
    r.sims[2].set_fault(Some(Fault::Garbage));
    r.sims[3].set_fault(Some(Fault::DropMidFrame));
    r.sims[4].set_fault(Some(Fault::ErrCode(-7)));

    let outcomes = r.poller.poll_once().await;
    assert_eq!(outcomes.len(), 6);
    // Results arrive in completion order: the hung device, which only fails at its timeout,
    // comes last; every healthy device's reading was handed over before it.
    match outcomes.last().unwrap() {
        Outcome::Failed(id, e) => {
            assert_eq!(id, &id_of(&r.sims[1]));
            assert!(e.contains("timed out"), "{e}");
        }
        o => panic!("expected the hung device last, got {o:?}"),
    }
    let ok: Vec<DeviceId> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Ok(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ok.len(), 2);
    assert!(ok.contains(&id_of(&r.sims[0])) && ok.contains(&id_of(&r.sims[5])));
    for (i, needle) in [(2, "undecodable"), (3, "network"), (4, "device error -7")] {
        let id = id_of(&r.sims[i]);
        let failed = outcomes.iter().find_map(|o| match o {
            Outcome::Failed(f, e) if *f == id => Some(e.clone()),
            _ => None,
        });
        assert!(
            failed.as_deref().is_some_and(|e| e.contains(needle)),
            "device {i}: {failed:?}"
        );
    }
    r.writer.flush().await.unwrap();
    let rows = r
        .store
        .readings(&id_of(&r.sims[5]), 0, i64::MAX, 10)
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].reading.power_mw, Some(6_000));

    // The daemon keeps going: the same devices recover as soon as the faults clear, and a
    // device failing twice is shown offline and backed off.
    r.sims[2].set_fault(None);
    r.clock.advance(10_000);
    r.poller.poll_once().await;
    let reg = &r.poller.registry;
    assert_eq!(
        reg.find(&id_of(&r.sims[2])).unwrap().status,
        DeviceStatus::Online
    );
    assert_eq!(
        reg.find(&id_of(&r.sims[3])).unwrap().status,
        DeviceStatus::Offline
    );
    assert!(reg.find(&id_of(&r.sims[3])).unwrap().last_error.is_some());
}

#[tokio::test]
async fn values_equal_the_simulator_and_energy_follows_the_counter() {
    // 360 W: exactly 1 Wh every 10 s.
    let r = rig(
        vec![SimSpec::numbered(
            7,
            Model::Hs110V1,
            vec![Load::Constant(360_000)],
        )],
        &[],
    )
    .await;
    r.discoverer.discover_once().await.unwrap();
    let id = id_of(&r.sims[0]);
    for step in 0..12 {
        if step == 6 {
            // Reboot: the counter restarts from zero.
            r.sims[0].with_device(|d| d.reset_counters());
        }
        r.poller.poll_once().await;
        r.clock.advance(10_000);
    }
    r.writer.flush().await.unwrap();
    let rows = r.store.readings(&id, 0, i64::MAX, 100).unwrap();
    assert_eq!(rows.len(), 12);
    let (p, v, c, _) = r.sims[0].with_device(|d| d.meter(0, rows[11].reading.ts_ms));
    assert_eq!(rows[11].reading.power_mw, Some(p));
    assert_eq!(rows[11].reading.voltage_mv, Some(v));
    assert_eq!(rows[11].reading.current_ma, Some(c));
    let counters: Vec<i64> = rows.iter().map(|r| r.reading.counter_wh.unwrap()).collect();
    // The device rebooted just before the 7th poll and counted 1 Wh since.
    assert_eq!(counters, vec![0, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 6]);
    let energy: Vec<i64> = rows.iter().map(|r| r.energy_wh).collect();
    // The reset interval counts what the device counted since its reset, never a negative or
    // re-counted amount: 11 intervals of 10 s at 360 W are exactly 11 Wh.
    assert_eq!(energy, vec![0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    let buckets = r.store.buckets(&id, 0, i64::MAX).unwrap();
    assert_eq!(buckets.iter().map(|b| b.energy_mwh).sum::<i64>(), 11_000);
}

#[tokio::test]
async fn strip_outlets_are_polled_separately_and_sum_to_the_strip() {
    let loads = (0..6).map(|i| Load::Constant(10_000 * (i + 1))).collect();
    let r = rig(vec![SimSpec::numbered(9, Model::Hs300, loads)], &[]).await;
    r.discoverer.discover_once().await.unwrap();
    for _ in 0..3 {
        r.poller.poll_once().await;
        r.clock.advance(10_000);
    }
    r.writer.flush().await.unwrap();
    let strip = id_of(&r.sims[0]);
    for i in 0..6 {
        let outlet = DeviceId::parse(&format!("{strip}{i:02}")).unwrap();
        let rows = r.store.readings(&outlet, 0, i64::MAX, 10).unwrap();
        assert_eq!(rows.len(), 3, "outlet {i}");
        assert_eq!(rows[0].reading.power_mw, Some(10_000 * (i + 1)));
    }
    let tz = chrono_tz::UTC;
    let total = series::series(&r.store, &strip, 0, i64::MAX, Resolution::Raw, tz).unwrap();
    assert_eq!(total.len(), 3);
    assert_eq!(total[0].power_mw, Some(210_000.0));
    assert!(
        r.store
            .readings(&strip, 0, i64::MAX, 10)
            .unwrap()
            .is_empty(),
        "the strip itself has no series of its own"
    );
}

#[tokio::test]
async fn a_device_that_moves_keeps_its_history() {
    // The device's next address is probed too, so rediscovery finds it there.
    let spare = std::net::UdpSocket::bind("127.0.0.61:0").unwrap();
    let new_addr = spare.local_addr().unwrap();
    drop(spare);
    let r = rig(vec![plug(11, 5_000)], &[new_addr]).await;
    r.discoverer.discover_once().await.unwrap();
    r.poller.poll_once().await;
    let id = id_of(&r.sims[0]);
    r.sims[0].stop();
    let moved = r.sims[0].with_device(|d| d.clone());
    let shared: SharedClock = r.clock.clone();
    let _new = sim::start(moved, new_addr.ip(), new_addr.port(), shared)
        .await
        .unwrap();
    r.clock.advance(10_000);
    assert_eq!(r.discoverer.discover_once().await.unwrap(), 1);
    assert_eq!(r.poller.registry.find(&id).unwrap().addr, new_addr);
    r.poller.poll_once().await;
    r.writer.flush().await.unwrap();
    assert_eq!(r.store.readings(&id, 0, i64::MAX, 10).unwrap().len(), 2);
    assert_eq!(r.store.devices().unwrap().len(), 1);
    assert_eq!(
        r.store.device(&id).unwrap().unwrap().info.address,
        new_addr.to_string()
    );
}

#[tokio::test]
async fn another_device_at_an_old_address_does_not_stand_in_for_the_old_one() {
    let r = rig(vec![plug(21, 1_000)], &[]).await;
    r.discoverer.discover_once().await.unwrap();
    let old = id_of(&r.sims[0]);
    let addr = r.sims[0].addr;
    r.sims[0].stop();
    // DHCP hands the address to a different plug.
    let shared: SharedClock = r.clock.clone();
    // The stopped listener closes asynchronously; retry the bind a bounded number of times.
    let mut other = None;
    for _ in 0..100 {
        let d = SimDevice::new(plug(22, 2_000), T0);
        if let Ok(h) = sim::start(d, addr.ip(), addr.port(), shared.clone()).await {
            other = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = other.expect("the old address becomes free");
    let outcomes = r.poller.poll_once().await;
    assert!(
        matches!(&outcomes[..], [Outcome::Failed(id, e)] if *id == old && e.contains("now answers")),
        "{outcomes:?}"
    );
    r.poller.poll_once().await;
    r.writer.flush().await.unwrap();
    assert!(
        r.store.readings(&old, 0, i64::MAX, 10).unwrap().is_empty(),
        "no readings under the old id"
    );
    assert_eq!(
        r.store
            .readings(&id_of(&other), 0, i64::MAX, 10)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        r.poller.registry.find(&old).unwrap().status,
        DeviceStatus::Offline
    );
}

/// Local midnight of 2025-11-26 in Kathmandu (+05:45), the device's time zone below.
const KTM_26: i64 = 1_764_094_500_000; // 2025-11-25T18:15:00Z
const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

/// A 360 W plug (exactly 1 Wh every 10 s) in Kathmandu, polled every 10 minutes from T0
/// (15:45 local) to 02:05 local the next day: the history before a gap. Returns the
/// device's id.
async fn kathmandu_history(r: &Rig) -> DeviceId {
    r.sims[0].with_device(|d| d.set_utc_offset_minutes(345));
    r.discoverer.discover_once().await.unwrap();
    while r.clock.now_ms() <= KTM_26 + 2 * HOUR + 300_000 {
        assert!(matches!(&r.poller.poll_once().await[..], [Outcome::Ok(_)]));
        r.clock.advance(600_000);
    }
    r.clock.advance(-600_000);
    id_of(&r.sims[0])
}

/// Switches outlet 0 off for all of the 27th (local) and moves the clock to 06:00 on the
/// 28th, which it returns.
fn off_on_the_27th(r: &Rig) -> i64 {
    r.sims[0].with_device(|d| {
        d.set_relay(0, false, KTM_26 + DAY);
        d.set_relay(0, true, KTM_26 + 2 * DAY);
    });
    let t1 = KTM_26 + 2 * DAY + 6 * HOUR;
    r.clock.set(t1);
    t1
}

/// A new daemon's poller: its registry comes from the store, with the newest readings' time.
fn restarted(r: &Rig) -> Poller {
    let mut poller = r.poller.clone();
    poller.registry = Arc::new(Registry::default());
    poller.sent = Default::default();
    kasad::app::load_registry(&r.store, &poller.registry).unwrap();
    poller
}

/// Energy per local day in Kathmandu, mWh, of the days that have any.
fn kathmandu_days(r: &Rig, id: &DeviceId) -> Vec<i64> {
    let tz = chrono_tz::Asia::Kathmandu;
    let day = Resolution::parse("day").unwrap();
    let days = series::series(&r.store, id, 0, i64::MAX, day, tz).unwrap();
    days.iter().map(|p| p.energy_mwh).collect()
}

/// Energy in the device's 15-minute buckets within `[from, to)`, mWh.
fn energy_in(r: &Rig, id: &DeviceId, from: i64, to: i64) -> Vec<i64> {
    let b = r.store.buckets(id, from, to).unwrap();
    b.iter()
        .filter(|b| b.start_ms >= from && b.start_ms < to && b.energy_mwh != 0)
        .map(|b| b.energy_mwh)
        .collect()
}

#[tokio::test]
async fn a_gap_across_a_restart_follows_the_device_days_and_counts_the_counter_once() {
    let r = rig(vec![plug(30, 360_000)], &[]).await;
    let id = kathmandu_history(&r).await;
    let t0 = r.clock.now_ms();
    assert_eq!(t0, KTM_26 + 2 * HOUR + 300_000); // 02:05 local
    r.writer.flush().await.unwrap();

    // The daemon is down for two days. The load runs until local midnight, is off all of
    // the 27th and runs again from midnight to 06:00 on the 28th.
    let t1 = off_on_the_27th(&r);
    let poller = restarted(&r);
    assert!(matches!(&poller.poll_once().await[..], [Outcome::Ok(_)]));
    r.writer.flush().await.unwrap();

    let rows = r.store.readings(&id, t0, i64::MAX, 10).unwrap();
    let counters: Vec<i64> = rows.iter().map(|r| r.reading.counter_wh.unwrap()).collect();
    // 10 h 20 min before the gap, 21 h 55 min + 6 h in it, at 360 W.
    assert_eq!(counters, vec![3_720, 13_770]);
    // The interval after the gap holds the counter delta: day totals are not added on top.
    assert_eq!(rows[1].energy_wh, 10_050);
    let all: i64 = energy_in(&r, &id, 0, i64::MAX).iter().sum();
    assert_eq!(
        all, 13_770_000,
        "all energy equals the device counter, once"
    );
    // Shaped by the device's days: nothing on the 27th, when it used nothing (a spread in
    // proportion to time would have put 3.2 kWh there), and an even share within each day.
    assert!(energy_in(&r, &id, KTM_26 + DAY, KTM_26 + 2 * DAY).is_empty());
    let day28 = energy_in(&r, &id, KTM_26 + 2 * DAY, t1);
    assert_eq!(day28, vec![90_000; 24]);
    let tz = chrono_tz::Asia::Kathmandu;
    let days = series::series(
        &r.store,
        &id,
        0,
        i64::MAX,
        Resolution::parse("day").unwrap(),
        tz,
    )
    .unwrap();
    let per_day: Vec<(i64, i64)> = days.iter().map(|p| (p.ts_ms, p.energy_mwh)).collect();
    assert_eq!(
        per_day,
        vec![
            (KTM_26 - DAY, 2_970_000),
            (KTM_26, 8_640_000),
            (KTM_26 + 2 * DAY, 2_160_000)
        ],
        "each local day holds what the device counted that day"
    );
    // Back to normal polling: no day totals, plain counter differences.
    r.clock.advance(10_000);
    poller.poll_once().await;
    r.writer.flush().await.unwrap();
    let last = r.store.readings(&id, t1 + 1, i64::MAX, 10).unwrap();
    assert_eq!(last[0].energy_wh, 1);
}

#[tokio::test]
async fn after_a_reboot_in_a_gap_the_device_days_stand_in_for_the_lost_counter() {
    let r = rig(vec![plug(31, 360_000)], &[]).await;
    let id = kathmandu_history(&r).await;
    // The plug is off the network for a day (the daemon keeps running) and reboots at noon,
    // its counter starting from zero; the load is off from noon to midnight and on until
    // 03:00.
    let t1 = KTM_26 + DAY + 3 * HOUR;
    r.sims[0].with_device(|d| {
        d.set_relay(0, false, KTM_26 + 12 * HOUR);
        d.reset_counters();
        d.set_relay(0, true, KTM_26 + DAY);
    });
    r.clock.set(t1);
    let outcomes = r.poller.poll_once().await;
    assert!(matches!(&outcomes[..], [Outcome::Ok(_)]), "{outcomes:?}");
    r.writer.flush().await.unwrap();

    let rows = r
        .store
        .readings(&id, KTM_26 + 2 * HOUR, i64::MAX, 10)
        .unwrap();
    let counters: Vec<i64> = rows.iter().map(|r| r.reading.counter_wh.unwrap()).collect();
    assert_eq!(counters, vec![3_720, 1_080]);
    // The counter alone says 1.08 kWh (since the reboot); the device's days say 3.57 kWh
    // more were used on the 26th before it: they stand in for the lost part.
    assert_eq!(rows[1].energy_wh, 4_650);
    let all: i64 = energy_in(&r, &id, 0, i64::MAX).iter().sum();
    assert_eq!(
        all,
        2_970_000 + 4_320_000 + 1_080_000,
        "what the device used, once"
    );
    assert_eq!(
        kathmandu_days(&r, &id),
        vec![2_970_000, 4_320_000, 1_080_000]
    );
    // Sealed into a block an hour later, the stand-in energy reads back the same and the
    // store verifies.
    r.clock.advance(2 * HOUR);
    r.poller.poll_once().await;
    r.writer.flush().await.unwrap();
    let rows = r.store.readings(&id, t1, t1 + 1, 10).unwrap();
    assert_eq!(rows[0].energy_wh, 4_650);
    let report = r.store.verify_data().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn each_strip_outlet_gets_its_own_day_totals_after_a_restart() {
    let loads = vec![Load::Constant(360_000), Load::Constant(36_000)];
    let r = rig(vec![SimSpec::numbered(32, Model::Hs300, loads)], &[]).await;
    let strip = kathmandu_history(&r).await;
    let outlet = |i: usize| DeviceId::parse(&format!("{strip}{i:02}")).unwrap();
    r.writer.flush().await.unwrap();
    // Outlet 1 is off all of the 27th; outlet 2 runs throughout.
    off_on_the_27th(&r);
    assert!(matches!(
        &restarted(&r).poll_once().await[..],
        [Outcome::Ok(_)]
    ));
    r.writer.flush().await.unwrap();
    assert!(energy_in(&r, &outlet(0), KTM_26 + DAY, KTM_26 + 2 * DAY).is_empty());
    assert_eq!(
        kathmandu_days(&r, &outlet(0)),
        vec![2_970_000, 8_640_000, 2_160_000]
    );
    assert_eq!(
        kathmandu_days(&r, &outlet(1)),
        vec![297_000, 864_000, 864_000, 216_000]
    );
    // Outlets with no load stay at zero, whatever the day totals.
    assert!(energy_in(&r, &outlet(2), 0, i64::MAX).is_empty());
}
