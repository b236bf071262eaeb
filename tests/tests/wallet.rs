//! The durable wallet: steps survive reopening, events and history, the directory lock, keys
//! at rest, migrations, and every fault the issue names (a damaged file, a newer schema, a full
//! disk, truncated and foreign backups), each a typed error that leaves the wallet intact.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};

use offst_core::protocol::node::Parts;
use offst_core::wallet::{
    BackupError, EventKind, HistoryQuery, KdfCost, PassphraseKeys, Wallet, WalletError,
    WalletOptions,
};
use offst_tests::{MEDIATOR_RATE, befriend, hours, open_or_create, plan, pump, test_keys};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("offst-wallet-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, sub: &str) -> PathBuf {
        self.0.join(sub)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Three wallets in a chain a - b - c (b mediates), limit 100 both ways.
fn trio(t: &TempDir) -> Vec<Wallet> {
    let mut ws: Vec<Wallet> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, d)| open_or_create(&t.path(d), i as u8 + 1, WalletOptions::default()).unwrap())
        .collect();
    ws[1].set_rate(MEDIATOR_RATE).unwrap();
    befriend(&mut ws, 0, 1, 100).unwrap();
    befriend(&mut ws, 1, 2, 100).unwrap();
    pump(&mut ws, 10_000).unwrap();
    ws
}

fn reopen(t: &TempDir, ws: Vec<Wallet>) -> Vec<Wallet> {
    drop(ws);
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, d)| open_or_create(&t.path(d), i as u8 + 1, WalletOptions::default()).unwrap())
        .collect()
}

/// `a` pays `c` `amount` through `b`; returns the invoice id.
fn pay(ws: &mut [Wallet], amount: u64) -> offst_core::protocol::payment::InvoiceId {
    let inv = ws[2]
        .create_invoice(hours(), amount, 60_000, "bread")
        .unwrap();
    let route = plan(ws, &[0, 1, 2], amount);
    ws[0].pay(&inv, vec![route]).unwrap();
    pump(ws, 10_000).unwrap();
    inv.terms.id
}

/// A relay address for wallets that never connect (the port tells them apart).
fn test_relay(port: u16) -> offst_core::net::wire::RelayAddress {
    format!("{}@127.0.0.1:{port}", offst_tests::identity(9).id())
        .parse()
        .unwrap()
}

fn balance(w: &Wallet, friend: &Wallet) -> i128 {
    w.node().balance(&friend.id(), &hours()).unwrap().0
}

#[test]
fn payments_survive_reopening_and_show_in_history() {
    let t = TempDir::new("reopen");
    let mut ws = trio(&t);
    let inv = pay(&mut ws, 10);
    let fee = MEDIATOR_RATE.fee(10).unwrap() as i128;
    assert_eq!(balance(&ws[2], &ws[1]), 10);
    assert_eq!(balance(&ws[0], &ws[1]), -(10 + fee));
    let before: Vec<_> = ws.iter().map(|w| w.node().parts()).collect();
    let mut ws = reopen(&t, ws);
    let after: Vec<_> = ws.iter().map(|w| w.node().parts()).collect();
    assert_eq!(before, after, "state after reopening equals state before");

    let view = ws[0].payment_view(inv).unwrap();
    assert_eq!(view.status, "completed");
    assert!(view.receipt.is_some());
    let kinds: Vec<EventKind> = view.history.iter().map(|h| h.kind).collect();
    assert_eq!(
        kinds,
        vec![EventKind::PaymentStarted, EventKind::PaymentCompleted]
    );
    let seller = ws[2].payment_view(inv).unwrap();
    assert_eq!(seller.status, "paid");
    let friend = ws[2].friend_view(ws[1].id(), 10).unwrap();
    assert_eq!(friend.lines[0].balance, 10);
    assert!(
        friend
            .history
            .iter()
            .any(|h| h.kind == EventKind::FriendAdded)
    );
}

/// A trio in which a paid c three times (1, 2 and 3 hours): events and history to read.
fn trio_after_three_payments(t: &TempDir) -> Vec<Wallet> {
    let mut ws = trio(t);
    for amount in 1..=3 {
        pay(&mut ws, amount);
    }
    ws
}

/// Every history row of `w`, newest first.
fn all_history(w: &Wallet) -> Vec<offst_core::wallet::HistoryEntry> {
    w.history(&HistoryQuery {
        limit: 1000,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn event_queue_gives_every_event_once_in_order_until_handled() {
    let t = TempDir::new("events");
    let mut ws = trio(&t);
    pay(&mut ws, 5);
    let all = all_history(&ws[0]);
    let mut seen = Vec::new();
    // Not handling an event gives it again, even after reopening.
    let first = ws[0].next_event().unwrap().unwrap();
    let ws2 = reopen(&t, ws);
    let mut ws = ws2;
    assert_eq!(ws[0].next_event().unwrap().unwrap(), first);
    while let Some(e) = ws[0].next_event().unwrap() {
        seen.push(e.seq);
        ws[0].event_handled(e.seq).unwrap();
        ws[0].event_handled(e.seq).unwrap(); // idempotent
    }
    let mut expected: Vec<u64> = all.iter().map(|h| h.seq).collect();
    expected.reverse();
    assert_eq!(seen, expected);
    assert_eq!(ws[0].pending_events().unwrap(), 0);
    assert_eq!(ws[0].history_len().unwrap() as usize, all.len());
}

/// Handling an event handles every event before it too (apps handle them oldest first), and
/// a `seq` past the newest event handles only the events there are: the next one still comes.
#[test]
fn handling_an_event_handles_those_before_it_and_never_those_to_come() {
    let t = TempDir::new("events-cursor");
    let mut ws = trio_after_three_payments(&t);
    let n = ws[0].pending_events().unwrap();
    assert!(n >= 6, "{n} events for three payments");
    let all = all_history(&ws[0]);
    // Newest first: the third newest handled, the two after it are left.
    ws[0].event_handled(all[2].seq).unwrap();
    assert_eq!(ws[0].pending_events().unwrap(), 2);
    assert_eq!(ws[0].next_event().unwrap().unwrap().seq, all[1].seq);
    // An older one again changes nothing.
    ws[0].event_handled(all[5].seq).unwrap();
    assert_eq!(ws[0].next_event().unwrap().unwrap().seq, all[1].seq);
    // Past the newest: the events there are, not the next one.
    ws[0].event_handled(u64::MAX).unwrap();
    assert_eq!(ws[0].pending_events().unwrap(), 0);
    assert_eq!(ws[0].next_event().unwrap(), None);
    pay(&mut ws, 1);
    let next = ws[0]
        .next_event()
        .unwrap()
        .expect("the next payment's events");
    assert!(next.seq > all[0].seq);
    let newer = all_history(&ws[0])
        .iter()
        .filter(|h| h.seq > all[0].seq)
        .count();
    assert!(newer >= 2, "{newer} events for a payment");
    assert_eq!(ws[0].pending_events().unwrap() as usize, newer);
}

/// Since schema 12 the app's events are the history rows after the last one handled. A
/// wallet whose queue still held events migrates with them, in order, and without those
/// handled before.
#[test]
fn events_not_handled_survive_the_migration_to_a_cursor() {
    let t = TempDir::new("events-migration");
    let mut ws = trio_after_three_payments(&t);
    let all = all_history(&ws[0]);
    let handled = 3;
    for _ in 0..handled {
        let e = ws[0].next_event().unwrap().unwrap();
        ws[0].event_handled(e.seq).unwrap();
    }
    drop(ws);
    downgrade(&t.path("a").join("wallet.db"), 11);
    {
        let c = rusqlite::Connection::open(t.path("a").join("wallet.db")).unwrap();
        let queued: i64 = c
            .query_row("SELECT COUNT(*) FROM event_queue", [], |r| r.get(0))
            .unwrap();
        assert_eq!(queued as usize, all.len() - handled);
    }
    let mut ws = reopen(&t, Vec::new());
    let mut seen = Vec::new();
    while let Some(e) = ws[0].next_event().unwrap() {
        seen.push(e.seq);
        ws[0].event_handled(e.seq).unwrap();
    }
    let mut expected: Vec<u64> = all.iter().map(|h| h.seq).collect();
    expected.reverse();
    assert_eq!(seen, expected[handled..].to_vec());
    // A wallet that had handled everything migrates with nothing left.
    drop(ws);
    downgrade(&t.path("a").join("wallet.db"), 11);
    let ws = reopen(&t, Vec::new());
    assert_eq!(ws[0].pending_events().unwrap(), 0);
}

#[test]
fn history_pages_do_not_overlap_or_skip() {
    let t = TempDir::new("pages");
    let mut ws = trio(&t);
    for i in 0..6 {
        pay(&mut ws, 1 + i);
    }
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = ws[0]
            .history(&HistoryQuery {
                before,
                limit: 4,
                ..Default::default()
            })
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|h| h.seq);
        all.extend(page);
    }
    let seqs: Vec<u64> = all.iter().map(|h| h.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seqs, sorted);
    assert_eq!(seqs.len() as u64, ws[0].history_len().unwrap());
    let completed = all
        .iter()
        .filter(|h| h.kind == EventKind::PaymentCompleted)
        .count();
    assert_eq!(completed, 6);
}

#[test]
fn a_second_opener_gets_in_use() {
    let t = TempDir::new("lock");
    let ws = trio(&t);
    let err = Wallet::open(&t.path("a"), &test_keys(1), WalletOptions::default()).unwrap_err();
    assert!(matches!(err, WalletError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"));
    drop(ws);
    Wallet::open(&t.path("a"), &test_keys(1), WalletOptions::default()).unwrap();
}

fn file_bytes(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn a_wrong_key_is_refused_and_touches_nothing() {
    let t = TempDir::new("wrongkey");
    let dir = t.path("w");
    let keys = PassphraseKeys::with_cost("correct horse", KdfCost::TEST_ONLY);
    let w = Wallet::create(&dir, &keys, WalletOptions::default()).unwrap();
    let id = w.id();
    drop(w);
    let before = file_bytes(&dir);
    let wrong = PassphraseKeys::with_cost("battery staple", KdfCost::TEST_ONLY);
    let err = Wallet::open(&dir, &wrong, WalletOptions::default()).unwrap_err();
    assert!(matches!(err, WalletError::WrongKey), "{err}");
    assert!(err.to_string().contains("wrong key"));
    assert_eq!(file_bytes(&dir), before, "a wrong key changed the files");
    assert_eq!(
        Wallet::open(&dir, &keys, WalletOptions::default())
            .unwrap()
            .id(),
        id
    );
}

#[test]
fn the_identity_is_not_stored_in_the_clear() {
    let t = TempDir::new("atrest");
    let dir = t.path("w");
    let w = Wallet::create(&dir, &test_keys(7), WalletOptions::default()).unwrap();
    let seed = offst_tests::identity(1).seed(); // not this wallet's; just the shape
    assert_eq!(seed.len(), 32);
    drop(w);
    // Read the raw meta table: the sealed identity must not contain the 32-byte seed anywhere
    // in the file, which we can only check for a known identity.
    let dir2 = t.path("known");
    let w = Wallet::create_with_identity(
        &dir2,
        offst_tests::identity(42),
        &test_keys(7),
        WalletOptions::default(),
    )
    .unwrap();
    drop(w);
    let secret = offst_tests::identity(42).seed();
    for bytes in file_bytes(&dir2) {
        assert!(
            !bytes.windows(32).any(|win| win == secret),
            "the secret is on disk in the clear"
        );
    }
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let t = TempDir::new("newer");
    let ws = trio(&t);
    drop(ws);
    let db = t.path("a").join("wallet.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = file_bytes(&t.path("a"));
    let err = Wallet::open(&t.path("a"), &test_keys(1), WalletOptions::default()).unwrap_err();
    assert!(
        matches!(err, WalletError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("update the app"));
    assert_eq!(file_bytes(&t.path("a")), before);
}

#[test]
fn a_damaged_file_is_a_typed_error() {
    let t = TempDir::new("corrupt");
    let ws = trio(&t);
    drop(ws);
    // Overwrite the file header.
    let db = t.path("a").join("wallet.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[..100].fill(0x5a);
    std::fs::write(&db, &bytes).unwrap();
    let err = Wallet::open(&t.path("a"), &test_keys(1), WalletOptions::default()).unwrap_err();
    assert!(matches!(err, WalletError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("restore it from a backup"));

    // A damaged channel record.
    let db = t.path("b").join("wallet.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute("UPDATE channels SET data = x'01ffff'", [])
            .unwrap();
    }
    let err = Wallet::open(&t.path("b"), &test_keys(2), WalletOptions::default()).unwrap_err();
    assert!(matches!(err, WalletError::Corrupt { .. }), "{err}");
}

#[test]
fn a_full_disk_fails_the_step_and_loses_nothing() {
    let t = TempDir::new("full");
    let mut ws = trio(&t);
    drop(ws.remove(0));
    // Reopen a with its database capped at its current size plus a little.
    let size = std::fs::metadata(t.path("a").join("wallet.db"))
        .unwrap()
        .len();
    let capped = WalletOptions {
        max_size_bytes: Some(size + 16 * 1024),
        ..WalletOptions::default()
    };
    ws.insert(
        0,
        Wallet::open(&t.path("a"), &test_keys(1), capped).unwrap(),
    );
    let mut full = None;
    for i in 0..200 {
        let inv = ws[2]
            .create_invoice(hours(), 1, 60_000, &"x".repeat(200))
            .unwrap();
        let route = plan(&ws, &[0, 1, 2], 1);
        let before = ws[0].node().parts();
        match ws[0].pay(&inv, vec![route]) {
            Ok(()) => {}
            Err(e) => {
                assert!(matches!(e, WalletError::DiskFull), "{e}");
                assert!(e.to_string().contains("free some space"));
                assert_eq!(ws[0].node().parts(), before, "memory ran ahead of the disk");
                full = Some(i);
                break;
            }
        }
        match offst_tests::pump(&mut ws, 10_000) {
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e, WalletError::DiskFull), "{e}");
                full = Some(i);
                break;
            }
        }
    }
    assert!(full.is_some(), "the cap was never reached");
    // Reading still works while full.
    ws[0].history(&HistoryQuery::default()).unwrap();
    // With space again, everything settles and nothing was lost.
    let state = ws[0].node().parts();
    drop(ws.remove(0));
    ws.insert(
        0,
        Wallet::open(&t.path("a"), &test_keys(1), WalletOptions::default()).unwrap(),
    );
    assert_eq!(ws[0].node().parts(), state);
    pump(&mut ws, 100_000).unwrap();
    pay(&mut ws, 3);
    let a = balance(&ws[0], &ws[1]);
    let b = balance(&ws[1], &ws[0]);
    assert_eq!(a, -b);
    assert_eq!(
        ws[0].node().channel(&ws[1].id()).unwrap().state(),
        ws[1].node().channel(&ws[0].id()).unwrap().state()
    );
}

#[test]
fn an_old_backup_restores_and_resyncs_without_losing_anything() {
    let t = TempDir::new("restore");
    let mut ws = trio(&t);
    pay(&mut ws, 4);
    let backup_keys = PassphraseKeys::with_cost("backup phrase", KdfCost::TEST_ONLY);
    let file = t.path("b.offst-backup");
    let info = ws[1].backup(&file, &backup_keys).unwrap();
    assert_eq!(info.wallet, ws[1].id());
    // More payments after the backup.
    for i in 0..3 {
        pay(&mut ws, 2 + i);
    }
    let ab = balance(&ws[0], &ws[1]);
    let cb = balance(&ws[2], &ws[1]);
    // b's phone is lost; restore the old backup into a new directory, with a new device key.
    let b_id = ws[1].id();
    drop(ws.remove(1));
    let restored = Wallet::restore(
        &file,
        &t.path("b-new"),
        &backup_keys,
        &test_keys(99),
        Some(b_id),
        WalletOptions::default(),
    )
    .unwrap();
    assert_eq!(restored.id(), b_id);
    ws.insert(1, restored);
    pump(&mut ws, 100_000).unwrap();
    // b agrees with its friends on the latest signed states: the payments after the backup
    // are not lost.
    assert_eq!(balance(&ws[1], &ws[0]), -ab);
    assert_eq!(balance(&ws[1], &ws[2]), -cb);
    for (x, y) in [(0, 1), (1, 2)] {
        let cx = ws[x].node().channel(&ws[y].id()).unwrap();
        let cy = ws[y].node().channel(&ws[x].id()).unwrap();
        assert_eq!(cx.state(), cy.state());
        assert_eq!(cx.counter(), cy.counter());
    }
    assert!(
        ws[1]
            .history(&HistoryQuery::default())
            .unwrap()
            .iter()
            .any(|h| h.kind == EventKind::Restored)
    );
    // And payments go on.
    pay(&mut ws, 1);
    assert_eq!(balance(&ws[2], &ws[1]), cb + 1);
    // Reopening does not resync again.
    let ws = reopen_b(&t, ws);
    assert_eq!(ws[1].outbox_len().unwrap(), 0);
}

fn reopen_b(t: &TempDir, mut ws: Vec<Wallet>) -> Vec<Wallet> {
    drop(ws.remove(1));
    ws.insert(
        1,
        Wallet::open(&t.path("b-new"), &test_keys(99), WalletOptions::default()).unwrap(),
    );
    ws
}

#[test]
fn bad_backups_are_refused_and_write_nothing() {
    let t = TempDir::new("badbackup");
    let mut ws = trio(&t);
    let keys = PassphraseKeys::with_cost("phrase", KdfCost::TEST_ONLY);
    let file = t.path("a.offst-backup");
    ws[0].backup(&file, &keys).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let restore = |f: &Path, dir: &str, k: &PassphraseKeys, expect| {
        Wallet::restore(
            f,
            &t.path(dir),
            k,
            &test_keys(5),
            expect,
            WalletOptions::default(),
        )
    };
    // Truncated.
    let cut = t.path("cut");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = restore(&cut, "r1", &keys, None).unwrap_err();
    assert!(
        matches!(err, WalletError::Backup(BackupError::Truncated { .. })),
        "{err}"
    );
    assert!(!t.path("r1").join("wallet.db").exists());
    let cut = t.path("cut2");
    std::fs::write(&cut, &bytes[..20]).unwrap();
    let err = restore(&cut, "r1", &keys, None).unwrap_err();
    assert!(
        matches!(err, WalletError::Backup(BackupError::Truncated { .. })),
        "{err}"
    );
    // Another wallet's.
    let err = restore(&file, "r2", &keys, Some(ws[1].id())).unwrap_err();
    assert!(
        matches!(
            err,
            WalletError::Backup(BackupError::ForAnotherWallet { .. })
        ),
        "{err}"
    );
    assert!(!t.path("r2").join("wallet.db").exists());
    // Wrong key.
    let wrong = PassphraseKeys::with_cost("other", KdfCost::TEST_ONLY);
    let err = restore(&file, "r3", &wrong, None).unwrap_err();
    assert!(
        matches!(err, WalletError::Backup(BackupError::WrongKey)),
        "{err}"
    );
    // Damaged in the middle.
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 1;
    let dfile = t.path("damaged");
    std::fs::write(&dfile, &damaged).unwrap();
    let err = restore(&dfile, "r4", &keys, None).unwrap_err();
    assert!(
        matches!(err, WalletError::Backup(BackupError::Damaged)),
        "{err}"
    );
    // Not a backup.
    let err = restore(&t.path("a").join("wallet.db"), "r5", &keys, None).unwrap_err();
    assert!(
        matches!(err, WalletError::Backup(BackupError::NotABackup)),
        "{err}"
    );
    // Over an existing wallet.
    let err = restore(&file, "b", &keys, None).unwrap_err();
    assert!(
        matches!(
            err,
            WalletError::Backup(BackupError::DirectoryNotEmpty { .. })
        ),
        "{err}"
    );
    // The good one still restores.
    assert_eq!(
        restore(&file, "r6", &keys, Some(ws[0].id())).unwrap().id(),
        ws[0].id()
    );
}

/// `fixtures/wallet-v1.db` is wallet c of a chain a - b - c, written with schema version 1,
/// after a paid c 7 and then 5 hours through b.
#[test]
fn a_database_from_the_first_schema_opens_and_migrates() {
    let t = TempDir::new("v1");
    let dir = t.path("c");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/wallet-v1.db");
    std::fs::copy(fixture, dir.join("wallet.db")).unwrap();
    {
        let c = rusqlite::Connection::open(dir.join("wallet.db")).unwrap();
        let v: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
    }
    let mut w = Wallet::open(&dir, &test_keys(3), WalletOptions::default()).unwrap();
    assert_eq!(w.id(), offst_tests::identity(3).id());
    let b = offst_tests::identity(2).id();
    assert_eq!(w.node().balance(&b, &hours()).unwrap().0, 12);
    let rows = w
        .history(&HistoryQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        rows.iter()
            .filter(|h| h.kind == EventKind::InvoicePaid)
            .count(),
        2
    );
    assert_eq!(w.friend_view(b, 10).unwrap().lines[0].balance, 12);
    // It keeps working at the new version.
    w.create_invoice(hours(), 1, 1000, "after the migration")
        .unwrap();
    drop(w);
    let c = rusqlite::Connection::open(dir.join("wallet.db")).unwrap();
    let v: u32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, offst_core::wallet::SCHEMA_VERSION);
    let indexes: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'history_by_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 2);
}

#[test]
fn a_key_file_opens_its_wallet_and_a_bad_one_is_named() {
    use offst_core::wallet::{KeyFile, KeyStoreError};
    let t = TempDir::new("keyfile");
    let keyfile = t.path("wallet.key");
    let keys = KeyFile::generate(&keyfile).unwrap();
    // Never overwrites an existing key file.
    assert!(KeyFile::generate(&keyfile).is_err());
    let w = Wallet::create(&t.path("w"), &keys, WalletOptions::default()).unwrap();
    let id = w.id();
    drop(w);
    assert_eq!(
        Wallet::open(&t.path("w"), &keys, WalletOptions::default())
            .unwrap()
            .id(),
        id
    );
    // Another key file: wrong key.
    let other = KeyFile::generate(&t.path("other.key")).unwrap();
    let err = Wallet::open(&t.path("w"), &other, WalletOptions::default()).unwrap_err();
    assert!(matches!(err, WalletError::WrongKey), "{err}");
    // A file of the wrong size: named, with what is wrong.
    std::fs::write(t.path("short.key"), [1u8; 5]).unwrap();
    let err = Wallet::open(
        &t.path("w"),
        &KeyFile::new(t.path("short.key")),
        WalletOptions::default(),
    )
    .unwrap_err();
    match err {
        WalletError::KeyStore(KeyStoreError::KeyFile { detail, .. }) => {
            assert!(detail.contains("exactly 32"), "{detail}")
        }
        e => panic!("unexpected: {e}"),
    }
    // A missing file too.
    let err = Wallet::open(
        &t.path("w"),
        &KeyFile::new(t.path("nope.key")),
        WalletOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, WalletError::KeyStore(KeyStoreError::KeyFile { .. })),
        "{err}"
    );
}

#[test]
fn opening_an_empty_directory_says_there_is_no_wallet() {
    let t = TempDir::new("empty");
    let err =
        Wallet::open(&t.path("nothing"), &test_keys(1), WalletOptions::default()).unwrap_err();
    assert!(matches!(err, WalletError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("create one or restore a backup"));
    let w = Wallet::create(&t.path("w"), &test_keys(1), WalletOptions::default()).unwrap();
    drop(w);
    let err = Wallet::create(&t.path("w"), &test_keys(1), WalletOptions::default()).unwrap_err();
    assert!(matches!(err, WalletError::AlreadyExists { .. }), "{err}");
}

/// The network driver and the bindings move a wallet between threads.
#[test]
fn a_wallet_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Wallet>();
    assert_send::<WalletError>();
}

/// Envelopes that are forged, replayed, for someone else or from a stranger are refused with a
/// reason, change nothing, and the wallet goes on.
#[test]
fn hostile_envelopes_are_refused_and_change_nothing() {
    use offst_core::net::envelope::{MailKey, seal, seal_forged};
    use offst_core::wallet::Delivery;
    let t = TempDir::new("envelopes");
    let mut ws = trio(&t);
    let a_id = offst_tests::identity(1);
    let b = &mut ws[1];
    let before = b.node().parts();
    let history = b.history_len().unwrap();
    let now = b.now_ms();
    let refused = |d: Delivery, needle: &str| match d {
        Delivery::Refused(why) => assert!(why.contains(needle), "{why}"),
        Delivery::Applied => panic!("accepted a hostile envelope"),
    };
    // Garbage.
    refused(b.receive_envelope(&[1, 2, 3]).unwrap(), "truncated");
    // Sealed for c, delivered to b.
    let c_key = MailKey::of(&offst_tests::identity(3));
    let for_c = seal(&a_id, &c_key, &[0, 1], now, [1; 16], [2; 56]).unwrap();
    refused(b.receive_envelope(&for_c).unwrap(), "does not open");
    // Mallory claims to be a.
    let mallory = offst_core::protocol::identity::Identity::from_seed([66; 32]);
    let forged = seal_forged(
        &mallory,
        a_id.id(),
        b.id(),
        b.mail_key().key,
        &[0, 1],
        now,
        [3; 16],
        [4; 56],
    )
    .unwrap();
    refused(b.receive_envelope(&forged).unwrap(), "not signed by them");
    // A real envelope from a, carrying a protocol message that is not valid: refused, and then
    // its copy is refused as a replay.
    let real = seal(&a_id, &b.mail_key(), &[0, 0xff], now, [5; 16], [6; 56]).unwrap();
    assert!(matches!(
        b.receive_envelope(&real).unwrap(),
        Delivery::Refused(_)
    ));
    refused(b.receive_envelope(&real).unwrap(), "replay");
    // Older than the replay window.
    let old = seal(
        &a_id,
        &b.mail_key(),
        &[0, 0xff],
        now - offst_core::net::envelope::REPLAY_WINDOW_MS - 1,
        [7; 16],
        [8; 56],
    )
    .unwrap();
    refused(b.receive_envelope(&old).unwrap(), "older than");
    // Nothing changed, nothing reached history, and payments go on.
    assert_eq!(b.node().parts(), before);
    assert_eq!(b.history_len().unwrap(), history);
    pay(&mut ws, 2);
}

/// Regression (found by the bindings' view-model tests): a limit set by the friend without the
/// turn to move did not show at all until the friend moved. The view says it is pending.
#[test]
fn a_limit_waiting_for_the_turn_shows_as_pending() {
    let t = TempDir::new("pending-limit");
    let mut ws: Vec<Wallet> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, d)| open_or_create(&t.path(d), i as u8 + 1, WalletOptions::default()).unwrap())
        .collect();
    befriend(&mut ws, 0, 1, 100).unwrap();
    pump(&mut ws, 10_000).unwrap();
    let (a, b) = (ws[0].id(), ws[1].id());
    ws[0].set_limit(b, hours(), 150).unwrap();
    ws[1].set_limit(a, hours(), 170).unwrap();
    let line = |w: &Wallet, f| w.friend_view(f, 0).unwrap().lines[0].clone();
    let (la, lb) = (line(&ws[0], b), line(&ws[1], a));
    // Each shows its new limit, in force or pending; one of the two waits for the turn.
    assert!(
        la.our_limit == 150 || la.pending_limit == Some(150),
        "{la:?}"
    );
    assert!(
        lb.our_limit == 170 || lb.pending_limit == Some(170),
        "{lb:?}"
    );
    assert!(la.pending_limit.is_some() || lb.pending_limit.is_some());
    pump(&mut ws, 10_000).unwrap();
    let (la, lb) = (line(&ws[0], b), line(&ws[1], a));
    assert_eq!(
        (la.our_limit, la.pending_limit, la.their_limit),
        (150, None, 170)
    );
    assert_eq!(
        (lb.our_limit, lb.pending_limit, lb.their_limit),
        (170, None, 150)
    );
}

/// Operations queued while the friend holds the turn survive reopening, including those whose
/// step changed nothing but the queue (the channel's own row is not written again for them).
/// Until 2026-12-04 such a step would have counted as unchanged and written nothing once
/// channel rows were skipped for queue-only steps.
#[test]
fn operations_queued_for_the_turn_survive_reopening() {
    let t = TempDir::new("queued-reopen");
    let open = |d: &str, seed: u8| open_or_create(&t.path(d), seed, WalletOptions::default());
    let mut ws: Vec<Wallet> = vec![open("a", 1).unwrap(), open("b", 2).unwrap()];
    befriend(&mut ws, 0, 1, 100).unwrap();
    pump(&mut ws, 10_000).unwrap();
    let b = ws[1].id();
    if ws[0].node().channel(&b).unwrap().holds_token() {
        // a moves once; b keeps the turn after a limit change.
        ws[0].set_limit(b, hours(), 120).unwrap();
        pump(&mut ws, 10_000).unwrap();
    }
    assert!(!ws[0].node().channel(&b).unwrap().holds_token());
    ws[0].set_limit(b, hours(), 150).unwrap();
    ws[0].set_limit(b, hours(), 160).unwrap();
    ws[0].set_limit(b, hours(), 170).unwrap();
    assert_eq!(ws[0].node().queued_ops(), 3);
    let before = ws[0].node().parts();
    drop(ws);
    let mut ws: Vec<Wallet> = vec![open("a", 1).unwrap(), open("b", 2).unwrap()];
    assert_eq!(ws[0].node().queued_ops(), 3, "queued operations lost");
    assert_eq!(ws[0].node().parts(), before);
    pump(&mut ws, 10_000).unwrap();
    let line = ws[0].friend_view(b, 0).unwrap().lines[0].clone();
    assert_eq!((line.our_limit, line.pending_limit), (170, None));
}

/// Envelopes that arrive together are one group commit: one SQLite commit for all of them, a
/// copy inside the group refused as a replay. If the commit can't be made (here: the disk is
/// full), none of them counts: the node is as before, nothing is marked seen, and the same
/// envelopes delivered again (the relay keeps what was not acknowledged) are applied.
#[test]
fn a_group_commit_is_all_or_nothing() {
    use offst_core::wallet::{Contact, Delivery};
    let t = TempDir::new("group");
    let mut ws = trio(&t);

    let contact = |w: &Wallet, name: &str| Contact {
        id: w.id(),
        name: name.into(),
        mail_key: w.mail_key(),
        relay: test_relay(1),
    };
    let (ca, cb) = (contact(&ws[0], "a"), contact(&ws[1], "b"));
    ws[0].set_contact(cb).unwrap();
    ws[1].set_contact(ca).unwrap();
    ws[0].set_relay(test_relay(1)).unwrap();
    // Each move of a's relay tells b, in an envelope that b records.
    let mut port = 2;
    let mut envelopes_for_b = |a: &mut Wallet, n: usize| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < n {
            a.move_relay(test_relay(port)).unwrap();
            port += 1;
            for item in a.outbox(100).unwrap() {
                // A fresh envelope id each time.
                let mut entropy = [7u8; 72];
                entropy[..8].copy_from_slice(&(port as u64).to_le_bytes());
                let (env, _) = a.seal_outgoing(&item, entropy).unwrap();
                a.outbox_sent(item.seq).unwrap();
                out.push(env);
            }
        }
        out
    };

    // Five envelopes and a copy of the first: one commit, the copy refused.
    let mut group = envelopes_for_b(&mut ws[0], 5);
    group.push(group[0].clone());
    let commits = ws[1].disk_commits();
    let got = ws[1].receive_envelopes(&group).unwrap();
    assert_eq!(ws[1].disk_commits() - commits, 1, "one group, one commit");
    assert_eq!(got.len(), 6);
    assert!(got[..5].iter().all(|d| *d == Delivery::Applied), "{got:?}");
    assert!(matches!(&got[5], Delivery::Refused(why) if why.contains("replay")));

    // Now b's disk is full: groups fail whole, and leave b as it was.
    let b = ws.remove(1);
    drop(b);
    let size = std::fs::metadata(t.path("b").join("wallet.db"))
        .unwrap()
        .len();
    let capped = WalletOptions {
        max_size_bytes: Some(size),
        ..WalletOptions::default()
    };
    let mut b = Wallet::open(&t.path("b"), &test_keys(2), capped).unwrap();
    let mut refused = None;
    for _ in 0..200 {
        let group = envelopes_for_b(&mut ws[0], 20);
        let before = (b.node().parts(), b.contact(&ws[0].id()).unwrap());
        match b.receive_envelopes(&group) {
            Ok(got) => assert!(got.iter().all(|d| *d == Delivery::Applied), "{got:?}"),
            Err(e) => {
                assert!(matches!(e, WalletError::DiskFull), "{e}");
                assert_eq!(
                    (b.node().parts(), b.contact(&ws[0].id()).unwrap()),
                    before,
                    "a failed group left something behind"
                );
                refused = Some(group);
                break;
            }
        }
    }
    let group = refused.expect("the capped disk never filled");
    // With room again, the same envelopes are new to b: none was recorded as seen.
    drop(b);
    let mut b = Wallet::open(&t.path("b"), &test_keys(2), WalletOptions::default()).unwrap();
    let got = b.receive_envelopes(&group).unwrap();
    assert!(got.iter().all(|d| *d == Delivery::Applied), "{got:?}");
    assert_eq!(
        b.contact(&ws[0].id()).unwrap().unwrap().relay,
        test_relay(port - 1)
    );
}

/// A payment request whose invoice was altered (the seller's signature over the request covers
/// the invoice's id, not its amount) is refused when paid: the wallet checks the invoice's
/// signature once, in the node's payment step, and nothing is paid or recorded. The same
/// request unaltered pays.
#[test]
fn a_payment_request_with_an_altered_invoice_is_refused() {
    let t = TempDir::new("altered-request");
    let mut ws = trio(&t);
    ws[2].set_relay(test_relay(1)).unwrap();
    let inv = ws[2].create_invoice(hours(), 5, 60_000, "bread").unwrap();
    let request = ws[2].payment_request(&inv).unwrap();
    let route = plan(&ws, &[0, 1, 2], 5);

    let mut altered = request.clone();
    altered.invoice.terms.amount = 1;
    let err = ws[0]
        .pay_request(&altered, vec![route.clone()])
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert!(ws[0].node().payment(&inv.terms.id).is_none());
    assert!(ws[0].outbox(100).unwrap().is_empty());
    // Regression: a request whose own signature fails (redirected to another relay) was
    // reported as "storage failure: the invitation is not signed…"; it is a payment refused
    // for its signature, as an altered invoice is.
    let mut redirected = request.clone();
    redirected.relay = test_relay(2);
    let err = ws[0]
        .pay_request(&redirected, vec![route.clone()])
        .unwrap_err();
    assert!(
        matches!(err, offst_core::wallet::WalletError::Refused(_)),
        "{err}"
    );
    assert!(
        err.to_string().contains("signature") && !err.to_string().contains("invitation"),
        "{err}"
    );
    assert!(ws[0].node().payment(&inv.terms.id).is_none());
    // Only the seller's contact may have been recorded (the seller signed it).
    assert_eq!(balance(&ws[0], &ws[1]), 0);

    ws[0].pay_request(&request, vec![route]).unwrap();
    pump(&mut ws, 10_000).unwrap();
    assert_eq!(
        ws[0].node().payment(&inv.terms.id).map(|(s, _)| s),
        Some(offst_core::protocol::node::PaymentStatus::Completed)
    );
    assert_eq!(balance(&ws[2], &ws[1]), 5);
}

/// A buyer's commit goes to a seller who is not its friend with the buyer's mail key and relay
/// (an introduced message), so the seller can answer it ("paid") and records how to reach the
/// buyer, keeping a name it already gave; the payment completes and the credit moves.
#[test]
fn a_seller_learns_how_to_reach_a_buyer_from_its_commit() {
    use offst_core::wallet::Contact;
    let t = TempDir::new("introduced");
    let mut ws = trio(&t);

    ws[0].set_relay(test_relay(1)).unwrap();
    ws[2].set_relay(test_relay(3)).unwrap();
    assert!(ws[2].contact(&ws[0].id()).unwrap().is_none());
    let first = pay(&mut ws, 5);
    let learned = ws[2].contact(&ws[0].id()).unwrap().unwrap();
    assert_eq!(learned.mail_key, ws[0].mail_key());
    assert_eq!(learned.relay, test_relay(1));
    assert_eq!(
        ws[0].node().payment(&first).map(|(s, _)| s),
        Some(offst_core::protocol::node::PaymentStatus::Completed)
    );
    assert!(ws[0].node().payment_progress(&first).unwrap().settled);
    assert_eq!(balance(&ws[2], &ws[1]), 5);

    // A name the seller gave the buyer stays; the relay follows the buyer.
    let mut named: Contact = learned.clone();
    named.name = "alice".into();
    ws[2].set_contact(named).unwrap();
    ws[0].set_relay(test_relay(2)).unwrap();
    pay(&mut ws, 5);
    let again = ws[2].contact(&ws[0].id()).unwrap().unwrap();
    assert_eq!(again.name, "alice");
    assert_eq!(again.relay, test_relay(2));
    assert_eq!(balance(&ws[2], &ws[1]), 10);

    // A stranger whose introduced message the node refuses (a "paid" for a payment we never
    // made) is not recorded: strangers cannot fill the contacts.
    let stranger = TempDir::new("introduced-stranger");
    let mut s =
        offst_tests::open_or_create(&stranger.path("s"), 7, WalletOptions::default()).unwrap();
    s.set_relay(test_relay(7)).unwrap();
    let paid = offst_core::protocol::message::Message::Paid(offst_core::protocol::payment::Paid {
        invoice_id: first,
        dest_plain_lock: offst_core::protocol::payment::PlainLock([1; 32]),
    });
    let item = s.introduced(ws[2].id(), &paid).unwrap();
    let d = ws[2].receive_outgoing(s.id(), &item).unwrap();
    assert!(
        matches!(d, offst_core::wallet::Delivery::Refused(_)),
        "{d:?}"
    );
    assert!(ws[2].contact(&s.id()).unwrap().is_none());
}

/// Run `f` on a runtime, as an app's async code would (`wallet::sync` flushes on a blocking
/// thread).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn a_step_that_is_flushed_later_sends_nothing_before_its_flush() {
    let t = TempDir::new("unsynced");
    let mut ws = trio(&t);
    let inv = ws[2].create_invoice(hours(), 10, 60_000, "bread").unwrap();
    let route = plan(&ws, &[0, 1, 2], 10);
    let ticket = ws[0].pay_unsynced(&inv, vec![route]).unwrap();
    // Committed (in memory and in the file), but its request (and the commit that goes with
    // it to the seller) may not leave yet.
    assert_eq!(ws[0].outbox_len().unwrap(), 2);
    assert!(ws[0].outbox(10).unwrap().is_empty());
    assert_eq!(pump(&mut ws, 10_000).unwrap(), 0);
    let a = offst_core::wallet::SharedWallet::new(ws.remove(0));
    block_on(offst_core::wallet::sync(&a, ticket)).unwrap();
    // A ticket already flushed returns at once.
    block_on(offst_core::wallet::sync(&a, ticket)).unwrap();
    ws.insert(0, a.into_inner());
    assert_eq!(ws[0].outbox(10).unwrap().len(), 2);
    pump(&mut ws, 10_000).unwrap();
    assert_eq!(
        ws[0].payment_view(inv.terms.id).unwrap().status,
        "completed"
    );
    assert_eq!(balance(&ws[2], &ws[1]), 10);
}

/// Mail handled without waiting for the disk, as the network driver handles it: each step is
/// taken in memory and committed, but until its flush nothing it sends leaves and none of its
/// events reaches the app (the event queue, its count, the history), since a power cut could
/// still undo it. The flush shows and sends it all: the network's `sync`, or the app's look at
/// a payment (`payment_view` shows only what is on disk). Every message of a payment's way to
/// the seller `c` goes this way here, once flushed each way.
#[test]
fn mail_handled_before_its_flush_shows_and_sends_nothing_until_then() {
    use offst_core::wallet::Contact;
    let t = TempDir::new("mail-unsynced");
    let mut ws = trio(&t);
    for w in ws.iter_mut() {
        w.set_relay(test_relay(1)).unwrap();
    }
    let c = Contact {
        id: ws[2].id(),
        name: "c".into(),
        mail_key: ws[2].mail_key(),
        relay: test_relay(1),
    };
    ws[0].set_contact(c.clone()).unwrap();
    ws[1].set_contact(c).unwrap();
    let mut entropy = 0u64;
    for by_view in [false, true] {
        while let Some(e) = ws[2].next_event().unwrap() {
            ws[2].event_handled(e.seq).unwrap();
        }
        let inv = ws[2].create_invoice(hours(), 10, 60_000, "bread").unwrap();
        let route = plan(&ws, &[0, 1, 2], 10);
        ws[0].pay(&inv, vec![route]).unwrap();
        let (handled, with_events, with_sends) =
            deliver_to_c_unsynced(&mut ws, inv.terms.id, by_view, &mut entropy);
        assert!(handled >= 2, "{handled} messages reached c");
        assert!(with_events >= 1, "no message to c recorded an event");
        assert!(with_sends >= 1, "no message to c made c send something");
        let mut kinds = Vec::new();
        while let Some(e) = ws[2].next_event().unwrap() {
            kinds.push(e.kind);
            ws[2].event_handled(e.seq).unwrap();
        }
        assert!(kinds.contains(&EventKind::InvoicePaid), "{kinds:?}");
        assert_eq!(
            ws[0].payment_view(inv.terms.id).unwrap().status,
            "completed"
        );
    }
    assert_eq!(balance(&ws[2], &ws[1]), 20);
}

/// Deliver every message until all outboxes are empty, those to `c` (`ws[2]`) sealed and
/// handled without waiting for the disk, each checked before and after its flush (by `sync`,
/// or by `payment_view` of `invoice` with `by_view`). Returns how many messages reached `c`,
/// how many of them recorded an event, and how many made `c` send something.
fn deliver_to_c_unsynced(
    ws: &mut Vec<Wallet>,
    invoice: offst_core::protocol::payment::InvoiceId,
    by_view: bool,
    entropy: &mut u64,
) -> (usize, usize, usize) {
    use offst_core::wallet::{Delivery, SharedWallet};
    let everything = HistoryQuery {
        limit: 10_000,
        ..HistoryQuery::default()
    };
    let (mut handled, mut with_events, mut with_sends) = (0, 0, 0);
    loop {
        let mut moved = false;
        for from in 0..3 {
            for item in ws[from].outbox(100).unwrap() {
                moved = true;
                let sender = ws[from].id();
                let to = (0..3).find(|&i| ws[i].id() == item.to).unwrap();
                if to != 2 {
                    ws[to].receive_outgoing(sender, &item).unwrap();
                    ws[from].outbox_sent(item.seq).unwrap();
                    continue;
                }
                *entropy += 1;
                let mut e = [3u8; 72];
                e[..8].copy_from_slice(&entropy.to_le_bytes());
                let (envelope, _) = ws[from].seal_outgoing(&item, e).unwrap();
                ws[from].outbox_sent(item.seq).unwrap();
                let seller = &mut ws[2];
                let (events, rows) = (
                    seller.pending_events().unwrap(),
                    seller.history(&everything).unwrap().len(),
                );
                let sendable = seller.outbox(100).unwrap().len();
                let (got, ticket) = seller.receive_envelopes_unsynced(&[&envelope]).unwrap();
                assert_eq!(got, vec![Delivery::Applied]);
                handled += 1;
                // Taken, but neither shown nor sent.
                assert_eq!(seller.pending_events().unwrap(), events);
                assert_eq!(seller.history(&everything).unwrap().len(), rows);
                assert_eq!(seller.outbox(100).unwrap().len(), sendable);
                let queued = seller.outbox_len().unwrap();
                if by_view {
                    seller.payment_view(invoice).unwrap();
                } else {
                    let shared = SharedWallet::new(ws.remove(2));
                    block_on(offst_core::wallet::sync(&shared, ticket)).unwrap();
                    ws.insert(2, shared.into_inner());
                }
                let seller = &mut ws[2];
                // Flushed: shown and sent.
                if seller.pending_events().unwrap() > events {
                    with_events += 1;
                    assert!(seller.history(&everything).unwrap().len() > rows);
                }
                if queued > sendable as u64 {
                    with_sends += 1;
                }
                assert_eq!(seller.outbox(100).unwrap().len() as u64, queued);
            }
        }
        if !moved {
            return (handled, with_events, with_sends);
        }
    }
}

/// Steps that do not wait for the disk share one SQLite transaction: four invoices made
/// back to back are one commit, made by the flush. Invoices made and never flushed are
/// committed when the wallet is closed, and are there when it opens again.
#[test]
fn steps_waiting_for_the_disk_share_one_commit_and_survive_closing() {
    let t = TempDir::new("deferred");
    let mut ws = trio(&t);
    let before = ws[2].disk_commits();
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push(
            ws[2]
                .create_invoice_unsynced(hours(), 5, 60_000, "")
                .unwrap(),
        );
    }
    assert_eq!(
        ws[2].disk_commits(),
        before,
        "nothing committed before the flush"
    );
    let c = offst_core::wallet::SharedWallet::new(ws.remove(2));
    block_on(offst_core::wallet::sync(&c, made[3].1)).unwrap();
    // Earlier tickets are on disk too.
    block_on(offst_core::wallet::sync(&c, made[0].1)).unwrap();
    ws.push(c.into_inner());
    assert_eq!(
        ws[2].disk_commits(),
        before + 1,
        "one commit for four steps"
    );
    // Three more, never flushed: closing the wallet commits them.
    for _ in 0..3 {
        made.push(
            ws[2]
                .create_invoice_unsynced(hours(), 5, 60_000, "")
                .unwrap(),
        );
    }
    let state = ws[2].node().parts();
    let mut ws = reopen(&t, ws);
    assert_eq!(ws[2].node().parts(), state, "steps lost in closing");
    for (inv, _) in &made {
        let route = plan(&ws, &[0, 1, 2], 5);
        ws[0].pay(inv, vec![route]).unwrap();
    }
    pump(&mut ws, 100_000).unwrap();
    for (inv, _) in &made {
        assert_eq!(
            ws[0].payment_view(inv.terms.id).unwrap().status,
            "completed"
        );
    }
    assert_eq!(balance(&ws[2], &ws[1]), 35);
}

/// A step that fails inside the shared transaction (here the disk is full) is undone, and
/// memory stays what the disk will hold. SQLite may undo the whole shared transaction on such
/// an error, and with it the steps before that waited there: whatever happened, a step's
/// flush reports success exactly when the step is there after the wallet is opened again.
#[test]
fn a_failed_step_in_the_shared_transaction_reports_exactly_what_was_kept() {
    let t = TempDir::new("deferred-full");
    let mut ws = trio(&t);
    drop(ws.remove(2));
    let size = std::fs::metadata(t.path("c").join("wallet.db"))
        .unwrap()
        .len();
    let capped = WalletOptions {
        max_size_bytes: Some(size + 16 * 1024),
        ..WalletOptions::default()
    };
    ws.push(Wallet::open(&t.path("c"), &test_keys(3), capped).unwrap());
    let mut made = Vec::new();
    let mut refused = false;
    for _ in 0..400 {
        match ws[2].create_invoice_unsynced(hours(), 1, 60_000, &"x".repeat(200)) {
            Ok(m) => made.push(m),
            Err(e) => {
                assert!(matches!(e, WalletError::DiskFull), "{e}");
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the cap was never reached");
    assert!(made.len() >= 2, "only {} invoices fit", made.len());
    // Memory holds what the disk holds: no invoice it does not know of.
    let in_memory = ws[2].node().parts();
    let c = offst_core::wallet::SharedWallet::new(ws.remove(2));
    let flushed: Vec<bool> = made
        .iter()
        .map(|(_, ticket)| block_on(offst_core::wallet::sync(&c, *ticket)).is_ok())
        .collect();
    ws.push(c.into_inner());
    assert_eq!(ws[2].node().parts(), in_memory);
    drop(ws.remove(2));
    ws.push(Wallet::open(&t.path("c"), &test_keys(3), WalletOptions::default()).unwrap());
    assert_eq!(
        ws[2].node().parts(),
        in_memory,
        "the disk differs from memory"
    );
    for ((inv, _), ok) in made.iter().zip(&flushed) {
        let kept = ws[2].payment_view(inv.terms.id).is_ok();
        assert_eq!(kept, *ok, "flush said {ok}, the invoice is there: {kept}");
    }
    // The wallet goes on: an invoice that was kept can be paid.
    if let Some(((inv, _), _)) = made.iter().zip(&flushed).rev().find(|(_, ok)| **ok) {
        let route = plan(&ws, &[0, 1, 2], 1);
        ws[0].pay(inv, vec![route]).unwrap();
        pump(&mut ws, 100_000).unwrap();
        assert_eq!(
            ws[0].payment_view(inv.terms.id).unwrap().status,
            "completed"
        );
    }
}

#[test]
fn one_flush_serves_every_step_before_it_and_a_full_commit_flushes_them_all() {
    let t = TempDir::new("unsynced-many");
    let mut ws = trio(&t);
    let mut tickets = Vec::new();
    let mut invoices = Vec::new();
    for _ in 0..3 {
        let (inv, ticket) = ws[2]
            .create_invoice_unsynced(hours(), 5, 60_000, "")
            .unwrap();
        let route = plan(&ws, &[0, 1, 2], 5);
        let t2 = ws[0].pay_unsynced(&inv, vec![route]).unwrap();
        tickets.push(ticket);
        invoices.push((inv, t2));
    }
    let queued = ws[0].outbox_len().unwrap() as usize;
    assert!(queued > 0);
    assert!(ws[0].outbox(10).unwrap().is_empty());
    // The first payment's flush covers all three (they were committed before it).
    let a = offst_core::wallet::SharedWallet::new(ws.remove(0));
    block_on(offst_core::wallet::sync(&a, invoices[0].1)).unwrap();
    ws.insert(0, a.into_inner());
    assert_eq!(ws[0].outbox(10).unwrap().len(), queued);
    // A step that waits for the disk flushes what came before it too.
    let (inv, _) = ws[2]
        .create_invoice_unsynced(hours(), 5, 60_000, "")
        .unwrap();
    pump(&mut ws, 10_000).unwrap();
    let route = plan(&ws, &[0, 1, 2], 5);
    let held = ws[0].pay_unsynced(&inv, vec![route]).unwrap();
    assert!(ws[0].outbox_len().unwrap() > 0);
    assert!(ws[0].outbox(10).unwrap().is_empty());
    let b = ws[1].id();
    ws[0].set_limit(b, hours(), 90).unwrap();
    let queued = ws[0].outbox_len().unwrap() as usize;
    assert!(queued >= 2);
    assert_eq!(ws[0].outbox(10).unwrap().len(), queued);
    let a = offst_core::wallet::SharedWallet::new(ws.remove(0));
    block_on(offst_core::wallet::sync(&a, held)).unwrap();
    ws.insert(0, a.into_inner());
    pump(&mut ws, 10_000).unwrap();
    for (inv, _) in &invoices {
        assert_eq!(
            ws[0].payment_view(inv.terms.id).unwrap().status,
            "completed"
        );
    }
    assert_eq!(
        ws[0].payment_view(inv.terms.id).unwrap().status,
        "completed"
    );
    assert_eq!(balance(&ws[2], &ws[1]), 20);
    drop(tickets);
}

#[test]
fn a_step_never_flushed_is_flushed_when_the_wallet_opens_again() {
    let t = TempDir::new("unsynced-reopen");
    let mut ws = trio(&t);
    let inv = ws[2].create_invoice(hours(), 10, 60_000, "bread").unwrap();
    let route = plan(&ws, &[0, 1, 2], 10);
    let _never = ws[0].pay_unsynced(&inv, vec![route]).unwrap();
    assert!(ws[0].outbox(10).unwrap().is_empty());
    // The process ends before the flush: the step is in the file (the system's cache), and
    // opening the wallet flushes it before anything can be sent.
    let mut ws = reopen(&t, ws);
    assert_eq!(ws[0].outbox(10).unwrap().len(), 2);
    pump(&mut ws, 10_000).unwrap();
    assert_eq!(
        ws[0].payment_view(inv.terms.id).unwrap().status,
        "completed"
    );
}

/// The envelopes a wallet has seen are kept through the schema change that keys them by sender
/// and send time (a copy is still refused), and are forgotten on their own once they leave the
/// replay window, so the table does not grow for ever.
#[test]
fn seen_envelopes_survive_the_migration_and_leave_with_the_window() {
    use offst_core::net::envelope::{REPLAY_WINDOW_MS, seal};
    use offst_core::wallet::{Delivery, ManualClock, SEEN_PRUNE_EVERY_MS};
    let t = TempDir::new("seen");
    let clock = ManualClock::new(1_800_000_000_000);
    let options = || WalletOptions {
        clock: std::sync::Arc::new(clock.clone()),
        ..Default::default()
    };
    let dir = t.path("b");
    let db = dir.join("wallet.db");
    let rows = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let a = offst_tests::identity(1);
    let mut b = open_or_create(&dir, 2, options()).unwrap();
    let envelope = |b: &Wallet, id: u8| {
        seal(
            &a,
            &b.mail_key(),
            &[0, 0xff],
            b.now_ms(),
            [id; 16],
            [id; 56],
        )
        .unwrap()
    };
    let refused = |d: Delivery, needle: &str| match d {
        Delivery::Refused(why) => assert!(why.contains(needle), "{why}"),
        Delivery::Applied => panic!("accepted a copy"),
    };
    let first = envelope(&b, 1);
    assert!(matches!(
        b.receive_envelope(&first).unwrap(),
        Delivery::Refused(_)
    ));
    drop(b);
    assert_eq!(rows("SELECT COUNT(*) FROM seen"), 1);
    // Back to schema 5, as a wallet of the build before kept it.
    downgrade(&db, 5);
    // Migrated, it still knows the envelope.
    let mut b = open_or_create(&dir, 2, options()).unwrap();
    refused(b.receive_envelope(&first).unwrap(), "replay");
    assert_eq!(
        rows("PRAGMA user_version"),
        i64::from(offst_core::wallet::SCHEMA_VERSION)
    );
    assert_eq!(
        rows("SELECT COUNT(*) FROM sqlite_master WHERE name = 'seen_envelopes'"),
        0
    );
    // Since schema 8 the key leads with the send time: no index by time beside it, and
    // forgetting old ones is a range of the key, not a scan.
    assert_eq!(
        rows("SELECT COUNT(*) FROM sqlite_master WHERE name = 'seen_by_time'"),
        0
    );
    let plan: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "EXPLAIN QUERY PLAN DELETE FROM seen WHERE sent_ms < 5",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("PRIMARY KEY (sent_ms<?)"), "{plan}");
    // Within the window it is kept, also when the pruning is due.
    clock.advance(SEEN_PRUNE_EVERY_MS);
    let second = envelope(&b, 2);
    assert!(matches!(
        b.receive_envelope(&second).unwrap(),
        Delivery::Refused(_)
    ));
    assert_eq!(rows("SELECT COUNT(*) FROM seen"), 2);
    refused(
        b.receive_envelopes(&[&first, &second]).unwrap().remove(0),
        "replay",
    );
    // Out of the window, the next mail forgets it (it is refused as too old instead).
    clock.advance(REPLAY_WINDOW_MS - SEEN_PRUNE_EVERY_MS + 1);
    let third = envelope(&b, 3);
    let got = b.receive_envelopes(&[&third, &first]).unwrap();
    assert!(matches!(&got[0], Delivery::Refused(why) if !why.contains("replay")));
    refused(got[1].clone(), "older than");
    assert_eq!(
        rows("SELECT COUNT(*) FROM seen"),
        2,
        "the first one is forgotten"
    );
    assert_eq!(
        rows("SELECT COUNT(*) FROM seen WHERE id = x'01010101010101010101010101010101'"),
        0
    );
    refused(b.receive_envelope(&second).unwrap(), "replay");
}

/// Takes a wallet database of this build back to schema `to` (5 to 10), as the builds before
/// wrote it, for the migration tests: each step undoes one migration.
fn downgrade(db: &Path, to: u32) {
    assert_eq!(
        offst_core::wallet::SCHEMA_VERSION,
        12,
        "undo the newer migrations here too"
    );
    let c = rusqlite::Connection::open(db).unwrap();
    // Schema 12 replaced the queue of events by the last one handled.
    c.execute_batch(
        "CREATE TABLE event_queue (seq INTEGER PRIMARY KEY REFERENCES history(seq)) STRICT;
         INSERT INTO event_queue (seq)
             SELECT seq FROM history WHERE seq > (SELECT up_to FROM events_handled);
         DROP TABLE events_handled;",
    )
    .unwrap();
    c.pragma_update(None, "user_version", 11).unwrap();
    if to >= 11 {
        return;
    }
    // Schema 11 added the archive (empty in these tests: nothing there is a week past its
    // expiry).
    c.execute_batch("DROP TABLE payments_archive; DROP TABLE invoices_archive;")
        .unwrap();
    c.pragma_update(None, "user_version", 10).unwrap();
    if to >= 10 {
        return;
    }
    // Key `table` again by the id its rows' bytes begin with (after the part's version byte),
    // as the schemas before 9 and 10 did, in the order of its current key.
    let by_id = |table: &str, key: &str| {
        c.execute_batch(&format!(
            "CREATE TABLE {table}_by_id ({key} BLOB PRIMARY KEY, data BLOB NOT NULL) STRICT;
             INSERT INTO {table}_by_id ({key}, data)
                 SELECT substr(data, 2, 32), data FROM {table} ORDER BY seq;
             DROP TABLE {table};
             ALTER TABLE {table}_by_id RENAME TO {table};"
        ))
        .unwrap();
    };
    // A payment's and an invoice's bytes begin with the invoice terms, and so its id.
    by_id("payments", "invoice");
    by_id("invoices", "invoice");
    c.pragma_update(None, "user_version", 9).unwrap();
    if to >= 9 {
        return;
    }
    // A remembered outcome's bytes begin with its request id.
    by_id("outcomes", "request");
    c.pragma_update(None, "user_version", 8).unwrap();
    if to >= 8 {
        return;
    }
    c.execute_batch(
        "CREATE TABLE seen_by_sender (
             sender BLOB NOT NULL, sent_ms INTEGER NOT NULL, id BLOB NOT NULL,
             PRIMARY KEY (sender, sent_ms, id)
         ) STRICT, WITHOUT ROWID;
         INSERT INTO seen_by_sender (sender, sent_ms, id) SELECT sender, sent_ms, id FROM seen;
         DROP TABLE seen;
         ALTER TABLE seen_by_sender RENAME TO seen;
         CREATE INDEX seen_by_time ON seen(sent_ms);
         PRAGMA user_version = 7;",
    )
    .unwrap();
    if to >= 7 {
        return;
    }
    c.execute_batch(
        "DROP INDEX history_by_invoice;
         ALTER TABLE history DROP COLUMN invoice_expires_ms;
         CREATE INDEX history_by_invoice ON history(invoice, seq) WHERE invoice IS NOT NULL;
         PRAGMA user_version = 6;",
    )
    .unwrap();
    if to <= 5 {
        c.execute_batch(
            "CREATE TABLE seen_envelopes (
                 sender BLOB NOT NULL, id BLOB NOT NULL, sent_ms INTEGER NOT NULL,
                 PRIMARY KEY (sender, id)
             ) STRICT;
             INSERT INTO seen_envelopes (sender, id, sent_ms) SELECT sender, id, sent_ms FROM seen;
             DROP TABLE seen;
             CREATE INDEX seen_by_time ON seen_envelopes(sent_ms);
             PRAGMA user_version = 5;",
        )
        .unwrap();
    }
}

/// Since schema 7 the history's index by invoice leads with the invoice's expiry. A payment
/// written before the migration, one started before and finished after, and one made after
/// are each found whole, at the buyer and at the seller; the rows written after carry the
/// expiry.
#[test]
fn payment_history_is_found_across_the_migration_of_its_index() {
    let t = TempDir::new("history-index");
    let mut ws = trio(&t);
    let before = pay(&mut ws, 2);
    let straddling = ws[2].create_invoice(hours(), 3, 60_000, "half").unwrap();
    let route = plan(&ws, &[0, 1, 2], 3);
    ws[0].pay(&straddling, vec![route]).unwrap();
    drop(ws);
    for w in ["a", "c"] {
        downgrade(&t.path(w).join("wallet.db"), 6);
    }
    let mut ws = reopen(&t, Vec::new());
    pump(&mut ws, 10_000).unwrap();
    let after = pay(&mut ws, 4);
    let kinds = |w: &mut Wallet, invoice| -> Vec<EventKind> {
        let view = w.payment_view(invoice).unwrap();
        view.history.iter().map(|h| h.kind).collect()
    };
    for invoice in [before, straddling.terms.id, after] {
        assert_eq!(
            kinds(&mut ws[0], invoice),
            vec![EventKind::PaymentStarted, EventKind::PaymentCompleted]
        );
        assert_eq!(
            kinds(&mut ws[2], invoice),
            vec![EventKind::InvoiceCreated, EventKind::InvoicePaid]
        );
    }
    drop(ws);
    // The rows written after the migration (the last payment's two, the straddling one's
    // last) carry its invoice's expiry.
    for w in ["a", "c"] {
        let c = rusqlite::Connection::open(t.path(w).join("wallet.db")).unwrap();
        let with_expiry: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM history WHERE invoice_expires_ms > 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(with_expiry, 3, "{w}");
    }
}

/// Since schema 9 the remembered outcomes are keyed by their place in the order they were
/// remembered. A mediator's and a seller's outcomes written before are all kept by the
/// migration (the node reads back the same), and the outcomes of a payment after it land on
/// the next places.
#[test]
fn remembered_outcomes_survive_the_migration_to_rows_by_place() {
    let t = TempDir::new("outcomes-by-place");
    let mut ws = trio(&t);
    pay(&mut ws, 2);
    pay(&mut ws, 3);
    let before: Vec<_> = ws.iter().map(|w| w.node().parts()).collect();
    assert!(
        !before[1].outcomes.is_empty(),
        "the mediator remembers outcomes"
    );
    drop(ws);
    for w in ["a", "b", "c"] {
        downgrade(&t.path(w).join("wallet.db"), 8);
    }
    let mut ws = reopen(&t, Vec::new());
    let after: Vec<_> = ws.iter().map(|w| unnumbered(w.node().parts())).collect();
    assert_eq!(
        after,
        before.iter().cloned().map(unnumbered).collect::<Vec<_>>()
    );
    let places = |w: &str| -> Vec<i64> {
        let c = rusqlite::Connection::open(t.path(w).join("wallet.db")).unwrap();
        let mut s = c.prepare("SELECT seq FROM outcomes ORDER BY seq").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let kept = places("b");
    assert_eq!(kept.len(), before[1].outcomes.len());
    // Each row's key is the place its bytes hold (the store deletes forgotten ones by it).
    for w in ["b", "c"] {
        let c = rusqlite::Connection::open(t.path(w).join("wallet.db")).unwrap();
        let mut s = c.prepare("SELECT seq, data FROM outcomes").unwrap();
        let rows: Vec<(i64, Vec<u8>)> = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (seq, data) in rows {
            let place = offst_core::protocol::node::outcome_place(&data).unwrap();
            assert_eq!(u64::try_from(seq).unwrap(), place, "{w}");
        }
    }
    pump(&mut ws, 10_000).unwrap();
    pay(&mut ws, 4);
    drop(ws);
    let now = places("b");
    assert!(
        now.len() > kept.len(),
        "the new payment's outcomes are stored"
    );
    assert_eq!(
        now[..kept.len()],
        kept[..],
        "the rows before stay where they were"
    );
    // The next place, not a random key: above the last kept one by at most the block of
    // places the node reserves in its settings at a time (1,024; a restart skips what was
    // reserved and not given).
    let first_new = now[kept.len()];
    let last = *kept.last().unwrap();
    assert!(
        first_new > last && first_new <= last + 1 + 1024,
        "{first_new} after {last}: the next place, not a random key"
    );
}

/// A node's parts with the rows of its payments and invoices set aside: what a migration
/// that numbers them afresh must keep.
fn unnumbered(mut parts: Parts) -> Parts {
    for (row, _) in parts.payments.iter_mut().chain(parts.invoices.iter_mut()) {
        *row = 0;
    }
    parts
}

/// The rows of `table` in a wallet's file, by their key.
fn stored_rows(db: &Path, table: &str) -> Vec<(u64, Vec<u8>)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut s = c
        .prepare(&format!("SELECT seq, data FROM {table} ORDER BY seq"))
        .unwrap();
    s.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| {
            let (seq, data) = r.unwrap();
            (u64::try_from(seq).unwrap(), data)
        })
        .collect()
}

/// Since schema 10 payments and invoices are keyed by a row the node gives each, not by their
/// invoice id. A wallet of schema 9 with two payments finished and one under way migrates:
/// the node reads back the same payments and invoices, numbered in the order they were
/// written; every view and receipt is the same; the payment under way finishes after it; and
/// a payment made afterwards lands on a row above all of them. No key index is left.
#[test]
fn payments_and_invoices_survive_the_migration_to_rows_by_number() {
    let t = TempDir::new("payments-by-row");
    let mut ws = trio(&t);
    let first = pay(&mut ws, 2);
    let second = pay(&mut ws, 3);
    let under_way = ws[2].create_invoice(hours(), 4, 60_000, "half").unwrap();
    let route = plan(&ws, &[0, 1, 2], 4);
    ws[0].pay(&under_way, vec![route]).unwrap();
    let before: Vec<_> = ws.iter().map(|w| unnumbered(w.node().parts())).collect();
    assert_eq!(before[0].payments.len(), 3);
    assert_eq!(before[2].invoices.len(), 3);
    let views = |ws: &mut [Wallet]| -> Vec<(&'static str, Option<Vec<u8>>, &'static str)> {
        [first, second, under_way.terms.id]
            .into_iter()
            .map(|inv| {
                let bought = ws[0].payment_view(inv).unwrap();
                let sold = ws[2].payment_view(inv).unwrap();
                (
                    bought.status,
                    bought.receipt.map(|r| format!("{r:?}").into_bytes()),
                    sold.status,
                )
            })
            .collect()
    };
    let views_before = views(&mut ws);
    assert_eq!(views_before[2].0, "in_flight");
    drop(ws);
    for w in ["a", "b", "c"] {
        downgrade(&t.path(w).join("wallet.db"), 9);
    }
    let db = |w: &str| t.path(w).join("wallet.db");
    let mut ws = reopen(&t, Vec::new());
    let after: Vec<_> = ws.iter().map(|w| unnumbered(w.node().parts())).collect();
    assert_eq!(after, before, "the migration changed a payment or invoice");
    assert_eq!(views(&mut ws), views_before);
    // The node holds the rows the store holds, numbered 0, 1, 2 in the order written.
    for (w, table, held) in [
        ("a", "payments", ws[0].node().parts().payments),
        ("c", "invoices", ws[2].node().parts().invoices),
    ] {
        let mut held = held;
        held.sort();
        let stored = stored_rows(&db(w), table);
        assert_eq!(held, stored, "{w}");
        assert_eq!(
            stored.iter().map(|(row, _)| *row).collect::<Vec<_>>(),
            vec![0, 1, 2],
            "{w}"
        );
        let c = rusqlite::Connection::open(db(w)).unwrap();
        let indexes: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'
                 AND tbl_name IN ('payments', 'invoices')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0, "{w}: a key index is left");
    }
    // The payment under way finishes, and a new one goes above every row.
    let mut ws = ws;
    pump(&mut ws, 10_000).unwrap();
    let views_now = views(&mut ws);
    assert_eq!(views_now[2].0, "completed");
    assert_eq!(views_now[..2], views_before[..2]);
    let last = pay(&mut ws, 5);
    assert_eq!(ws[0].payment_view(last).unwrap().status, "completed");
    let in_memory: Vec<_> = ws.iter().map(|w| w.node().parts()).collect();
    let ws = reopen(&t, ws);
    let reread: Vec<_> = ws.iter().map(|w| w.node().parts()).collect();
    assert_eq!(reread, in_memory);
    for (w, table) in [("a", "payments"), ("c", "invoices")] {
        let rows = stored_rows(&db(w), table);
        assert_eq!(rows.len(), 4, "{w}");
        assert!(rows[3].0 > 2, "{w}: row {} reused", rows[3].0);
        assert_eq!(
            &rows[3].1[1..33],
            &last.0[..],
            "{w}: the newest row is the newest payment"
        );
    }
}

/// Regression: a wallet that could not read its record of envelopes seen took every envelope
/// as new (the error was read as "not seen"), so a copy went on to the node. Now the call
/// fails, the relay keeps the envelope, and the copy is refused once the record reads again.
#[test]
fn a_record_of_seen_envelopes_that_cannot_be_read_lets_no_copy_through() {
    use offst_core::net::envelope::seal;
    use offst_core::wallet::Delivery;
    let t = TempDir::new("seen-unreadable");
    let dir = t.path("b");
    let mut b = open_or_create(&dir, 2, WalletOptions::default()).unwrap();
    let a = offst_tests::identity(1);
    let real = seal(&a, &b.mail_key(), &[0, 0xff], b.now_ms(), [5; 16], [6; 56]).unwrap();
    assert!(matches!(
        b.receive_envelope(&real).unwrap(),
        Delivery::Refused(why) if !why.contains("replay")
    ));
    // The record now fails to read (a view whose rows raise an error) and still takes writes.
    let other = rusqlite::Connection::open(dir.join("wallet.db")).unwrap();
    other
        .execute_batch(
            "ALTER TABLE seen RENAME TO seen_rows;
             CREATE VIEW seen AS SELECT sender, sent_ms, id FROM seen_rows
                 WHERE abs(-9223372036854775807 - 1) > 0;
             CREATE TRIGGER seen_insert INSTEAD OF INSERT ON seen BEGIN
                 INSERT OR IGNORE INTO seen_rows (sender, sent_ms, id)
                     VALUES (NEW.sender, NEW.sent_ms, NEW.id);
             END;",
        )
        .unwrap();
    let before = b.node().parts();
    let history = b.history_len().unwrap();
    assert!(b.receive_envelope(&real).is_err(), "a copy taken as new");
    assert!(b.receive_envelopes(&[&real, &real]).is_err());
    // Readable again: the copy is refused as one.
    other
        .execute_batch(
            "DROP VIEW seen;
             ALTER TABLE seen_rows RENAME TO seen;",
        )
        .unwrap();
    drop(other);
    drop(b);
    let mut b = open_or_create(&dir, 2, WalletOptions::default()).unwrap();
    assert_eq!(b.node().parts(), before);
    assert_eq!(b.history_len().unwrap(), history);
    assert!(matches!(
        b.receive_envelope(&real).unwrap(),
        Delivery::Refused(why) if why.contains("replay")
    ));
}

/// The chain a - b - c (b mediates, limit 100 both ways) on `clock`: made and befriended when
/// `fresh`, else opened again as they are.
fn clocked_trio(t: &TempDir, clock: &offst_core::wallet::ManualClock, fresh: bool) -> Vec<Wallet> {
    let options = || WalletOptions {
        clock: std::sync::Arc::new(clock.clone()),
        ..Default::default()
    };
    let mut ws: Vec<Wallet> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, d)| open_or_create(&t.path(d), i as u8 + 1, options()).unwrap())
        .collect();
    if fresh {
        ws[1].set_rate(MEDIATOR_RATE).unwrap();
        befriend(&mut ws, 0, 1, 100).unwrap();
        befriend(&mut ws, 1, 2, 100).unwrap();
        pump(&mut ws, 10_000).unwrap();
    }
    ws
}

/// A finished payment and its invoice leave the wallets' memory once their invoice expired more
/// than `ARCHIVE_AFTER_EXPIRY_MS` ago, in one step that moves each row to the archive: the
/// views still show them (with the receipt), a reopened wallet does not read them, the invoice
/// cannot be paid again, and no credit moves. Before that time, and while a payment is in
/// flight, nothing is archived.
#[test]
fn finished_payments_move_to_the_archive_and_stay_visible() {
    use offst_core::protocol::bounds::ARCHIVE_AFTER_EXPIRY_MS;
    use offst_core::protocol::node::PaymentStatus;
    use offst_core::wallet::ManualClock;
    let t = TempDir::new("archive");
    let clock = ManualClock::new(1_800_000_000_000);
    let mut ws = clocked_trio(&t, &clock, true);
    let rows = |w: &str, table: &str| -> i64 {
        let c = rusqlite::Connection::open(t.path(w).join("wallet.db")).unwrap();
        c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };

    let paid = pay(&mut ws, 5);
    // A second payment that stays in flight: the seller never hears of it.
    let stuck = ws[2].create_invoice(hours(), 3, 60_000, "tea").unwrap();
    let route = plan(&ws, &[0, 1, 2], 3);
    ws[0].pay(&stuck, vec![route]).unwrap();
    let balances = (balance(&ws[0], &ws[1]), balance(&ws[2], &ws[1]));

    // Just before the time: nothing moves.
    clock.advance(60_000 + ARCHIVE_AFTER_EXPIRY_MS - 1);
    for w in &mut ws {
        w.tick().unwrap();
    }
    assert!(ws[0].node().payment(&paid).is_some());
    assert!(ws[2].node().invoice_status(&paid).is_some());
    assert_eq!(rows("a", "payments_archive"), 0);

    clock.advance(1);
    ws[0].tick().unwrap();
    ws[2].tick().unwrap();
    assert!(ws[0].node().payment(&paid).is_none());
    assert!(ws[2].node().invoice_status(&paid).is_none());
    // The stuck payment is still in flight: kept.
    assert_eq!(
        ws[0].node().payment(&stuck.terms.id).map(|(s, _)| s),
        Some(PaymentStatus::InFlight)
    );
    assert_eq!(
        (rows("a", "payments"), rows("a", "payments_archive")),
        (1, 1)
    );
    // The seller's unpaid invoice expired and was cancelled: archived as well.
    assert_eq!(
        (rows("c", "invoices"), rows("c", "invoices_archive")),
        (0, 2)
    );

    let check = |ws: &mut [Wallet]| {
        let view = ws[0].payment_view(paid).unwrap();
        assert_eq!(view.status, "completed");
        let receipt = view
            .receipt
            .expect("the receipt is archived with the payment");
        assert!(receipt.verify().is_ok());
        assert_eq!(receipt.invoice_id(), paid);
        assert!(!view.history.is_empty());
        assert_eq!(ws[2].payment_view(paid).unwrap().status, "paid");
        let cancelled = ws[2].payment_view(stuck.terms.id).unwrap();
        assert_eq!(cancelled.status, "cancelled");
        // The cancellation, written in the step that archived the invoice, is in its history.
        let kinds: Vec<String> = cancelled
            .history
            .iter()
            .map(|h| format!("{:?}", h.kind))
            .collect();
        assert_eq!(kinds, ["InvoiceCreated", "InvoiceCancelled"]);
        let (invoice, status) = ws[2].issued_invoice(&paid).unwrap().unwrap();
        assert_eq!(invoice.terms.amount, 5);
        assert!(matches!(
            status,
            offst_core::protocol::node::InvoiceStatus::Paid(_)
        ));
        assert_eq!((balance(&ws[0], &ws[1]), balance(&ws[2], &ws[1])), balances);
    };
    check(&mut ws);
    // Reopened, the wallets load only what they keep, and still find the archived records.
    let mut ws = {
        drop(ws);
        clocked_trio(&t, &clock, false)
    };
    assert!(ws[0].node().payment(&paid).is_none());
    assert!(ws[2].node().issued_invoice(&paid).is_none());
    check(&mut ws);
    // The archived invoice cannot be paid again: it expired.
    let invoice = ws[2].issued_invoice(&paid).unwrap().unwrap().0;
    let route = plan(&ws, &[0, 1, 2], 5);
    let err = ws[0].pay(&invoice, vec![route]).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    pump(&mut ws, 10_000).unwrap();
    check(&mut ws);
}

/// A wallet written under schema 10 (before the archive) migrates to the archive's schema with
/// its finished payment still in memory, and archives it at its first tick past the grace, as
/// a wallet made after would.
#[test]
fn finished_payments_of_a_schema_10_wallet_are_archived_after_the_upgrade() {
    use offst_core::protocol::bounds::ARCHIVE_AFTER_EXPIRY_MS;
    use offst_core::wallet::ManualClock;
    let t = TempDir::new("archive-upgrade");
    let clock = ManualClock::new(1_800_000_000_000);
    let mut ws = clocked_trio(&t, &clock, true);
    let paid = pay(&mut ws, 5);
    drop(ws);
    downgrade(&t.path("a").join("wallet.db"), 10);
    let mut ws = clocked_trio(&t, &clock, false);
    assert!(ws[0].node().payment(&paid).is_some());
    clock.advance(60_000 + ARCHIVE_AFTER_EXPIRY_MS);
    ws[0].tick().unwrap();
    assert!(ws[0].node().payment(&paid).is_none());
    let view = ws[0].payment_view(paid).unwrap();
    assert_eq!(view.status, "completed");
    assert!(view.receipt.unwrap().verify().is_ok());
    assert!(!view.history.is_empty());
}
