//! Invitations: every form round-trips, each mistake gets its own error, and the QR code, drawn
//! to a PNG, scans back to the same invitation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use offst_core::invite::{Invitation, InviteError, RelayAddress};
use offst_core::protocol::identity::Identity;

const NOW: u64 = 1_800_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;

fn invitation() -> Invitation {
    let alice = Identity::from_seed([1; 32]);
    let relay = RelayAddress {
        addr: "relay.example.org:7360".into(),
        key: Identity::from_seed([9; 32]).id(),
    };
    Invitation::create(&alice, relay, "Alice (bakery)", NOW + DAY).unwrap()
}

#[test]
fn text_and_uri_forms_round_trip() {
    let inv = invitation();
    let text = inv.to_text();
    assert!(text.starts_with("OFFSTI1"));
    assert_eq!(Invitation::parse(&text, NOW).unwrap(), inv);
    assert_eq!(Invitation::parse(&inv.to_uri(), NOW).unwrap(), inv);
    // Case, spaces and line breaks from copying do not matter.
    let messy = format!("  {}\n{} ", text[..40].to_ascii_lowercase(), &text[40..]);
    assert_eq!(Invitation::parse(&messy, NOW).unwrap(), inv);
    assert_eq!(inv.terms.name, "Alice (bakery)");
}

#[test]
fn each_mistake_is_named() {
    let inv = invitation();
    let text = inv.to_text();
    // One character changed.
    let mut chars: Vec<char> = text.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let typo: String = chars.into_iter().collect();
    assert_eq!(
        Invitation::parse(&typo, NOW).unwrap_err(),
        InviteError::BadChecksum
    );
    // Cut short.
    assert_eq!(
        Invitation::parse(&text[..text.len() - 3], NOW).unwrap_err(),
        InviteError::BadChecksum
    );
    // Expired.
    assert!(matches!(
        Invitation::parse(&text, NOW + 2 * DAY).unwrap_err(),
        InviteError::Expired { ago_ms } if ago_ms == DAY
    ));
    // A future kind.
    let future = text.replacen("OFFSTI1", "OFFSTI2", 1);
    assert!(
        matches!(Invitation::parse(&future, NOW).unwrap_err(), InviteError::UnknownVersion(k) if k == "OFFSTI2")
    );
    // Not an invitation at all.
    assert_eq!(
        Invitation::parse("https://example.org", NOW).unwrap_err(),
        InviteError::NotAnInvitation
    );
    // A character base32 never uses.
    let bad = format!("{}0{}", &text[..20], &text[21..]);
    assert_eq!(
        Invitation::parse(&bad, NOW).unwrap_err(),
        InviteError::BadCharacter('0')
    );
    // The terms changed after signing (checksum recomputed, as a forger would).
    let mut forged = inv.clone();
    forged.terms.relay.addr = "evil.example:7360".into();
    assert_eq!(
        Invitation::parse(&forged.to_text(), NOW).unwrap_err(),
        InviteError::BadSignature
    );
    // Someone else's mail key under Alice's name.
    let mut forged = inv.clone();
    forged.terms.mail_key = offst_core::net::envelope::MailKey::of(&Identity::from_seed([66; 32]));
    assert_eq!(
        Invitation::parse(&forged.to_text(), NOW).unwrap_err(),
        InviteError::BadSignature
    );
}

#[test]
fn the_qr_code_scans_back_to_the_same_invitation() {
    let inv = invitation();
    let png_bytes = inv.qr_png(4).unwrap();
    // Decode the PNG as a scanner app would get it: a grey image.
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| buf[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1);
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(Invitation::parse(&content, NOW).unwrap(), inv);

    let svg = inv.qr_svg().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"));
    let term = inv.qr_terminal().unwrap();
    assert!(term.lines().count() > 10);
}

#[test]
fn bounds_are_checked_when_creating() {
    let alice = Identity::from_seed([1; 32]);
    let relay = RelayAddress {
        addr: "r:1".into(),
        key: alice.id(),
    };
    let err = Invitation::create(&alice, relay.clone(), &"x".repeat(65), NOW).unwrap_err();
    assert!(matches!(err, InviteError::Invalid(_)));
    let err = Invitation::create(
        &alice,
        RelayAddress {
            addr: String::new(),
            ..relay
        },
        "a",
        NOW,
    )
    .unwrap_err();
    assert!(matches!(err, InviteError::Invalid(_)));
}

fn payment_request() -> offst_core::invite::PaymentRequest {
    use offst_core::invite::PaymentRequest;
    use offst_core::protocol::amount::Currency;
    use offst_core::protocol::node::Node;
    let seller = Identity::from_seed([5; 32]);
    let mut node = Node::new(
        seller.clone(),
        offst_core::protocol::amount::Rate { base: 0, ppm: 0 },
    );
    let invoice = node
        .create_invoice(
            Currency::new("hours").unwrap(),
            7,
            NOW + DAY,
            "bread".into(),
            [3; 32],
        )
        .unwrap();
    let relay = RelayAddress {
        addr: "127.0.0.1:7360".into(),
        key: Identity::from_seed([9; 32]).id(),
    };
    PaymentRequest::create(&seller, invoice, relay).unwrap()
}

#[test]
fn a_link_opens_an_invitation_or_a_payment_request_and_nothing_else() {
    use offst_core::invite::Link;
    let inv = invitation();
    assert!(matches!(Link::parse(&inv.to_uri(), NOW).unwrap(), Link::Invitation(i) if i == inv));
    let req = payment_request();
    assert!(
        matches!(Link::parse(&req.to_uri(), NOW).unwrap(), Link::PaymentRequest(r) if r == req)
    );
    assert!(matches!(
        Link::parse(&req.to_text(), NOW).unwrap(),
        Link::PaymentRequest(_)
    ));
    // Checked as each kind is: an expired request, a damaged invitation, not a link at all.
    assert!(matches!(
        Link::parse(&req.to_uri(), NOW + 2 * DAY).unwrap_err(),
        InviteError::Expired { .. }
    ));
    let mut damaged = inv.to_uri();
    damaged.truncate(damaged.len() - 3);
    assert!(Link::parse(&damaged, NOW).is_err());
    assert_eq!(
        Link::parse("https://example.org/pay", NOW).unwrap_err(),
        InviteError::NotAnInvitation
    );
    // A receipt is not something a link opens.
    let receipt = format!("offst:{}AAAA", offst_core::invite::RECEIPT_PREFIX);
    assert!(matches!(
        Link::parse(&receipt, NOW).unwrap_err(),
        InviteError::Invalid(why) if why.contains("receipt")
    ));
}

#[test]
fn a_payment_request_carries_the_sellers_contact_signed() {
    use offst_core::invite::PaymentRequest;
    let req = payment_request();
    let back = PaymentRequest::parse(&req.to_uri(), NOW).unwrap();
    assert_eq!(back, req);
    assert!(req.qr_svg().unwrap().contains("<svg"));
    // Redirected to another relay by someone in between: refused.
    let mut moved = req.clone();
    moved.relay.addr = "evil.example:1".into();
    assert_eq!(
        PaymentRequest::parse(&moved.to_text(), NOW).unwrap_err(),
        InviteError::BadSignature
    );
    // Expired.
    assert!(matches!(
        PaymentRequest::parse(&req.to_text(), NOW + 2 * DAY).unwrap_err(),
        InviteError::Expired { .. }
    ));
    // The wrong kind is named both ways.
    assert_eq!(
        Invitation::parse(&req.to_text(), NOW).unwrap_err(),
        InviteError::WrongKind {
            expected: "an invitation",
            found: "a payment request"
        }
    );
    assert_eq!(
        PaymentRequest::parse(&invitation().to_text(), NOW).unwrap_err(),
        InviteError::WrongKind {
            expected: "a payment request",
            found: "an invitation"
        }
    );
}

/// A payment request's two signatures (the invoice's and the request's own, both the
/// seller's) are checked in one batch: each one alone being wrong, swapped for a signature by
/// someone else, or the invoice out of bounds is refused, and only the request as signed is
/// accepted.
#[test]
fn a_payment_request_is_refused_when_either_signature_is_wrong() {
    use offst_core::protocol::identity::Signature;
    let req = payment_request();
    assert_eq!(req.verify(NOW), Ok(()));
    // The invoice's terms changed after signing: the request's own signature still holds.
    let mut amount = req.clone();
    amount.invoice.terms.amount = 1;
    assert_eq!(amount.verify(NOW), Err(InviteError::BadSignature));
    // The request's signature broken, the invoice intact.
    let mut own = req.clone();
    own.signature = Signature([7; 64]);
    assert_eq!(own.verify(NOW), Err(InviteError::BadSignature));
    // The invoice's signature broken, the request's intact.
    let mut invoice_sig = req.clone();
    invoice_sig.invoice.signature = Signature([7; 64]);
    assert_eq!(invoice_sig.verify(NOW), Err(InviteError::BadSignature));
    // The two signatures swapped (each valid, over the other message).
    let mut swapped = req.clone();
    std::mem::swap(&mut swapped.signature, &mut swapped.invoice.signature);
    assert_eq!(swapped.verify(NOW), Err(InviteError::BadSignature));
    // An invoice out of bounds (a memo too long), signed by its seller all the same.
    let seller = Identity::from_seed([5; 32]);
    let mut long = req.clone();
    long.invoice.terms.memo = "x".repeat(10_000);
    long.invoice.signature = seller.sign("offst invoice v1", &long.invoice.terms);
    assert_eq!(long.verify(NOW), Err(InviteError::BadSignature));
    // Through the text form too.
    assert_eq!(
        offst_core::invite::PaymentRequest::parse(&invoice_sig.to_text(), NOW).unwrap_err(),
        InviteError::BadSignature
    );
}
