//! Counts of the cryptographic operations the process has done, for the load generator's
//! crypto floor (`offst-bench`): what sign, verify, hash and envelope encryption cost per
//! payment. Relaxed atomic increments: about a nanosecond each, always on.

use std::sync::atomic::{AtomicU64, Ordering};

static SIGNS: AtomicU64 = AtomicU64::new(0);
static VERIFIES: AtomicU64 = AtomicU64::new(0);
static HASHES: AtomicU64 = AtomicU64::new(0);
static SEALS: AtomicU64 = AtomicU64::new(0);
static OPENS: AtomicU64 = AtomicU64::new(0);
static AGREEMENTS: AtomicU64 = AtomicU64::new(0);
static BATCHES: AtomicU64 = AtomicU64::new(0);
static BATCHED: AtomicU64 = AtomicU64::new(0);
static SIGNED_BYTES: AtomicU64 = AtomicU64::new(0);
static VERIFIED_BYTES: AtomicU64 = AtomicU64::new(0);
static BATCHED_BYTES: AtomicU64 = AtomicU64::new(0);
static HASHED_BYTES: AtomicU64 = AtomicU64::new(0);
static SEALED_BYTES: AtomicU64 = AtomicU64::new(0);
static OPENED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Operations done so far by this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CryptoCounts {
    /// Ed25519 signatures made.
    pub signs: u64,
    /// Ed25519 signatures checked.
    pub verifies: u64,
    /// BLAKE3 hashes of protocol values.
    pub hashes: u64,
    /// Envelopes sealed (XChaCha20-Poly1305 under a key agreed earlier or now; the agreement
    /// is counted in `agreements`, the signature inside in `signs`).
    pub seals: u64,
    /// Envelopes opened (likewise; the signature check is in `verifies`).
    pub opens: u64,
    /// X25519 key agreements: a sender's new ephemeral key for a recipient, or a recipient's
    /// first envelope under an ephemeral key.
    pub agreements: u64,
    /// Batches of signatures checked together (`SignatureBatch`).
    pub batches: u64,
    /// Signatures checked in those batches (not counted in `verifies`).
    pub batched: u64,
    /// Bytes signed (each message as it is hashed by Ed25519: domain and encoding).
    pub signed_bytes: u64,
    /// Bytes of the messages checked one by one.
    pub verified_bytes: u64,
    /// Bytes of the messages checked in batches.
    pub batched_bytes: u64,
    /// Bytes hashed with BLAKE3 (protocol values, channel states, envelope bodies and the
    /// batches' transcripts).
    pub hashed_bytes: u64,
    /// Plaintext bytes encrypted, padding included.
    pub sealed_bytes: u64,
    /// Ciphertext bytes decrypted.
    pub opened_bytes: u64,
}

impl CryptoCounts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &CryptoCounts) -> CryptoCounts {
        CryptoCounts {
            signs: self.signs.saturating_sub(earlier.signs),
            verifies: self.verifies.saturating_sub(earlier.verifies),
            hashes: self.hashes.saturating_sub(earlier.hashes),
            seals: self.seals.saturating_sub(earlier.seals),
            opens: self.opens.saturating_sub(earlier.opens),
            agreements: self.agreements.saturating_sub(earlier.agreements),
            batches: self.batches.saturating_sub(earlier.batches),
            batched: self.batched.saturating_sub(earlier.batched),
            signed_bytes: self.signed_bytes.saturating_sub(earlier.signed_bytes),
            verified_bytes: self.verified_bytes.saturating_sub(earlier.verified_bytes),
            batched_bytes: self.batched_bytes.saturating_sub(earlier.batched_bytes),
            hashed_bytes: self.hashed_bytes.saturating_sub(earlier.hashed_bytes),
            sealed_bytes: self.sealed_bytes.saturating_sub(earlier.sealed_bytes),
            opened_bytes: self.opened_bytes.saturating_sub(earlier.opened_bytes),
        }
    }
}

/// The counts now.
pub fn crypto_counts() -> CryptoCounts {
    CryptoCounts {
        signs: SIGNS.load(Ordering::Relaxed),
        verifies: VERIFIES.load(Ordering::Relaxed),
        hashes: HASHES.load(Ordering::Relaxed),
        seals: SEALS.load(Ordering::Relaxed),
        opens: OPENS.load(Ordering::Relaxed),
        agreements: AGREEMENTS.load(Ordering::Relaxed),
        batches: BATCHES.load(Ordering::Relaxed),
        batched: BATCHED.load(Ordering::Relaxed),
        signed_bytes: SIGNED_BYTES.load(Ordering::Relaxed),
        verified_bytes: VERIFIED_BYTES.load(Ordering::Relaxed),
        batched_bytes: BATCHED_BYTES.load(Ordering::Relaxed),
        hashed_bytes: HASHED_BYTES.load(Ordering::Relaxed),
        sealed_bytes: SEALED_BYTES.load(Ordering::Relaxed),
        opened_bytes: OPENED_BYTES.load(Ordering::Relaxed),
    }
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
pub(crate) fn signed(bytes: usize) {
    SIGNS.fetch_add(1, Ordering::Relaxed);
    SIGNED_BYTES.fetch_add(count(bytes), Ordering::Relaxed);
}
pub(crate) fn verified(bytes: usize) {
    VERIFIES.fetch_add(1, Ordering::Relaxed);
    VERIFIED_BYTES.fetch_add(count(bytes), Ordering::Relaxed);
}
pub(crate) fn batch_verified(signatures: usize, bytes: usize) {
    BATCHES.fetch_add(1, Ordering::Relaxed);
    BATCHED.fetch_add(count(signatures), Ordering::Relaxed);
    BATCHED_BYTES.fetch_add(count(bytes), Ordering::Relaxed);
}
pub(crate) fn hashed(bytes: usize) {
    HASHES.fetch_add(1, Ordering::Relaxed);
    HASHED_BYTES.fetch_add(count(bytes), Ordering::Relaxed);
}
pub(crate) fn sealed(bytes: usize) {
    SEALS.fetch_add(1, Ordering::Relaxed);
    SEALED_BYTES.fetch_add(count(bytes), Ordering::Relaxed);
}
pub(crate) fn opened(bytes: usize) {
    OPENS.fetch_add(1, Ordering::Relaxed);
    OPENED_BYTES.fetch_add(count(bytes), Ordering::Relaxed);
}
pub(crate) fn agreed() {
    AGREEMENTS.fetch_add(1, Ordering::Relaxed);
}

/// Where an envelope is on its way, for the load generator's timeline (`offst-bench
/// --timeline`): each stage is marked with the time it was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// The sender's driver sealed it (after the step that wrote it committed).
    Sealed = 0,
    /// A relay read it from a connection (a wallet's or another relay's).
    RelayIn = 1,
    /// That relay's store committed it, or (mail the relay held for a connected recipient)
    /// the recipient acknowledged it. A connected recipient may have had it before this (the
    /// relay hands mail out before its commit), so this stage can come after `Delivered`, and
    /// after `Handled`.
    Stored = 2,
    /// The relay's forwarder took it from its store to send to the next relay.
    Forwarding = 3,
    /// The recipient's relay handed it to the recipient's connection.
    Delivered = 4,
    /// The recipient's driver took it into a batch.
    Received = 5,
    /// The recipient's step over that batch committed.
    Handled = 6,
}

impl Stage {
    /// Every stage, in the order of the discriminants.
    pub const ALL: [Stage; 7] = [
        Stage::Sealed,
        Stage::RelayIn,
        Stage::Stored,
        Stage::Forwarding,
        Stage::Delivered,
        Stage::Received,
        Stage::Handled,
    ];
}

/// Marks per envelope key: (stage, microseconds since the timeline was switched on).
pub type Timeline = std::collections::HashMap<u64, Vec<(Stage, u64)>>;

static TIMELINE_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static TIMELINE: std::sync::Mutex<Option<(std::time::Instant, Timeline)>> =
    std::sync::Mutex::new(None);

/// Start recording the timeline (off by default: then a mark is one relaxed load).
pub fn timeline_start() {
    if let Ok(mut t) = TIMELINE.lock() {
        *t = Some((std::time::Instant::now(), Timeline::new()));
    }
    TIMELINE_ON.store(true, Ordering::Relaxed);
}

/// Stop recording and take what was recorded.
pub fn timeline_take() -> Timeline {
    TIMELINE_ON.store(false, Ordering::Relaxed);
    TIMELINE
        .lock()
        .ok()
        .and_then(|mut t| t.take())
        .map(|(_, m)| m)
        .unwrap_or_default()
}

/// An envelope's key in the timeline, if the timeline is on.
pub fn timeline_key(envelope: &[u8]) -> Option<u64> {
    if !TIMELINE_ON.load(Ordering::Relaxed) {
        return None;
    }
    let h = blake3::hash(envelope);
    let mut k = [0u8; 8];
    k.copy_from_slice(&h.as_bytes()[..8]);
    Some(u64::from_le_bytes(k))
}

/// Mark the envelope of `key` (from [`timeline_key`]) as having reached `stage`.
pub fn timeline_mark_key(stage: Stage, key: Option<u64>) {
    let Some(key) = key else { return };
    if let Ok(mut t) = TIMELINE.lock()
        && let Some((start, marks)) = t.as_mut()
    {
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        marks.entry(key).or_default().push((stage, us));
    }
}

/// Mark `envelope` as having reached `stage` (nothing if the timeline is off).
pub fn timeline_mark(stage: Stage, envelope: &[u8]) {
    timeline_mark_key(stage, timeline_key(envelope));
}

/// Turn a profile on, starting from `empty`.
fn profile_start<T>(
    on: &std::sync::atomic::AtomicBool,
    store: &std::sync::Mutex<Option<T>>,
    empty: T,
) {
    if let Ok(mut p) = store.lock() {
        *p = Some(empty);
    }
    on.store(true, Ordering::Relaxed);
}

/// Turn a profile off and take what it recorded.
fn profile_take<T: Default>(
    on: &std::sync::atomic::AtomicBool,
    store: &std::sync::Mutex<Option<T>>,
) -> T {
    on.store(false, Ordering::Relaxed);
    store
        .lock()
        .ok()
        .and_then(|mut p| p.take())
        .unwrap_or_default()
}

/// Time spent in SQLite by statement, for `offst-bench --sql-profile`: for each statement's
/// text (whitespace folded, cut at 100 characters), how many times it ran and the
/// nanoseconds it took in all. SQLite measures wall time, so a `COMMIT`'s includes its wait
/// for the disk, and any statement's includes waiting for a core.
pub type SqlProfile = std::collections::HashMap<String, (u64, u64)>;

static SQL_PROFILE_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static SQL_PROFILE: std::sync::Mutex<Option<SqlProfile>> = std::sync::Mutex::new(None);

/// Profile the statements of every SQLite connection opened from now on (a wallet's or a
/// relay's; off by default, and then nothing is installed on them), starting empty.
pub fn sql_profile_start() {
    profile_start(&SQL_PROFILE_ON, &SQL_PROFILE, SqlProfile::new());
}

/// Whether connections opened now should be profiled.
pub fn sql_profile_on() -> bool {
    SQL_PROFILE_ON.load(Ordering::Relaxed)
}

/// Forget what was recorded so far and go on recording (to leave out the set-up).
pub fn sql_profile_reset() {
    if let Ok(mut p) = SQL_PROFILE.lock()
        && let Some(p) = p.as_mut()
    {
        p.clear();
    }
}

/// Stop recording and take what was recorded.
pub fn sql_profile_take() -> SqlProfile {
    profile_take(&SQL_PROFILE_ON, &SQL_PROFILE)
}

/// Record one run of the statement `sql` that took `ns` nanoseconds.
pub fn sql_profile_record(sql: &str, ns: u64) {
    if !sql_profile_on() {
        return;
    }
    let key: String = sql
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(100)
        .collect();
    if let Ok(mut p) = SQL_PROFILE.lock()
        && let Some(p) = p.as_mut()
    {
        let e = p.entry(key).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(ns);
    }
}

/// How long each shared value (a wallet, [`crate::sync::Shared`]) was held, for
/// `offst-bench --lock-profile`: by the value's address, the times it was locked and the
/// nanoseconds it stayed locked in all (wall time, from taking the lock to releasing it).
pub type LockProfile = std::collections::HashMap<usize, LockUse>;

/// One shared value's use in a [`LockProfile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockUse {
    /// Times it was locked.
    pub holds: u64,
    /// Nanoseconds it was held, all holds together.
    pub held_ns: u64,
}

static LOCK_PROFILE_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static LOCK_PROFILE: std::sync::Mutex<Option<LockProfile>> = std::sync::Mutex::new(None);

/// Record how long each shared value is held from now on, starting empty (off by default:
/// then a lock costs one more relaxed load).
pub fn lock_profile_start() {
    profile_start(&LOCK_PROFILE_ON, &LOCK_PROFILE, LockProfile::new());
}

/// Whether holds are being recorded.
pub(crate) fn lock_profile_on() -> bool {
    LOCK_PROFILE_ON.load(Ordering::Relaxed)
}

/// Record one hold of the value at `addr`.
pub(crate) fn lock_held(addr: usize, since: std::time::Instant) {
    let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if let Ok(mut p) = LOCK_PROFILE.lock()
        && let Some(p) = p.as_mut()
    {
        let u = p.entry(addr).or_default();
        u.holds = u.holds.saturating_add(1);
        u.held_ns = u.held_ns.saturating_add(ns);
    }
}

/// Stop recording and take what was recorded.
pub fn lock_profile_take() -> LockProfile {
    profile_take(&LOCK_PROFILE_ON, &LOCK_PROFILE)
}
