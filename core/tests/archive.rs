//! Finished payments and invoices leave a node's memory `ARCHIVE_AFTER_EXPIRY_MS` past their
//! invoice's expiry, handed to the store's archive in the step that forgets them; a request
//! that arrives for an invoice the seller archived is cancelled, so no credit stays frozen.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::hours;
use offst_core::protocol::amount::Rate;
use offst_core::protocol::bounds::ARCHIVE_AFTER_EXPIRY_MS;
use offst_core::protocol::identity::NodeId;
use offst_core::protocol::node::ProtocolError;
use offst_core::protocol::node::{
    ArchivedRole, InvoiceStatus, PaymentStatus, archived_invoice, archived_payment,
};
use offst_core::sim::local::{LocalNet, LocalNetError};

/// Let `node` tick at `now_ms` and return what its step archived.
fn tick(
    net: &mut LocalNet,
    node: NodeId,
    now_ms: u64,
) -> Vec<offst_core::protocol::node::Archived> {
    let n = net.node_mut(&node).unwrap();
    let _ = n.take_changes();
    let out = n.tick(now_ms);
    let changes = n.take_changes();
    net.absorb(node, out);
    changes.archived
}

/// Credit frozen in every channel of `net`'s chain `ids`, both ways.
fn frozen(net: &LocalNet, ids: &[NodeId]) -> u64 {
    ids.windows(2)
        .map(|w| {
            let ch = net.node(&w[0]).unwrap().channel(&w[1]).unwrap();
            let line = &ch.state().lines[&hours()];
            line.frozen_by(offst_core::protocol::channel::Side::First)
                + line.frozen_by(offst_core::protocol::channel::Side::Second)
        })
        .sum()
}

#[test]
fn a_finished_payment_and_its_invoice_are_archived_past_the_grace_and_read_back() {
    let (mut net, ids) = common::chain(3, 1_000, Rate { base: 1, ppm: 0 });
    let (a, c) = (ids[0], ids[2]);
    let invoice = net.buy_along(&ids, &hours(), 10, 1).unwrap();
    let id = invoice.terms.id;
    let due = invoice.terms.expires_at_ms + ARCHIVE_AFTER_EXPIRY_MS;
    assert_eq!(
        net.node(&a).unwrap().payment(&id).unwrap().0,
        PaymentStatus::Completed
    );

    // A moment early: kept.
    assert!(tick(&mut net, a, due - 1).is_empty());
    assert!(tick(&mut net, c, due - 1).is_empty());

    let archived = tick(&mut net, a, due);
    assert_eq!(archived.len(), 1);
    assert_eq!(
        (
            archived[0].role,
            archived[0].invoice,
            archived[0].expires_at_ms
        ),
        (ArchivedRole::Payment, id, invoice.terms.expires_at_ms)
    );
    assert!(net.node(&a).unwrap().payment(&id).is_none());
    let p = archived_payment(&archived[0].data).unwrap();
    assert_eq!(p.status, PaymentStatus::Completed);
    assert!(p.receipt.unwrap().verify().is_ok());
    assert_eq!(p.invoice.terms.id, id);

    let archived = tick(&mut net, c, due);
    assert_eq!(archived.len(), 1);
    assert_eq!(archived[0].role, ArchivedRole::Invoice);
    assert!(net.node(&c).unwrap().invoice_status(&id).is_none());
    let (inv, status) = archived_invoice(&archived[0].data).unwrap();
    assert_eq!(inv.terms.id, id);
    assert!(matches!(status, InvoiceStatus::Paid(_)));
    // Archived once: the next tick has nothing more.
    assert!(tick(&mut net, c, due + 1).is_empty());
    net.run().unwrap();
    assert_eq!(net.net(&c, &hours()), 10);
}

#[test]
fn a_request_for_an_archived_invoice_is_cancelled_and_nothing_stays_frozen() {
    let (mut net, ids) = common::chain(3, 1_000, Rate { base: 1, ppm: 0 });
    let (a, c) = (ids[0], ids[2]);
    let invoice = net.invoice(c, &hours(), 10, 1).unwrap();
    let id = invoice.terms.id;
    let plan = net.plan(&ids, 10).unwrap();
    let out = net
        .node_mut(&a)
        .unwrap()
        .pay(
            0,
            &invoice,
            vec![plan],
            offst_core::sim::local::entropy(1, 2),
        )
        .unwrap();
    net.absorb(a, out);
    // The seller's clock passes the expiry and the grace before the requests arrive: the open
    // invoice is cancelled and archived in one tick.
    let due = invoice.terms.expires_at_ms + ARCHIVE_AFTER_EXPIRY_MS;
    let archived = tick(&mut net, c, due);
    assert_eq!(archived.len(), 1);
    assert!(matches!(
        archived_invoice(&archived[0].data).unwrap().1,
        InvoiceStatus::Cancelled
    ));
    // The buyer's payment is in flight: never archived, however late.
    assert!(tick(&mut net, a, due + ARCHIVE_AFTER_EXPIRY_MS).is_empty());
    // The buyer's early commit reaches a seller that no longer holds the invoice: refused (a
    // wallet drops it), as for an invoice the seller forgot. Everything else is delivered.
    let mut refused = 0;
    loop {
        match net.step() {
            Ok(true) => {}
            Ok(false) => break,
            Err(LocalNetError::Protocol(ProtocolError::UnknownInvoice)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 1);
    assert_eq!(
        net.node(&a).unwrap().payment(&id).unwrap().0,
        PaymentStatus::Cancelled
    );
    assert_eq!(frozen(&net, &ids), 0);
    assert_eq!(net.net(&a, &hours()), 0);
    assert_eq!(net.net(&c, &hours()), 0);
    // Now finished: archived at the buyer's next tick.
    let archived = tick(&mut net, a, due + ARCHIVE_AFTER_EXPIRY_MS);
    assert_eq!(archived.len(), 1);
    assert_eq!(
        archived_payment(&archived[0].data).unwrap().status,
        PaymentStatus::Cancelled
    );
}
