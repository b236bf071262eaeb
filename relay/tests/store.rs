//! The mail store alone: mail handed out before its commit, and what a commit that fails must
//! not break (`docs/proposals/relay-delivery-before-commit.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use offst_core::protocol::identity::{Identity, NodeId};
use offst_relay::store::{Bounds, SentOn, Store, StoreError};
use tokio::time::timeout;

mod common;
use common::scratch;

const T: Duration = Duration::from_secs(10);

fn bounds() -> Bounds {
    Bounds {
        max_messages: 1000,
        max_bytes: 1 << 20,
    }
}

fn who(seed: u8) -> NodeId {
    Identity::from_seed([seed; 32]).id()
}

/// `recipient`'s mail after `after` as the store has it now: `(seq, envelope)`.
async fn mail_now(store: &Store, recipient: NodeId, after: u64) -> Vec<(u64, Vec<u8>)> {
    let mail = store.fetch(recipient, after, 64).await.unwrap();
    mail.into_iter().map(|m| (m.seq, m.envelope)).collect()
}

/// The seqs of `recipient`'s mail after `after` as the store has it now.
async fn seqs_now(store: &Store, recipient: NodeId, after: u64) -> Vec<u64> {
    let mail = mail_now(store, recipient, after).await;
    mail.into_iter().map(|(seq, _)| seq).collect()
}

/// `recipient`'s mail after `after` once there is some (the writer hands it out on its own
/// thread).
async fn mail_after(store: &Store, recipient: NodeId, after: u64) -> Vec<(u64, Vec<u8>)> {
    timeout(T, async {
        loop {
            let mail = store.fetch(recipient, after, 64).await.unwrap();
            if !mail.is_empty() {
                return mail.into_iter().map(|m| (m.seq, m.envelope)).collect();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("mail in time")
}

#[tokio::test]
async fn mail_is_handed_out_before_its_commit_and_a_failed_commit_never_reuses_its_number() {
    let dir = scratch("store-before-commit");
    let store = Store::open(&dir, bounds()).unwrap();
    // Mail written at once (held mail: the tests below).
    store.set_hold(Duration::ZERO);
    let b = who(2);
    let sub = store.subscribe(b);

    // Held before its commit, the envelope is already readable by its connected recipient,
    // while its sender has no answer yet.
    store.hold_commits(true);
    let mut pending = store.enqueue(None, b, b"lost".to_vec(), 1).unwrap();
    let got = mail_after(&store, b, 0).await;
    assert_eq!(got.len(), 1);
    let (lost_seq, envelope) = got[0].clone();
    assert_eq!(envelope, b"lost");
    assert!(pending.try_recv().is_err(), "no answer before the commit");
    assert_eq!(*sub.0.borrow(), lost_seq, "the delivery was woken");

    // The commit fails: the sender hears it, and the envelope is taken back.
    store.fail_next_commits(1);
    store.hold_commits(false);
    let answer = timeout(T, pending).await.unwrap().unwrap();
    assert!(matches!(answer, Err(StoreError::Sqlite(_))), "{answer:?}");
    assert!(store.fetch(b, 0, 64).await.unwrap().is_empty());
    assert_eq!(store.tail_bytes(), 0, "the memory it took is given back");
    assert_eq!(store.count().await.unwrap(), 0);

    // The recipient had read it and acknowledges it. The next envelope gets a new number, so
    // that acknowledgement does not delete it.
    store.delete(b, lost_seq).unwrap();
    let next_seq = store.insert(b, b"next".to_vec(), 2).await.unwrap().unwrap();
    assert!(next_seq > lost_seq, "{next_seq} after {lost_seq}");
    assert_eq!(
        mail_after(&store, b, lost_seq).await,
        vec![(next_seq, b"next".to_vec())]
    );
    assert_eq!(store.count().await.unwrap(), 1);
    // And from disk too, for a reader that is not subscribed.
    store.unsubscribe(&b);
    drop(sub);
    store.unsubscribe(&b);
    assert_eq!(seqs_now(&store, b, 0).await, vec![next_seq]);

    // Reopened, the store numbers on above everything it ever handed out and committed, also
    // once that mail is deleted.
    store.delete(b, next_seq).unwrap();
    store.close();
    drop(store);
    let store = Store::open(&dir, bounds()).unwrap();
    let after_restart = store
        .insert(b, b"after".to_vec(), 3)
        .await
        .unwrap()
        .unwrap();
    assert!(after_restart > next_seq, "{after_restart} after {next_seq}");
    store.close();
}

#[tokio::test]
async fn a_tail_serves_only_complete_runs_and_disk_serves_the_rest() {
    let dir = scratch("store-tail");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::ZERO);
    let (b, c) = (who(2), who(3));
    // Stored before anyone subscribed: only on disk.
    let early = store
        .insert(b, b"early".to_vec(), 1)
        .await
        .unwrap()
        .unwrap();
    let sub = store.subscribe(b);
    // Mail for another recipient is not handed out (held, the writer may take it in the same
    // batch or the next, never before).
    store.hold_commits(true);
    let mine = store.enqueue(None, b, b"late".to_vec(), 2).unwrap();
    let other = store.enqueue(None, c, b"for c".to_vec(), 2).unwrap();
    let got = mail_after(&store, b, early).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"late");
    // A reader behind the tail reads the disk: the early one, and not yet the late one.
    assert_eq!(
        mail_now(&store, b, 0).await,
        vec![(early, b"early".to_vec())]
    );
    assert!(store.fetch(c, 0, 64).await.unwrap().is_empty());
    store.hold_commits(false);
    let late = timeout(T, mine).await.unwrap().unwrap().unwrap().unwrap();
    timeout(T, other).await.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(got[0].0, late);
    // Committed, everything is read in order from the start.
    assert_eq!(seqs_now(&store, b, 0).await, vec![early, late]);
    // What the recipient acknowledged leaves both (the insert after it commits after it).
    store.delete(b, late).unwrap();
    assert!(store.fetch(b, late, 64).await.unwrap().is_empty());
    store
        .insert(c, b"after".to_vec(), 3)
        .await
        .unwrap()
        .unwrap();
    assert!(store.fetch(b, 0, 64).await.unwrap().is_empty());
    drop(sub);
    store.unsubscribe(&b);
    store.close();
}

#[tokio::test]
async fn all_tails_together_stay_within_their_budget_and_the_rest_is_read_from_disk() {
    let dir = scratch("store-tails-budget");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::ZERO);
    store.set_tails_budget(3000);
    let (b, c, d) = (who(2), who(3), who(4));
    let subs = [store.subscribe(b), store.subscribe(c), store.subscribe(d)];
    let envelope = |n: u8| vec![n; 1000];
    let b1 = store.insert(b, envelope(1), 1).await.unwrap().unwrap();
    let b2 = store.insert(b, envelope(2), 1).await.unwrap().unwrap();
    let c1 = store.insert(c, envelope(3), 1).await.unwrap().unwrap();
    assert_eq!(store.tail_bytes(), 3000);
    // Over the budget: d's mail is not kept in memory, and d reads it from disk.
    let d1 = store.insert(d, envelope(4), 1).await.unwrap().unwrap();
    assert_eq!(store.tail_bytes(), 3000);
    assert_eq!(mail_now(&store, d, 0).await, vec![(d1, envelope(4))]);
    // A tail makes room within the budget by dropping its own oldest, read from disk then.
    let b3 = store.insert(b, envelope(5), 1).await.unwrap().unwrap();
    assert!(store.tail_bytes() <= 3000, "{}", store.tail_bytes());
    assert_eq!(seqs_now(&store, b, 0).await, vec![b1, b2, b3]);
    assert_eq!(seqs_now(&store, b, b2).await, vec![b3]);
    // Acknowledged and unsubscribed, the memory is given back.
    store.delete(b, b3).unwrap();
    assert_eq!(store.tail_bytes(), 1000);
    assert_eq!(seqs_now(&store, c, 0).await, vec![c1]);
    drop(subs);
    for r in [b, c, d] {
        store.unsubscribe(&r);
    }
    assert_eq!(store.tail_bytes(), 0);
    store.close();
}

/// Wait until the store holds `n` envelopes unwritten.
async fn until_held(store: &Store, n: usize) {
    timeout(T, async {
        while store.held() != n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("held in time");
}

/// How many rows `recipient` has on disk (committed), read apart from the store.
fn rows_on_disk(dir: &std::path::Path, recipient: NodeId) -> Vec<u64> {
    let conn = rusqlite::Connection::open(dir.join("mail.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT seq FROM mail WHERE recipient = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([recipient.as_bytes().as_slice()], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|s| s.unwrap() as u64)
        .collect()
}

#[tokio::test]
async fn held_mail_is_read_as_if_on_disk_and_acknowledged_is_never_written() {
    let dir = scratch("store-held-acked");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::from_secs(3600));
    let b = who(2);
    let sub = store.subscribe(b);
    let mut first = store.enqueue(None, b, b"one".to_vec(), 1).unwrap();
    let second = store.enqueue(None, b, b"two".to_vec(), 1).unwrap();
    let got = timeout(T, async {
        loop {
            let mail = seqs_now(&store, b, 0).await;
            if mail.len() == 2 {
                return mail;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(first.try_recv().is_err(), "no answer while held");
    assert_eq!(store.held(), 2);
    assert_eq!(
        store.count().await.unwrap(),
        2,
        "held mail counts as waiting"
    );
    assert!(rows_on_disk(&dir, b).is_empty(), "nothing written yet");
    // A reader behind the tail (its tail dropped) still finds held mail.
    drop(sub);
    store.unsubscribe(&b);
    assert_eq!(seqs_now(&store, b, 0).await, got);
    // The first is acknowledged: answered, never written; the second is written when mail
    // for b can no longer be held (b is not connected), before it.
    store.delete(b, got[0]).unwrap();
    assert_eq!(
        timeout(T, first).await.unwrap().unwrap().unwrap(),
        Ok(got[0])
    );
    let third = store
        .insert(b, b"three".to_vec(), 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        timeout(T, second).await.unwrap().unwrap().unwrap(),
        Ok(got[1])
    );
    assert_eq!(
        rows_on_disk(&dir, b),
        vec![got[1], third],
        "in order, on disk"
    );
    assert_eq!(store.never_written(), 1);
    assert_eq!(store.held(), 0);
    assert_eq!(store.count().await.unwrap(), 2);
    store.close();
}

#[tokio::test]
async fn held_mail_is_written_when_due_and_when_the_store_closes() {
    let dir = scratch("store-held-due");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::from_millis(30));
    let b = who(2);
    let _sub = store.subscribe(b);
    // Nobody acknowledges it: written when due, then answered.
    let due = store.insert(b, b"due".to_vec(), 1).await.unwrap().unwrap();
    assert_eq!(rows_on_disk(&dir, b), vec![due]);
    assert_eq!(store.held(), 0);
    // Held for an hour, and the store closes: written first.
    store.set_hold(Duration::from_secs(3600));
    let closing = store.enqueue(None, b, b"closing".to_vec(), 1).unwrap();
    until_held(&store, 1).await;
    store.close();
    let seq = timeout(T, closing)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(rows_on_disk(&dir, b), vec![due, seq]);
    assert_eq!(store.never_written(), 0);
}

#[tokio::test]
async fn held_mail_written_in_a_commit_that_fails_is_answered_as_lost_and_its_number_never_returns()
{
    let dir = scratch("store-held-fails");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::from_millis(30));
    let b = who(2);
    let sub = store.subscribe(b);
    store.fail_next_commits(1);
    // The first commit (the batch that holds it) fails: it stays held, and is written later.
    let kept = store.insert(b, b"kept".to_vec(), 1).await.unwrap().unwrap();
    assert_eq!(rows_on_disk(&dir, b), vec![kept]);
    // Written in a commit that fails: its sender hears so, and it is taken back. (Held for an
    // hour; an answered insert for someone else makes sure the batch that held it is done.)
    store.set_hold(Duration::from_secs(3600));
    let pending = store.enqueue(None, b, b"lost".to_vec(), 1).unwrap();
    until_held(&store, 1).await;
    store
        .insert(who(3), b"sync".to_vec(), 1)
        .await
        .unwrap()
        .unwrap();
    store.fail_next_commits(1);
    // b is gone: its next mail is written at once, the held one before it, in one batch.
    drop(sub);
    store.unsubscribe(&b);
    let after = store.insert(b, b"after".to_vec(), 1).await;
    assert!(matches!(after, Err(StoreError::Sqlite(_))), "{after:?}");
    let answer = timeout(T, pending).await.unwrap().unwrap();
    assert!(matches!(answer, Err(StoreError::Sqlite(_))), "{answer:?}");
    assert_eq!(store.held(), 0);
    assert_eq!(seqs_now(&store, b, 0).await, vec![kept]);
    assert_eq!(rows_on_disk(&dir, b), vec![kept]);
    let next = store.insert(b, b"next".to_vec(), 2).await.unwrap().unwrap();
    assert!(next > kept + 2, "the lost numbers are not handed out again");
    assert_eq!(store.count().await.unwrap(), 3, "kept, sync and next");
    store.close();
}

/// Wait until the store holds something for `relay` unwritten.
async fn until_held_forward(store: &Store, relay: NodeId) {
    timeout(T, async {
        while store.held_forward(&relay) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("held in time");
}

fn next_relay() -> offst_core::net::wire::RelayAddress {
    offst_core::net::wire::RelayAddress {
        addr: "127.0.0.1:9".into(),
        key: who(9),
    }
}

/// The forward queue's envelopes for `relay` now, by recipient's seed byte: what the
/// forwarder would send, in its order.
async fn queued_for(store: &Store, relay: NodeId) -> Vec<Vec<u8>> {
    let batch = store.fetch_forward(relay, 0, 64).await.unwrap();
    batch.into_iter().map(|o| o.envelope).collect()
}

#[tokio::test]
async fn an_envelope_the_next_relay_took_while_held_is_never_written() {
    let dir = scratch("store-fwd-taken");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::from_secs(3600));
    let relay = next_relay();
    let sent_on = SentOn::new();
    let pending = store
        .enqueue_sent_on(relay.clone(), who(2), b"on".to_vec(), 1, sent_on.clone())
        .unwrap();
    until_held_forward(&store, relay.key).await;
    sent_on.set(true);
    // The writer settles it with its next batch.
    store
        .insert(who(3), b"other".to_vec(), 1)
        .await
        .unwrap()
        .unwrap();
    let seq = timeout(T, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seq, 0, "never written");
    assert_eq!(store.count_forward().await.unwrap(), 0);
    assert_eq!(store.held_forward(&relay.key), 0);
    assert_eq!(store.never_written(), 1);
    store.close();
}

#[tokio::test]
async fn held_envelopes_for_a_relay_reach_the_queue_in_their_order_when_not_taken() {
    let dir = scratch("store-fwd-order");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::from_secs(3600));
    let relay = next_relay();
    let (first, second) = (SentOn::new(), SentOn::new());
    let a = store
        .enqueue_sent_on(relay.clone(), who(2), b"a".to_vec(), 1, first.clone())
        .unwrap();
    let b = store
        .enqueue_sent_on(relay.clone(), who(2), b"b".to_vec(), 1, second.clone())
        .unwrap();
    // The second is refused by the next relay while the first has no answer yet: both are
    // written, the first before it.
    second.set(false);
    store
        .insert(who(3), b"other".to_vec(), 1)
        .await
        .unwrap()
        .unwrap();
    let (a, b) = (
        timeout(T, a).await.unwrap().unwrap().unwrap().unwrap(),
        timeout(T, b).await.unwrap().unwrap().unwrap().unwrap(),
    );
    assert!(0 < a && a < b, "{a} then {b}");
    assert_eq!(store.held_forward(&relay.key), 0);
    // Held again, and then one the relay sends through the queue (cut-through paused): the
    // held one goes first, although nobody answered for it.
    let c = store
        .enqueue_sent_on(relay.clone(), who(2), b"c".to_vec(), 1, SentOn::new())
        .unwrap();
    let d = store
        .enqueue(Some(relay.clone()), who(2), b"d".to_vec(), 1)
        .unwrap();
    timeout(T, c).await.unwrap().unwrap().unwrap().unwrap();
    timeout(T, d).await.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(
        queued_for(&store, relay.key).await,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
    );
    // And when the store closes, what is still held is written.
    let e = store
        .enqueue_sent_on(relay.clone(), who(2), b"e".to_vec(), 1, SentOn::new())
        .unwrap();
    until_held_forward(&store, relay.key).await;
    store.close();
    assert!(timeout(T, e).await.unwrap().unwrap().unwrap().unwrap() > 0);
    let store = Store::open(&dir, bounds()).unwrap();
    assert_eq!(queued_for(&store, relay.key).await.len(), 5);
    store.close();
}

#[tokio::test]
async fn a_held_envelope_without_an_answer_is_written_when_due() {
    let dir = scratch("store-fwd-due");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::from_millis(30));
    let relay = next_relay();
    let seq = store
        .enqueue_sent_on(relay.clone(), who(2), b"late".to_vec(), 1, SentOn::new())
        .unwrap();
    let seq = timeout(T, seq).await.unwrap().unwrap().unwrap().unwrap();
    assert!(seq > 0);
    assert_eq!(store.count_forward().await.unwrap(), 1);
    assert_eq!(store.held_forward(&relay.key), 0);
    store.close();
}

/// An acknowledgement deletes what was written and touches no row for what never was: each
/// mailbox counts its rows on disk, and one with none skips the statements (and, with nothing
/// else to write, the batch's transaction). The counts survive a reopen.
#[tokio::test]
async fn an_acknowledgement_deletes_the_written_mail_and_skips_only_mail_never_written() {
    let dir = scratch("store-ack-disk");
    let store = Store::open(&dir, bounds()).unwrap();
    store.set_hold(Duration::from_secs(3600));
    let (b, c) = (who(2), who(3));
    // Nobody collects b's mail: written at once.
    let one = store.insert(b, b"one".to_vec(), 1).await.unwrap().unwrap();
    let two = store.insert(b, b"two".to_vec(), 1).await.unwrap().unwrap();
    assert_eq!(rows_on_disk(&dir, b), vec![one, two]);
    // Acknowledged up to the first: deleted from disk (an insert for c after it makes sure
    // the writer took the acknowledgement).
    store.delete(b, one).unwrap();
    store.insert(c, b"sync".to_vec(), 1).await.unwrap().unwrap();
    assert_eq!(rows_on_disk(&dir, b), vec![two]);
    // b connects: the next is held, and acknowledging everything deletes the written one and
    // never writes the held one.
    let _sub = store.subscribe(b);
    let three = store.enqueue(None, b, b"three".to_vec(), 1).unwrap();
    until_held(&store, 1).await;
    let seq = seqs_now(&store, b, two).await;
    assert_eq!(seq.len(), 1);
    store.delete(b, seq[0]).unwrap();
    assert_eq!(
        timeout(T, three).await.unwrap().unwrap().unwrap(),
        Ok(seq[0])
    );
    store.insert(c, b"sync".to_vec(), 1).await.unwrap().unwrap();
    assert!(rows_on_disk(&dir, b).is_empty(), "the written one deleted");
    assert_eq!(store.never_written(), 1);
    // Written again while nobody holds it, and acknowledged after a reopen (counted from
    // the disk then).
    drop(_sub);
    store.unsubscribe(&b);
    let four = store.insert(b, b"four".to_vec(), 2).await.unwrap().unwrap();
    store.close();
    let store = Store::open(&dir, bounds()).unwrap();
    assert_eq!(rows_on_disk(&dir, b), vec![four]);
    store.delete(b, four).unwrap();
    store.insert(c, b"sync".to_vec(), 3).await.unwrap().unwrap();
    assert!(rows_on_disk(&dir, b).is_empty());
    assert_eq!(store.count().await.unwrap(), 3, "c's three only");
    store.close();
}

/// A batch whose commit fails gives back what it counted in the mailboxes it touched, and
/// leaves every other mailbox's count as it was: the quotas hold after it as before it.
#[tokio::test]
async fn a_failed_commit_gives_back_its_mailboxes_counts_and_leaves_the_others() {
    let dir = scratch("store-fail-counts");
    let store = Store::open(
        &dir,
        Bounds {
            max_messages: 2,
            max_bytes: 1 << 20,
        },
    )
    .unwrap();
    let (a, b) = (who(2), who(3));
    for _ in 0..2 {
        store.insert(a, b"a".to_vec(), 1).await.unwrap().unwrap();
    }
    store.fail_next_commits(1);
    let lost = store.insert(b, b"lost".to_vec(), 1).await;
    assert!(matches!(lost, Err(StoreError::Sqlite(_))), "{lost:?}");
    // a is still full; b has room for two, as if the failed insert never happened.
    assert!(matches!(
        store.insert(a, b"a".to_vec(), 1).await.unwrap(),
        Err(offst_core::net::wire::Refusal::MailboxFull { messages: 2, .. })
    ));
    for _ in 0..2 {
        store.insert(b, b"b".to_vec(), 1).await.unwrap().unwrap();
    }
    assert!(matches!(
        store.insert(b, b"b".to_vec(), 1).await.unwrap(),
        Err(offst_core::net::wire::Refusal::MailboxFull { messages: 2, .. })
    ));
    assert_eq!(store.count().await.unwrap(), 4);
    store.close();
}
