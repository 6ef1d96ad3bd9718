//! The lease's timing rules and record handling, against a store in memory.

use super::*;

/// Lease objects in memory, as a store with create-if-absent writes keeps them.
#[derive(Default)]
struct MemoryLease(Mutex<std::collections::BTreeMap<u64, Vec<u8>>>);

#[async_trait::async_trait]
impl LeaseStore for MemoryLease {
    fn location(&self) -> String {
        "memory".into()
    }
    async fn epochs(&self) -> Result<Vec<u64>, inlet_core::sink::TargetError> {
        Ok(self.0.lock().unwrap().keys().copied().collect())
    }
    async fn read(&self, epoch: u64) -> Result<Option<Vec<u8>>, inlet_core::sink::TargetError> {
        Ok(self.0.lock().unwrap().get(&epoch).cloned())
    }
    async fn create(
        &self,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<bool, inlet_core::sink::TargetError> {
        let mut objects = self.0.lock().unwrap();
        if objects.contains_key(&epoch) {
            return Ok(false);
        }
        objects.insert(epoch, record);
        Ok(true)
    }
    async fn rewrite(
        &self,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<(), inlet_core::sink::TargetError> {
        self.0.lock().unwrap().insert(epoch, record);
        Ok(())
    }
    async fn remove(&self, epoch: u64) -> Result<(), inlet_core::sink::TargetError> {
        self.0.lock().unwrap().remove(&epoch);
        Ok(())
    }
}

fn daemon(host: &str) -> DaemonId {
    DaemonId {
        host: host.into(),
        pid: 7,
        pid_namespace: "pid:[1]".into(),
        boot_id: "another kernel".into(),
        started_ms: 0,
    }
}

/// A lease taken after it expired makes the taker wait as long as the former owner may
/// still write (a renewal of it in flight at the take may land after the taker's last
/// look); one the former owner released is started at once.
#[tokio::test]
async fn a_lease_taken_after_it_expired_waits_out_the_former_owner() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLease::default());
    let timing = LeaseTiming::new(3);
    let mut a = LeaseWatch::new("t", store.clone(), timing, daemon("a"));
    let mut b = LeaseWatch::new("t", store.clone(), timing, daemon("b"));
    assert!(matches!(
        a.look().await.unwrap(),
        Seen::Free { next_epoch: 1 }
    ));
    let first = a.take(1).await.unwrap().unwrap();
    assert!(first.former_owner().is_none(), "nobody held it before");
    assert!(matches!(
        b.look().await.unwrap(),
        Seen::Owned { epoch: 1, .. }
    ));
    // a stops renewing (paused, cut off, or its renewals stuck in the store).
    tokio::time::sleep(timing.expires_after + Duration::from_millis(100)).await;
    assert!(matches!(
        b.look().await.unwrap(),
        Seen::Free { next_epoch: 2 }
    ));
    let second = b.take(2).await.unwrap().unwrap();
    assert_eq!(
        second.former_owner(),
        Some(("a/7", timing.writes_within)),
        "the taker of an expired lease waits out its former owner"
    );
    // b gives the task up: the next taker starts at once.
    second.release().await;
    assert!(matches!(
        a.look().await.unwrap(),
        Seen::Free { next_epoch: 3 }
    ));
    let third = a.take(3).await.unwrap().unwrap();
    assert!(
        third.former_owner().is_none(),
        "a released lease is not waited for"
    );
}

#[test]
fn a_record_without_a_finish_time_reads_as_unfinished() {
    let old = br#"{"host":"h","pid":7,"pid_namespace":"pid:[1]","renewals":2,"released":true}"#;
    let record: LeaseRecord = serde_json::from_slice(old).unwrap();
    assert_eq!(record.finished, None);
    let finished = LeaseRecord {
        finished: Some(1_765_000_000_123),
        ..record
    };
    let back: LeaseRecord = serde_json::from_slice(&finished.encode()).unwrap();
    assert_eq!(back, finished);
    assert_eq!(
        show_wall_clock_ms(1_765_000_000_123),
        "2025-12-06T05:46:40.123Z"
    );
}

/// The rules of [`LeaseTiming`]'s proof, for every lease length a task file may set.
#[test]
fn timing_hands_a_dead_owners_task_over_within_the_lease_and_keeps_one_writer() {
    let t = LeaseTiming::new(30);
    assert_eq!(t.lease_seconds, 30);
    assert_eq!(t.renew_every, Duration::from_secs(5));
    assert_eq!(t.renewal_gives_up_after, Duration::from_secs(10));
    assert_eq!(t.writes_within, Duration::from_secs(10));
    assert_eq!(t.expires_after, Duration::from_secs(15));
    assert_eq!(t.look_every, Duration::from_millis(2500));
    for seconds in [1, 2, 3, 5, 7, 10, 15, 30, 60, 61, 120, 3600] {
        let t = LeaseTiming::new(seconds);
        let l = Duration::from_secs(seconds);
        // 3. A dead owner's last renewal landed before it died; a watcher's first look
        // after it, the expiry, and the wait for the owner's fence fit in the lease, with
        // a twelfth of it left for the store's round trips.
        let takeover = t.look_every + t.expires_after + t.writes_within;
        assert!(takeover + l / 12 <= l, "{seconds} s: {takeover:?}");
        // 2. A watcher expires a record only after an unfenced owner's next renewal would
        // have landed, with a margin for the looks' latency.
        assert!(t.expires_after >= t.writes_within + l / 6, "{seconds} s");
        // A healthy owner renews well before it fences itself (room for a retry).
        assert!(t.writes_within >= t.renew_every * 2, "{seconds} s");
        assert!(
            t.renew_every + t.renew_every / 4 < t.writes_within,
            "{seconds} s"
        );
        // A renewal given up is one the owner was already fenced for.
        assert!(
            t.renew_every + t.renewal_gives_up_after >= t.writes_within,
            "{seconds} s"
        );
        // The watcher looks often enough to see every renewal.
        assert!(t.look_every < t.renew_every, "{seconds} s");
    }
}

/// A record carries its owner's lease_seconds; a record of an inlet from before it is
/// read with the former timing and the watcher's own lease_seconds.
#[test]
fn a_watcher_times_a_record_by_its_owners_lease_seconds() {
    let mine = LeaseTiming::new(15);
    let record = LeaseRecord::of(&daemon("a"), LeaseTiming::new(60), 4, false);
    let back: LeaseRecord = serde_json::from_slice(&record.encode()).unwrap();
    assert_eq!(back.lease_seconds, Some(60));
    assert_eq!(
        LeaseTiming::of_owner(Some(&back), mine),
        LeaseTiming::new(60)
    );
    let old = br#"{"host":"h","pid":7,"pid_namespace":"pid:[1]","renewals":2,"released":false}"#;
    let old: LeaseRecord = serde_json::from_slice(old).unwrap();
    let former = LeaseTiming::of_owner(Some(&old), mine);
    assert_eq!(former.lease_seconds, 15);
    assert_eq!(former.renew_every, Duration::from_secs(5));
    assert_eq!(former.writes_within, Duration::from_secs(10));
    assert_eq!(former.expires_after, Duration::from_secs(15));
    assert_eq!(LeaseTiming::of_owner(None, mine), former);
}

/// Two daemons with different service.lease_seconds: the watcher with the shorter lease
/// leaves a live owner with the longer one alone, and once it expired waits as long as
/// that owner may write; a watcher with the longer lease takes a short-lease owner's
/// task by the owner's short timing.
#[tokio::test]
async fn a_watcher_with_another_lease_goes_by_the_owners() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLease::default());
    let long = LeaseTiming::new(3);
    let short = LeaseTiming::new(1);
    let mut a = LeaseWatch::new("t", store.clone(), long, daemon("a"));
    let mut b = LeaseWatch::new("t", store.clone(), short, daemon("b"));
    let _first = a.take(1).await.unwrap().unwrap();
    assert!(matches!(
        b.look().await.unwrap(),
        Seen::Owned { epoch: 1, .. }
    ));
    // Past b's own expiry (0.5 s), within a's (1.5 s): a may still be renewing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = b.look().await.unwrap();
    assert!(matches!(seen, Seen::Owned { epoch: 1, .. }), "{seen:?}");
    // b looks again when a's record would expire, not later.
    assert!(
        b.next_look_in() <= Duration::from_millis(700),
        "{:?}",
        b.next_look_in()
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = b.look().await.unwrap();
    assert!(matches!(seen, Seen::Free { next_epoch: 2 }), "{seen:?}");
    let second = b.take(2).await.unwrap().unwrap();
    assert_eq!(
        second.former_owner(),
        Some(("a/7", long.writes_within)),
        "the taker waits as long as the former owner may write, by the owner's lease"
    );
    // The other way round: a (3 s) watches b (1 s), and takes b's expired lease after
    // b's 0.5 s, waiting b's third of a second.
    assert!(matches!(
        a.look().await.unwrap(),
        Seen::Owned { epoch: 2, .. }
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let seen = a.look().await.unwrap();
    assert!(matches!(seen, Seen::Free { next_epoch: 3 }), "{seen:?}");
    let third = a.take(3).await.unwrap().unwrap();
    assert_eq!(third.former_owner(), Some(("b/7", short.writes_within)));
}

/// Lease objects whose first rewrite lands but answers an error (a connection cut after
/// the store applied it), remembering every record written.
#[derive(Default)]
struct FirstRewriteFails {
    objects: MemoryLease,
    written: Mutex<Vec<Vec<u8>>>,
}

#[async_trait::async_trait]
impl LeaseStore for FirstRewriteFails {
    fn location(&self) -> String {
        "memory".into()
    }
    async fn epochs(&self) -> Result<Vec<u64>, inlet_core::sink::TargetError> {
        self.objects.epochs().await
    }
    async fn read(&self, epoch: u64) -> Result<Option<Vec<u8>>, inlet_core::sink::TargetError> {
        self.objects.read(epoch).await
    }
    async fn create(
        &self,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<bool, inlet_core::sink::TargetError> {
        self.written.lock().unwrap().push(record.clone());
        self.objects.create(epoch, record).await
    }
    async fn rewrite(
        &self,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<(), inlet_core::sink::TargetError> {
        let first = {
            let mut written = self.written.lock().unwrap();
            written.push(record.clone());
            written.len() == 2
        };
        self.objects.rewrite(epoch, record).await?;
        if first {
            return Err(inlet_core::sink::TargetError::new(
                true,
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset after the write",
                ),
            ));
        }
        Ok(())
    }
    async fn remove(&self, epoch: u64) -> Result<(), inlet_core::sink::TargetError> {
        self.objects.remove(epoch).await
    }
}

/// One failed renewal neither fences the owner (it is retried well before the fence) nor
/// writes the same record as its retry (a watcher would keep timing the record from the
/// failed attempt's landing).
#[tokio::test]
async fn a_failed_renewal_is_retried_in_time_with_a_record_of_its_own() {
    let store = Arc::new(FirstRewriteFails::default());
    let timing = LeaseTiming::new(3);
    let mut a = LeaseWatch::new("t", store.clone(), timing, daemon("a"));
    let fence = a.take(1).await.unwrap().unwrap();
    // Renewals at 0.5 s (fails), about 0.63 s (retry), 1.13 s, 1.63 s; fenced at 1 s
    // without the retry.
    tokio::select! {
        lost = fence.keep() => panic!("lost the lease: {}", lost.message),
        _ = tokio::time::sleep(Duration::from_millis(1400)) => {}
    }
    assert!(fence.lost().is_none());
    let written = store.written.lock().unwrap().clone();
    assert!(written.len() >= 3, "{} records written", written.len());
    for (i, record) in written.iter().enumerate() {
        assert!(
            !written[..i].contains(record),
            "record {i} repeats an earlier one: {}",
            String::from_utf8_lossy(record)
        );
    }
}

#[test]
fn a_record_of_a_gone_process_on_this_host_is_not_waited_for() {
    let me = DaemonId::this_process();
    assert!(me.pid_namespace.starts_with("pid:["), "{me:?}");
    let on_this_host = |pid: u32| DaemonId { pid, ..me.clone() };
    assert!(LeaseRecord::of(&me, LeaseTiming::new(3), 3, false).owner_is_gone(&me));
    // pid 1 exists in every pid namespace.
    assert!(!LeaseRecord::of(&on_this_host(1), LeaseTiming::new(3), 3, false).owner_is_gone(&me));
    assert!(
        LeaseRecord::of(&on_this_host(u32::MAX - 1), LeaseTiming::new(3), 3, false)
            .owner_is_gone(&me)
    );
    // Another host, or another container with this hostname: its pid means nothing here.
    let elsewhere = DaemonId {
        host: "another-host".into(),
        ..on_this_host(u32::MAX - 1)
    };
    assert!(!LeaseRecord::of(&elsewhere, LeaseTiming::new(3), 3, false).owner_is_gone(&me));
    let other_namespace = DaemonId {
        pid_namespace: "pid:[1]".into(),
        ..on_this_host(me.pid)
    };
    assert!(!LeaseRecord::of(&other_namespace, LeaseTiming::new(3), 3, false).owner_is_gone(&me));
    // Another machine given this hostname, in its initial pid namespace (whose link reads
    // the same on every machine): another kernel, so its pid means nothing here either.
    let same_name_other_machine = DaemonId {
        boot_id: "00000000-0000-0000-0000-000000000000".into(),
        ..on_this_host(u32::MAX - 1)
    };
    assert!(
        !LeaseRecord::of(&same_name_other_machine, LeaseTiming::new(3), 3, false)
            .owner_is_gone(&me)
    );
    // A record of an earlier version, without the namespace, is waited for.
    let mut old = LeaseRecord::of(&on_this_host(u32::MAX - 1), LeaseTiming::new(3), 3, false);
    old.pid_namespace.clear();
    assert!(!old.owner_is_gone(&me));
}

/// A write refused by the lease's timing (the renewal loop starved of CPU, the writer woken
/// first) leaves the ownership lost, even when a renewal sent before lands afterwards: the
/// task is then stopped and shown `standby`, and taken again through the lease, instead of
/// failing for good on the refused write while its lease renews on (the fleet test under CPU
/// load saw a task `failed` in its former owner while another daemon ran it; a single daemon
/// would have kept the task failed).
#[tokio::test]
async fn a_write_refused_by_the_lease_timing_keeps_the_ownership_lost() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLease::default());
    let timing = LeaseTiming::new(3);
    let mut watch = LeaseWatch::new("t", store, timing, daemon("a"));
    let fence = watch.take(1).await.unwrap().unwrap();
    assert!(fence.check_now().is_ok());
    tokio::time::sleep(timing.writes_within + Duration::from_millis(100)).await;
    let Err(refused) = fence.check_now() else {
        panic!("a write after the fence's time passed");
    };
    assert!(
        refused.message().contains("last renewed its lease"),
        "{}",
        refused.message()
    );
    // A renewal sent before lands now, as the renewal loop records one.
    fence.held().renewed = Instant::now();
    assert!(
        fence.lost().is_some(),
        "the ownership came back after a refused write"
    );
    assert!(fence.check_now().is_err());
}

/// A store whose rewrites take `delay` (a renewal's round trip).
struct SlowRewrites(MemoryLease, Duration);

#[async_trait::async_trait]
impl LeaseStore for SlowRewrites {
    fn location(&self) -> String {
        self.0.location()
    }
    async fn epochs(&self) -> Result<Vec<u64>, inlet_core::sink::TargetError> {
        self.0.epochs().await
    }
    async fn read(&self, epoch: u64) -> Result<Option<Vec<u8>>, inlet_core::sink::TargetError> {
        self.0.read(epoch).await
    }
    async fn create(
        &self,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<bool, inlet_core::sink::TargetError> {
        self.0.create(epoch, record).await
    }
    async fn rewrite(
        &self,
        epoch: u64,
        record: Vec<u8>,
    ) -> Result<(), inlet_core::sink::TargetError> {
        tokio::time::sleep(self.1).await;
        self.0.rewrite(epoch, record).await
    }
    async fn remove(&self, epoch: u64) -> Result<(), inlet_core::sink::TargetError> {
        self.0.remove(epoch).await
    }
}

/// The renewals keep their pace when one `keep` ends and the next begins, as when a new owner
/// renews while it waits out the former owner and then starts the task: the task's first
/// renewal comes a sixth of the lease after the wait's last one. It came a full sixth after the
/// task's start, so a wait ending just before a renewal left the fence to run out first: the new
/// owner lost the lease half a second into the task it had just started, and took it back
/// (seen in every paused-owner run of `service::a_paused_owners_initial_load_…`: "last renewed
/// its lease (epoch 2) 1.0 s ago", then epoch 3).
#[tokio::test]
async fn renewals_keep_their_pace_from_one_keep_to_the_next() {
    let store: Arc<dyn LeaseStore> = Arc::new(SlowRewrites(
        MemoryLease::default(),
        Duration::from_millis(200),
    ));
    let timing = LeaseTiming::new(3);
    let mut watch = LeaseWatch::new("t", store, timing, daemon("a"));
    let fence = watch.take(1).await.unwrap().unwrap();
    // The wait: a renewal sent at 0.5 s lands at 0.7 s, the next would be sent at 1.2 s.
    let waited = tokio::time::timeout(Duration::from_millis(1100), fence.keep()).await;
    assert!(
        waited.is_err(),
        "lost while waiting: {:?}",
        waited.map(|l| l.message)
    );
    // The task's: without the pace, its first renewal is sent at 1.6 s, 1.1 s after the last.
    let kept = tokio::time::timeout(Duration::from_millis(1500), fence.keep()).await;
    assert!(
        kept.is_err(),
        "lost while the task ran: {:?}",
        kept.map(|l| l.message)
    );
    assert!(fence.check_now().is_ok());
}
