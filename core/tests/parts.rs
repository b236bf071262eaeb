//! Stored parts: a node written out part by part comes back whole, and damaged, newer or
//! foreign parts are refused with a typed error instead of a half-built node.

// Tests fail by panicking: unwrap, expect, indexing and panic are how they report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::{chain, hours, identity};
use offst_core::protocol::amount::Rate;
use offst_core::protocol::node::{Node, PART_VERSION, PartsError};
use offst_core::protocol::payment::InvoiceId;

/// A mediator in the middle of a chain, after a completed payment and one left pending.
fn busy_mediator() -> (Node, u8) {
    let (mut net, ids) = chain(3, 100, Rate { base: 1, ppm: 0 });
    net.buy_along(&ids, &hours(), 10, 1).unwrap();
    net.run().unwrap();
    let node = net.node(&ids[1]).unwrap().clone();
    (node, 2)
}

#[test]
fn buyer_mediator_and_seller_round_trip() {
    let (mut net, ids) = chain(3, 100, Rate { base: 1, ppm: 0 });
    net.buy_along(&ids, &hours(), 10, 1).unwrap();
    net.run().unwrap();
    for (i, id) in ids.iter().enumerate() {
        let node = net.node(id).unwrap();
        let back = Node::from_parts(identity(i as u8 + 1), &node.parts()).unwrap();
        assert_eq!(back.parts(), node.parts());
    }
    let buyer = net.node(&ids[0]).unwrap();
    assert_eq!(buyer.parts().payments.len(), 1);
    assert_eq!(net.node(&ids[2]).unwrap().parts().invoices.len(), 1);
}

#[test]
fn parts_round_trip() {
    let (node, seed) = busy_mediator();
    let parts = node.parts();
    assert!(!parts.channels.is_empty());
    let back = Node::from_parts(identity(seed), &parts).unwrap();
    assert_eq!(back.parts(), parts);
    assert_eq!(back.id(), node.id());
    for f in node.friends() {
        assert_eq!(back.balance(f, &hours()), node.balance(f, &hours()));
    }
}

#[test]
fn changes_after_load_are_only_what_moved() {
    let (node, seed) = busy_mediator();
    let mut back = Node::from_parts(identity(seed), &node.parts()).unwrap();
    let changes = back.take_changes();
    assert!(changes.channels.is_empty() && changes.payments.is_empty());
    assert!(changes.invoices.is_empty() && changes.outcomes.is_empty());
}

#[test]
fn damaged_part_is_refused() {
    let (node, seed) = busy_mediator();
    let mut parts = node.parts();
    let ch = &mut parts.channels[0];
    ch.truncate(ch.len() / 2);
    let err = Node::from_parts(identity(seed), &parts).unwrap_err();
    assert_corrupt(&err, "channel");
    assert!(err.to_string().contains("restore from a backup"));

    let mut parts = node.parts();
    parts.settings = vec![0, 1, 2];
    let err = Node::from_parts(identity(seed), &parts).unwrap_err();
    assert_corrupt(&err, "settings");
}

#[test]
fn part_from_a_newer_version_is_refused() {
    let (node, seed) = busy_mediator();
    let mut parts = node.parts();
    parts.channels[0][0] = PART_VERSION + 1;
    let err = Node::from_parts(identity(seed), &parts).unwrap_err();
    assert_eq!(
        err,
        PartsError::NewerVersion {
            part: "channel",
            got: PART_VERSION + 1
        }
    );
    assert!(err.to_string().contains("update the app"));
}

#[test]
fn parts_of_another_identity_are_refused() {
    let (node, _) = busy_mediator();
    let err = Node::from_parts(identity(9), &node.parts()).unwrap_err();
    assert_eq!(err, PartsError::WrongIdentity);
}

/// Step `net` until node `id` is as `wanted` says; that node, or `None` if the net went quiet
/// first.
fn step_until(
    net: &mut offst_core::sim::local::LocalNet,
    id: &offst_core::protocol::identity::NodeId,
    wanted: impl Fn(&Node) -> bool,
) -> Option<Node> {
    while net.step().unwrap() {
        let n = net.node(id).unwrap();
        if wanted(n) {
            return Some(n.clone());
        }
    }
    None
}

/// `err` says that the stored `part` is damaged.
fn assert_corrupt(err: &PartsError, part: &str) {
    assert!(
        matches!(err, PartsError::Corrupt { part: p, .. } if *p == part),
        "{err}"
    );
}

/// A step's rows into a store's table: each `Some` written, each `None` deleted.
fn put<K: Ord>(
    table: &mut std::collections::BTreeMap<K, Vec<u8>>,
    rows: impl IntoIterator<Item = (K, Option<Vec<u8>>)>,
) {
    for (k, v) in rows {
        match v {
            Some(v) => table.insert(k, v),
            None => table.remove(&k),
        };
    }
}

/// Payments under way at once, all started before any message is delivered: the mediator's
/// channels fill with pending requests.
fn many_under_way(
    n: u64,
) -> (
    offst_core::sim::local::LocalNet,
    Vec<offst_core::protocol::identity::NodeId>,
) {
    let (mut net, ids) = chain(3, 10_000, Rate { base: 1, ppm: 0 });
    for k in 0..n {
        let invoice = net.invoice(ids[2], &hours(), 1, 100 + k).unwrap();
        let plan = net.plan(&ids, 1).unwrap();
        let now = net.now_ms;
        let out = net
            .node_mut(&ids[0])
            .unwrap()
            .pay(
                now,
                &invoice,
                vec![plan],
                offst_core::sim::local::entropy(k, 2),
            )
            .unwrap();
        net.absorb(ids[0], out);
    }
    (net, ids)
}

/// A step reports the pending requests it changed, not every request still under way: over a
/// whole run each request's row is written when it enters the signed state (and when it is
/// answered there) and deleted once, on each of the mediator's two channels. A store fed only
/// with these rows rebuilds the mediator exactly at every step.
#[test]
fn a_step_writes_only_the_pending_requests_it_changed() {
    let n = 40;
    let (mut net, ids) = many_under_way(n);
    let b = ids[1];
    let mut rows: std::collections::BTreeMap<_, Vec<u8>> = Default::default();
    let mut channels: std::collections::BTreeMap<_, Vec<u8>> = Default::default();
    let mut queued: std::collections::BTreeMap<_, Vec<u8>> = Default::default();
    let mut written = 0usize;
    let mut queued_written = 0usize;
    let mut channels_written = 0usize;
    let mut longest_queue = 0usize;
    let mut most_pending = 0usize;
    let mut all = net.node(&b).unwrap().clone();
    all.mark_all_changed();
    let first = all.take_changes();
    for (k, v) in first.pending {
        rows.insert(k, v.unwrap());
    }
    for (k, v) in first.channels {
        channels.insert(k, v.unwrap());
    }
    for (k, v) in first.queued {
        queued.insert(k, v.unwrap());
    }
    net.node_mut(&b).unwrap().take_changes();
    while net.step().unwrap() {
        let node = net.node_mut(&b).unwrap();
        most_pending = most_pending.max(
            node.friends()
                .copied()
                .collect::<Vec<_>>()
                .iter()
                .map(|f| node.channel(f).unwrap().state().pending.len())
                .sum(),
        );
        longest_queue = longest_queue.max(node.queued_ops());
        let changes = node.take_changes();
        written += changes.pending.iter().filter(|(_, v)| v.is_some()).count();
        queued_written += changes.queued.iter().filter(|(_, v)| v.is_some()).count();
        channels_written += changes.channels.iter().filter(|(_, v)| v.is_some()).count();
        put(&mut queued, changes.queued);
        put(&mut rows, changes.pending);
        put(&mut channels, changes.channels);
        let mut stored = node.parts();
        stored.channels = channels.values().cloned().collect();
        stored.pending = rows.values().cloned().collect();
        stored.queued = queued.values().cloned().collect();
        let back = Node::from_parts(identity(2), &stored).unwrap();
        assert_eq!(back.parts(), node.parts(), "the store fell behind the node");
    }
    assert!(most_pending >= 10, "only {most_pending} under way at once");
    // Everything settled; rows stay only for requests the last signed state still holds
    // (until the next move countersigns the settling one), and the store matched the node.
    let node = net.node(&b).unwrap();
    let open: usize = node
        .friends()
        .map(|f| node.channel(f).unwrap().state().pending.len())
        .sum();
    assert_eq!(open, 0, "requests left under way");
    let signed: usize = node
        .friends()
        .map(|f| node.channel(f).unwrap().tip().prev_state.pending.len())
        .sum();
    assert!(
        rows.len() <= signed,
        "{} rows for {signed} signed",
        rows.len()
    );
    // Two channels, one write of each request on each: since part format 5 the rows hold the
    // signed state's requests, written when one enters it (and again only if it is answered
    // there, which these payments, committed early, never are). Format 4 wrote each about
    // twice as often (161 rows here): also when a move froze it and when one settled it.
    assert!(
        written <= 2 * n as usize,
        "{written} rows written for {n} payments"
    );
    // Each queued operation is written once, not again at every step while it waits: the
    // mediator queues a request, a response and a collect per payment (and a few token moves
    // may put one back in front).
    assert!(longest_queue >= 10, "only {longest_queue} queued at once");
    assert!(queued.is_empty(), "{} queued rows left", queued.len());
    assert!(
        queued_written <= 4 * n as usize,
        "{queued_written} queued rows written for {n} payments"
    );
    // The channel rows are written when a move or a flag changed them, not at every step.
    let moves: u64 = node
        .friends()
        .map(|f| node.channel(f).unwrap().counter())
        .sum();
    assert!(
        channels_written as u64 <= 2 * moves,
        "{channels_written} channel rows written for {moves} moves"
    );
}

/// Payments made while the friend holds the channel's turn only add to the channel's queue:
/// after the first (which asks for the turn), each such step writes its queued row and no
/// channel row, and a store fed only with these changes still rebuilds the node.
#[test]
fn a_step_that_only_queues_writes_no_channel_row() {
    let (mut net, ids) = chain(3, 10_000, Rate { base: 1, ppm: 0 });
    let a = ids[0];
    common::give_token(&mut net, ids[1], a);
    let mut all = net.node(&a).unwrap().clone();
    all.mark_all_changed();
    let first = all.take_changes();
    let mut channels: std::collections::BTreeMap<_, Vec<u8>> = first
        .channels
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    let mut queued: std::collections::BTreeMap<_, Vec<u8>> = first
        .queued
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    let pending: Vec<Vec<u8>> = first.pending.into_iter().map(|(_, v)| v.unwrap()).collect();
    net.node_mut(&a).unwrap().take_changes();
    let mut channel_rows = Vec::new();
    for k in 0..5u64 {
        let invoice = net.invoice(ids[2], &hours(), 1, 100 + k).unwrap();
        let plan = net.plan(&ids, 1).unwrap();
        let now = net.now_ms;
        let node = net.node_mut(&a).unwrap();
        node.pay(
            now,
            &invoice,
            vec![plan],
            offst_core::sim::local::entropy(k, 2),
        )
        .unwrap();
        let changes = node.take_changes();
        assert_eq!(changes.queued.len(), 1, "payment {k}: one queued row");
        channel_rows.push(changes.channels.len());
        for (key, v) in changes.channels {
            channels.insert(key, v.unwrap());
        }
        for (key, v) in changes.queued {
            queued.insert(key, v.unwrap());
        }
        let mut stored = node.parts();
        stored.channels = channels.values().cloned().collect();
        stored.queued = queued.values().cloned().collect();
        stored.pending = pending.clone();
        let back = Node::from_parts(identity(1), &stored).unwrap();
        assert_eq!(
            back.parts(),
            node.parts(),
            "payment {k}: the store fell behind"
        );
    }
    assert_eq!(net.node(&a).unwrap().queued_ops(), 5);
    // The first payment asked for the turn (a flag in the channel's row); the others changed
    // only the queue.
    assert_eq!(channel_rows, vec![1, 0, 0, 0, 0]);
}

/// A channel stored by the previous version (format 2, its queue inside) is read with its
/// queue, and its next change writes the queue as rows of their own.
#[test]
fn a_channel_of_format_2_is_still_read() {
    let (mut net, ids) = many_under_way(8);
    let node = step_until(&mut net, &ids[1], |n| n.queued_ops() >= 2)
        .expect("the mediator never queued two operations");
    let mut parts = node.parts();
    assert!(!parts.queued.is_empty());
    // Format 2: the core as format 3 writes it with the queue between the lines and the flags.
    parts.channels = node
        .friends()
        .map(|f| format_2(node.channel(f).unwrap()))
        .collect();
    parts.queued.clear();
    let mut back = Node::from_parts(identity(2), &parts).unwrap();
    assert_eq!(back.parts(), node.parts());
    back.mark_all_changed();
    let changes = back.take_changes();
    assert_eq!(
        changes.queued.iter().filter(|(_, v)| v.is_some()).count(),
        node.queued_ops()
    );
    assert!(
        changes
            .channels
            .iter()
            .all(|(_, v)| v.as_ref().unwrap()[0] == PART_VERSION)
    );
}

/// A channel's core in format 2, written field by field as that version did.
fn format_2(ch: &offst_core::protocol::channel::Channel) -> Vec<u8> {
    let tip = ch.tip();
    let v3 = ch.encode_core(&[]);
    // Format 3 is format 2 without the queue: split the encoding where the queue went (after
    // the current lines) by encoding the fields before it.
    let head = postcard::to_allocvec(&(
        ch.parties().id(ch.local_side()),
        ch.parties(),
        ch.id(),
        &tip.prev_state.lines,
        &tip.prev_header,
        &tip.last,
        &tip.reset,
        &ch.state().lines,
    ))
    .unwrap();
    assert_eq!(
        &v3[..head.len()],
        &head[..],
        "format 3 does not start as format 2 did"
    );
    let mut out = vec![2u8];
    out.extend_from_slice(&head);
    out.extend_from_slice(&postcard::to_allocvec(ch.queue()).unwrap());
    out.extend_from_slice(&v3[head.len()..]);
    out
}

/// A channel stored by the previous version (format 1, its pending requests inside) is read,
/// and its next change writes it in the new form.
#[test]
fn a_channel_of_format_1_is_still_read() {
    let (mut net, ids) = many_under_way(5);
    for _ in 0..6 {
        net.step().unwrap();
    }
    let node = net.node(&ids[1]).unwrap();
    let mut parts = node.parts();
    assert!(!parts.pending.is_empty(), "nothing pending to test with");
    parts.channels = node
        .friends()
        .map(|f| postcard::to_extend(node.channel(f).unwrap(), vec![1u8]).unwrap())
        .collect();
    parts.pending.clear();
    parts.queued.clear();
    let mut back = Node::from_parts(identity(2), &parts).unwrap();
    assert_eq!(back.parts(), node.parts());
    // Touch every channel: the rows of their pending requests are written out.
    back.mark_all_changed();
    let changes = back.take_changes();
    assert_eq!(changes.pending.len(), node.parts().pending.len());
}

/// A pending request whose channel is not stored means a damaged store: refused, not dropped.
#[test]
fn a_pending_request_without_its_channel_is_refused() {
    let (mut net, ids) = many_under_way(3);
    for _ in 0..6 {
        net.step().unwrap();
    }
    let node = net.node(&ids[1]).unwrap();
    let mut parts = node.parts();
    assert!(!parts.pending.is_empty());
    parts.channels.clear();
    let err = Node::from_parts(identity(2), &parts).unwrap_err();
    assert_corrupt(&err, "pending request");
}

/// The invoice a stored payment's or invoice's bytes are about: the part's version, then the
/// invoice terms, which begin with its id.
fn invoice_of(row: &[u8]) -> InvoiceId {
    InvoiceId(row[1..33].try_into().unwrap())
}

/// A step writes a payment's or an invoice's row only when its bytes changed (a collect that
/// reaches a payment the seller's "paid" already finished writes nothing), and still reports
/// every payment it reached, so that whoever waits for one to settle is woken. A store fed
/// with these rows holds exactly the node's payments and invoices at every step.
#[test]
fn a_step_writes_a_payment_or_invoice_row_only_when_it_changed() {
    let n = 20;
    let (mut net, ids) = many_under_way(n);
    let (buyer, seller) = (ids[0], ids[2]);
    let mut payments: std::collections::BTreeMap<_, Vec<u8>> = Default::default();
    let mut invoices: std::collections::BTreeMap<_, Vec<u8>> = Default::default();
    for id in [buyer, seller] {
        let mut all = net.node(&id).unwrap().clone();
        all.mark_all_changed();
        let first = all.take_changes();
        payments.extend(first.payments.into_iter().map(|(k, v)| (k, v.unwrap())));
        invoices.extend(first.invoices.into_iter().map(|(k, v)| (k, v.unwrap())));
        net.node_mut(&id).unwrap().take_changes();
    }
    let (mut payment_rows, mut invoice_rows, mut reached_unwritten) = (0u64, 0u64, 0u64);
    while net.step().unwrap() {
        for id in [buyer, seller] {
            let node = net.node_mut(&id).unwrap();
            let changes = node.take_changes();
            for (k, v) in &changes.payments {
                let v = v.as_ref().unwrap();
                assert_ne!(
                    payments.get(k),
                    Some(v),
                    "a payment row written again unchanged"
                );
                payments.insert(*k, v.clone());
                payment_rows += 1;
                assert!(changes.payments_reached.contains(&invoice_of(v)));
            }
            reached_unwritten += changes
                .payments_reached
                .iter()
                .filter(|k| {
                    !changes
                        .payments
                        .iter()
                        .any(|(_, w)| w.as_deref().map(invoice_of).as_ref() == Some(*k))
                })
                .count() as u64;
            for (k, v) in &changes.invoices {
                let v = v.as_ref().unwrap();
                assert_ne!(
                    invoices.get(k),
                    Some(v),
                    "an invoice row written again unchanged"
                );
                invoices.insert(*k, v.clone());
                invoice_rows += 1;
            }
            let parts = node.parts();
            let rows = if id == buyer { &payments } else { &invoices };
            let mut held: Vec<_> = rows.iter().map(|(k, v)| (*k, v.clone())).collect();
            let mut now = if id == buyer {
                parts.payments
            } else {
                parts.invoices
            };
            held.sort();
            now.sort();
            assert_eq!(held, now, "the store holds what the node has");
        }
    }
    let buyer_node = net.node(&buyer).unwrap();
    for row in payments.values() {
        assert!(
            buyer_node
                .payment_progress(&invoice_of(row))
                .unwrap()
                .settled
        );
    }
    assert_eq!(payments.len() as u64, n);
    // Steps reached payments without changing them, and wrote nothing for them.
    assert!(reached_unwritten >= n, "{reached_unwritten}");
    // After the payment's first row (its early commit went out with it): finished by the
    // seller's "accepted".
    assert_eq!(payment_rows, n);
    assert_eq!(invoice_rows, 2 * n);
}

/// Payments and invoices are stored under a row the node gives each when it is made (wallet
/// schema 10), not under their invoice id. Rows are unique; a store whose rows are numbered
/// otherwise (as the migration numbers them) is read back with its own rows, and what is made
/// afterwards gets rows above all of them; two rows holding the same payment or invoice are a
/// damaged store, not one silently dropped.
#[test]
fn payment_and_invoice_rows_are_unique_kept_on_load_and_never_reused() {
    let (mut net, ids) = many_under_way(6);
    let before = [ids[0], ids[2]].map(|who| (who, net.node(&who).unwrap().parts()));
    for ((who, parts), seed) in before.into_iter().zip([1u8, 3]) {
        let take = |p: &offst_core::protocol::node::Parts| -> Vec<(u64, Vec<u8>)> {
            if who == ids[0] {
                p.payments.clone()
            } else {
                p.invoices.clone()
            }
        };
        let put = |p: &mut offst_core::protocol::node::Parts, rows: Vec<(u64, Vec<u8>)>| {
            if who == ids[0] {
                p.payments = rows;
            } else {
                p.invoices = rows;
            }
        };
        let rows = take(&parts);
        assert_eq!(rows.len(), 6);
        let distinct: std::collections::BTreeSet<u64> = rows.iter().map(|(r, _)| *r).collect();
        assert_eq!(distinct.len(), rows.len(), "two records share a row");

        // Renumbered from 1,000 in the store: read back with those rows.
        let mut renumbered = parts.clone();
        put(
            &mut renumbered,
            (1_000u64..)
                .zip(rows.iter().map(|(_, b)| b.clone()))
                .collect(),
        );
        let mut back = Node::from_parts(identity(seed), &renumbered).unwrap();
        assert_eq!(take(&back.parts()), take(&renumbered));
        back.take_changes();
        // The next record made goes above them.
        let changes = if who == ids[0] {
            let invoice = net.invoice(ids[2], &hours(), 1, 500).unwrap();
            let plan = net.plan(&ids, 1).unwrap();
            back.pay(
                net.now_ms,
                &invoice,
                vec![plan],
                offst_core::sim::local::entropy(500, 2),
            )
            .unwrap();
            back.take_changes().payments
        } else {
            back.create_invoice(
                hours(),
                1,
                net.now_ms + 60_000,
                String::new(),
                offst_core::sim::local::entropy(501, 1),
            )
            .unwrap();
            back.take_changes().invoices
        };
        assert_eq!(changes.len(), 1);
        assert!(changes[0].0 >= 1_006, "row {} reused", changes[0].0);
        assert!(changes[0].1.is_some());

        // The same record in two rows.
        let mut doubled = parts.clone();
        let mut rows2 = rows.clone();
        rows2.push((9_999, rows[0].1.clone()));
        put(&mut doubled, rows2);
        let err = Node::from_parts(identity(seed), &doubled).unwrap_err();
        assert!(
            matches!(err, PartsError::Corrupt { part, .. } if part == (if who == ids[0] { "payment" } else { "invoice" })),
            "{err}"
        );
    }
}

/// A step compares only the pending requests its moves touched since the last one; a store
/// written whole again (`mark_all_changed`, as a first write into an empty store does) must
/// still get every request under way, including those no move touched since.
#[test]
fn a_whole_write_after_earlier_steps_holds_every_pending_request() {
    let (mut net, ids) = many_under_way(30);
    let b = ids[1];
    let mut checked = 0;
    net.node_mut(&b).unwrap().take_changes();
    while net.step().unwrap() {
        let node = net.node_mut(&b).unwrap();
        node.take_changes();
        let under_way: usize = node
            .friends()
            .map(|f| {
                let ch = node.channel(f).unwrap();
                ch.state().pending.len() + ch.tip().prev_state.pending.len()
            })
            .sum();
        if under_way == 0 {
            continue;
        }
        let mut whole = node.clone();
        whole.mark_all_changed();
        let changes = whole.take_changes();
        let mut stored = node.parts();
        stored.channels = changes
            .channels
            .into_iter()
            .filter_map(|(_, v)| v)
            .collect();
        stored.pending = changes.pending.into_iter().filter_map(|(_, v)| v).collect();
        stored.queued = changes.queued.into_iter().filter_map(|(_, v)| v).collect();
        let back = Node::from_parts(identity(2), &stored).unwrap();
        assert_eq!(
            back.parts(),
            node.parts(),
            "a whole write left requests out"
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} steps with requests under way");
}

/// Rows of format 4 for `node`'s channels: each core with version byte 4, and each pending
/// request's row saying where it stands in both states, as that format did.
fn format_4(node: &Node) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use offst_core::protocol::channel::StoredPending;
    let mut cores = Vec::new();
    let mut rows = Vec::new();
    for f in node.friends() {
        let ch = node.channel(f).unwrap();
        cores.push(ch.encode_core(&[4]));
        let (cur, signed) = (&ch.state().pending, &ch.tip().prev_state.pending);
        let mut ids: Vec<_> = cur.keys().chain(signed.keys()).copied().collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let row = match (cur.get(&id), signed.get(&id)) {
                (Some(c), Some(s)) if c == s => StoredPending::Both(c.clone()),
                (Some(c), Some(s)) => StoredPending::Differ {
                    current: c.clone(),
                    signed: s.clone(),
                },
                (Some(c), None) => StoredPending::Current(c.clone()),
                (None, Some(s)) => StoredPending::Signed(s.clone()),
                (None, None) => unreachable!(),
            };
            rows.push(postcard::to_extend(&(*f, id, row), vec![4u8]).unwrap());
        }
    }
    (cores, rows)
}

/// A mediator stored by the version before (format 4: each pending row says where its request
/// stands in both states) is read whole; each step after writes its changes in the new form
/// (the signed state's requests only), and a store holding the old rows and fed only with
/// those changes rebuilds the node at every step, until no row of the old form is left.
#[test]
fn a_channel_of_format_4_is_read_and_its_rows_rewritten_when_touched() {
    let (mut net, ids) = many_under_way(30);
    let b = ids[1];
    // Mid-run: requests frozen by the last moves and not yet signed, and some settled.
    let node = step_until(&mut net, &b, |n| {
        let only_current = n.friends().any(|f| {
            let ch = n.channel(f).unwrap();
            ch.state()
                .pending
                .keys()
                .any(|id| !ch.tip().prev_state.pending.contains_key(id))
        });
        only_current && n.parts().pending.len() >= 10
    })
    .expect("no request only in a current state");
    let mut parts = node.parts();
    let (cores, rows) = format_4(&node);
    assert!(rows.len() > parts.pending.len(), "the old form holds more");
    parts.channels = cores;
    parts.pending = rows;
    let back = Node::from_parts(identity(2), &parts).unwrap();
    assert_eq!(back.parts(), node.parts());
    for f in node.friends() {
        assert_eq!(back.channel(f), node.channel(f));
    }
    // The store as the old version left it, then fed with each step's changes.
    let key = |row: &[u8]| -> ([u8; 32], [u8; 32]) {
        (
            row[1..33].try_into().unwrap(),
            row[33..65].try_into().unwrap(),
        )
    };
    let mut channels: std::collections::BTreeMap<[u8; 32], Vec<u8>> = parts
        .channels
        .iter()
        .map(|c| {
            let core = offst_core::protocol::channel::Channel::decode_core(c[0], &c[1..]).unwrap();
            (*core.remote().as_bytes(), c.clone())
        })
        .collect();
    let mut pending: std::collections::BTreeMap<_, Vec<u8>> =
        parts.pending.iter().map(|r| (key(r), r.clone())).collect();
    // The queue's rows are as format 4 wrote them: keyed as the node's changes key them.
    let mut whole = back.clone();
    whole.mark_all_changed();
    let mut queued: std::collections::BTreeMap<_, Vec<u8>> = whole
        .take_changes()
        .queued
        .into_iter()
        .map(|(k, v)| (k, v.unwrap()))
        .collect();
    net.nodes.insert(b, back);
    while net.step().unwrap() {
        let node = net.node_mut(&b).unwrap();
        let changes = node.take_changes();
        put(&mut queued, changes.queued);
        put(
            &mut channels,
            changes
                .channels
                .into_iter()
                .map(|(f, v)| (*f.as_bytes(), v)),
        );
        put(
            &mut pending,
            changes
                .pending
                .into_iter()
                .map(|((f, id), v)| ((*f.as_bytes(), id.0), v)),
        );
        let mut stored = node.parts();
        stored.channels = channels.values().cloned().collect();
        stored.pending = pending.values().cloned().collect();
        stored.queued = queued.values().cloned().collect();
        let rebuilt = Node::from_parts(identity(2), &stored).unwrap();
        assert_eq!(
            rebuilt.parts(),
            node.parts(),
            "the store fell behind the node"
        );
    }
    assert!(
        channels.values().all(|c| c[0] == PART_VERSION),
        "a channel kept its old form"
    );
    assert!(
        pending.values().all(|r| r[0] == PART_VERSION),
        "a row kept its old form"
    );
}

/// Since format 5 a channel's current state is its signed state with the last move applied:
/// a store missing one of the signed state's rows gives another state than the move signed,
/// and the channel is refused as damaged, not read wrong.
#[test]
fn a_signed_state_that_does_not_give_the_last_moves_state_is_refused() {
    let (mut net, ids) = many_under_way(10);
    let b = ids[1];
    let mut parts = step_until(&mut net, &b, |n| n.parts().pending.len() >= 4)
        .expect("nothing signed under way")
        .parts();
    assert!(Node::from_parts(identity(2), &parts).is_ok());
    parts.pending.remove(1);
    let err = Node::from_parts(identity(2), &parts).unwrap_err();
    assert_corrupt(&err, "channel");
}
