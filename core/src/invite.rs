//! Invitations: how two people become friends. The inviter shows one (a QR code, a link, or
//! text); the other scans it and learns everything needed to reach the inviter: its id, its
//! mail key, its relay (address and key) and a display name, signed by the inviter and valid
//! until an expiry.
//!
//! A [`PaymentRequest`] is the seller's counterpart: an invoice with the seller's mail key and
//! relay, so that a buyer who is not the seller's friend can reach it to commit.
//!
//! Text form: `OFFST`, a kind letter (`I` invitation, `P` payment request) and a version digit,
//! followed by RFC 4648 base32 (no padding) of the postcard encoding and a 4-byte BLAKE3
//! checksum. Upper case, so that a QR code can use its compact alphanumeric mode. The URI form
//! is `offst:` + the text form.

use serde::{Deserialize, Serialize};

use crate::net::envelope::MailKey;
use crate::protocol::identity::{Identity, NodeId, Signature};

/// An invitation's text prefix: kind and version.
pub const PREFIX: &str = "OFFSTI1";
/// A payment request's text prefix.
pub const PAYMENT_PREFIX: &str = "OFFSTP1";
/// Known kinds, by the first six characters of their prefix.
/// Kind and version prefix of a receipt's text form.
pub const RECEIPT_PREFIX: &str = "OFFSTR1";
const KINDS: [(&str, &str); 3] = [
    ("OFFSTI", "an invitation"),
    ("OFFSTP", "a payment request"),
    ("OFFSTR", "a receipt"),
];
/// The URI scheme.
pub const URI_SCHEME: &str = "offst:";
/// Longest display name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest relay address (`host:port`).
pub const MAX_ADDR_LEN: usize = 255;
const CHECKSUM_LEN: usize = 4;
const DOMAIN: &str = "offst invitation v1";

pub use crate::net::wire::RelayAddress;

/// What an invitation says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvitationTerms {
    /// The inviter.
    pub inviter: NodeId,
    /// The inviter's mail key (signed by the inviter too).
    pub mail_key: MailKey,
    /// The inviter's relay.
    pub relay: RelayAddress,
    /// The name the inviter goes by.
    pub name: String,
    /// Not valid after this, ms since the Unix epoch.
    pub expires_ms: u64,
}

/// A signed invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The terms.
    pub terms: InvitationTerms,
    /// The inviter's signature over them.
    pub signature: Signature,
}

/// Why an invitation was not accepted. Each says what the person can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// Not an Offst invitation or payment request at all.
    #[error("this is not an Offst invitation or payment request")]
    NotAnInvitation,
    /// The other kind (a payment request where an invitation was expected, or back).
    #[error("this is {found}, not {expected}")]
    WrongKind {
        /// What was expected.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// An invitation format this app does not know.
    #[error("this invitation is of a newer kind ({0}); update the app")]
    UnknownVersion(String),
    /// A character outside the alphabet.
    #[error("the invitation has a character that can't be in one ({0:?}); was it copied whole?")]
    BadCharacter(char),
    /// The checksum does not match: a typo or a cut.
    #[error("the invitation is damaged (checksum mismatch); copy or scan it again")]
    BadChecksum,
    /// Decodes but is not well formed.
    #[error("the invitation is malformed: {0}")]
    Malformed(String),
    /// Signed by someone other than the inviter it names.
    #[error("the invitation is not signed by the person it names; do not use it")]
    BadSignature,
    /// Past its expiry.
    #[error("the invitation expired {ago_ms} ms ago; ask for a new one")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// A field out of bounds when creating.
    #[error("{0}")]
    Invalid(String),
    /// The QR code could not be made.
    #[error("could not draw the QR code: {0}")]
    Qr(String),
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let h = blake3::derive_key("offst invitation checksum v1", body);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&h[..CHECKSUM_LEN]);
    out
}

impl Invitation {
    /// Make and sign an invitation.
    pub fn create(
        identity: &Identity,
        relay: RelayAddress,
        name: &str,
        expires_ms: u64,
    ) -> Result<Invitation, InviteError> {
        let name = name.trim();
        if name.chars().count() > MAX_NAME_LEN {
            return Err(InviteError::Invalid(format!(
                "the name is longer than {MAX_NAME_LEN} characters"
            )));
        }
        if relay.addr.is_empty() || relay.addr.len() > MAX_ADDR_LEN {
            return Err(InviteError::Invalid(format!(
                "the relay address must be 1 to {MAX_ADDR_LEN} bytes"
            )));
        }
        let terms = InvitationTerms {
            inviter: identity.id(),
            mail_key: MailKey::of(identity),
            relay,
            name: name.to_string(),
            expires_ms,
        };
        let signature = identity.sign(DOMAIN, &terms);
        Ok(Invitation { terms, signature })
    }

    /// Check the signatures and the expiry at `now_ms`.
    pub fn verify(&self, now_ms: u64) -> Result<(), InviteError> {
        let t = &self.terms;
        t.inviter
            .verify(DOMAIN, t, &self.signature)
            .map_err(|_| InviteError::BadSignature)?;
        if t.mail_key.owner != t.inviter || t.mail_key.verify().is_err() {
            return Err(InviteError::BadSignature);
        }
        if now_ms > t.expires_ms {
            return Err(InviteError::Expired {
                ago_ms: now_ms - t.expires_ms,
            });
        }
        Ok(())
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        to_text(PREFIX, self)
    }

    /// The URI form (`offst:OFFSTI1...`).
    pub fn to_uri(&self) -> String {
        format!("{URI_SCHEME}{}", self.to_text())
    }

    /// Read the text or URI form (spaces, line breaks and case ignored), and check it at
    /// `now_ms`.
    pub fn parse(input: &str, now_ms: u64) -> Result<Invitation, InviteError> {
        let inv: Invitation = from_text(PREFIX, input)?;
        inv.verify(now_ms)?;
        Ok(inv)
    }

    /// The QR code as an SVG document.
    pub fn qr_svg(&self) -> Result<String, InviteError> {
        qr_svg(&self.to_uri())
    }

    /// The QR code as text for a terminal (two modules per character, light background).
    pub fn qr_terminal(&self) -> Result<String, InviteError> {
        qr_terminal(&self.to_uri())
    }

    /// The QR code as a PNG image, `scale` pixels per module, with the standard quiet zone.
    pub fn qr_png(&self, scale: u32) -> Result<Vec<u8>, InviteError> {
        qr_png(&self.to_uri(), scale)
    }
}

/// What an `offst:` link (or a scanned code, or pasted text) holds: the one entry point for
/// links opened from another app, a web page or an NFC tag. Reading a link never acts on it:
/// the wallet shows it and waits for its owner to confirm.
#[derive(Clone, Debug)]
pub enum Link {
    /// An invitation to become friends.
    Invitation(Invitation),
    /// A request to be paid.
    PaymentRequest(PaymentRequest),
}

impl Link {
    /// Read and check (signature, expiry at `now_ms`) an invitation or a payment request, in
    /// text or `offst:` form. A receipt, or anything else, is refused with the reason.
    pub fn parse(input: &str, now_ms: u64) -> Result<Link, InviteError> {
        match Invitation::parse(input, now_ms) {
            Err(InviteError::WrongKind {
                found: "a payment request",
                ..
            }) => PaymentRequest::parse(input, now_ms).map(Link::PaymentRequest),
            Err(InviteError::WrongKind { found, .. }) => Err(InviteError::Invalid(format!(
                "this is {found}, which a link does not open; check it with `offst receipt verify`"
            ))),
            other => other.map(Link::Invitation),
        }
    }
}

fn to_text<T: Serialize>(prefix: &str, value: &T) -> String {
    let mut body = postcard::to_allocvec(value).unwrap_or_default();
    body.extend_from_slice(&checksum(&body));
    format!("{prefix}{}", data_encoding::BASE32_NOPAD.encode(&body))
}

fn from_text<T: serde::de::DeserializeOwned>(prefix: &str, input: &str) -> Result<T, InviteError> {
    let compact: String = input
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    let text = compact
        .strip_prefix(&URI_SCHEME.to_ascii_uppercase())
        .unwrap_or(&compact);
    if !text.starts_with("OFFST") {
        return Err(InviteError::NotAnInvitation);
    }
    let Some(b32) = text.strip_prefix(prefix) else {
        let kind = |p: &str| {
            KINDS
                .iter()
                .find(|(k, _)| p.starts_with(k))
                .map(|(_, w)| *w)
        };
        return match (kind(prefix), kind(text)) {
            (Some(expected), Some(found)) if expected != found => {
                Err(InviteError::WrongKind { expected, found })
            }
            _ => Err(InviteError::UnknownVersion(
                text.chars().take(prefix.len()).collect(),
            )),
        };
    };
    if let Some(c) = b32
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || ('2'..='7').contains(c)))
    {
        return Err(InviteError::BadCharacter(c));
    }
    let bytes = data_encoding::BASE32_NOPAD
        .decode(b32.as_bytes())
        .map_err(|_| InviteError::BadChecksum)?;
    if bytes.len() < CHECKSUM_LEN {
        return Err(InviteError::BadChecksum);
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if checksum(body) != sum {
        return Err(InviteError::BadChecksum);
    }
    postcard::from_bytes(body).map_err(|e| InviteError::Malformed(e.to_string()))
}

fn qr_code(uri: &str) -> Result<qrcode::QrCode, InviteError> {
    // Upper-case base32 fits QR's alphanumeric mode (the scheme too).
    qrcode::QrCode::with_error_correction_level(uri.to_ascii_uppercase(), qrcode::EcLevel::M)
        .map_err(|e| InviteError::Qr(e.to_string()))
}

/// A QR code as a grey-scale PNG, `scale` (1 to 32) pixels per module, with the quiet zone.
fn qr_png(uri: &str, scale: u32) -> Result<Vec<u8>, InviteError> {
    let code = qr_code(uri)?;
    let modules = code.width() as u32;
    let quiet = 4u32;
    let scale = scale.clamp(1, 32);
    let side = (modules + 2 * quiet) * scale;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; (side * side) as usize];
    for y in 0..modules {
        for x in 0..modules {
            let dark = colors
                .get((y * modules + x) as usize)
                .is_some_and(|c| *c == qrcode::Color::Dark);
            if !dark {
                continue;
            }
            for dy in 0..scale {
                let row = ((quiet + y) * scale + dy) * side;
                let start = (row + (quiet + x) * scale) as usize;
                if let Some(px) = pixels.get_mut(start..start + scale as usize) {
                    px.fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc
            .write_header()
            .map_err(|e| InviteError::Qr(e.to_string()))?;
        w.write_image_data(&pixels)
            .map_err(|e| InviteError::Qr(e.to_string()))?;
    }
    Ok(out)
}

fn qr_svg(uri: &str) -> Result<String, InviteError> {
    Ok(qr_code(uri)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// An invoice to share: the signed invoice, and how to reach the seller (its mail key and
/// relay), signed by the seller. A buyer needs it to commit: the commit goes to the seller
/// directly, who may be a stranger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// The invoice.
    pub invoice: crate::protocol::payment::Invoice,
    /// The seller's mail key.
    pub mail_key: MailKey,
    /// The seller's relay.
    pub relay: RelayAddress,
    /// The seller's signature over the invoice id, the mail key and the relay.
    pub signature: Signature,
}

const PAYMENT_DOMAIN: &str = "offst payment request v1";

impl PaymentRequest {
    /// Wrap `invoice` (issued by `seller`) with the seller's contact.
    pub fn create(
        seller: &Identity,
        invoice: crate::protocol::payment::Invoice,
        relay: RelayAddress,
    ) -> Result<PaymentRequest, InviteError> {
        if invoice.terms.seller != seller.id() {
            return Err(InviteError::Invalid("the invoice is someone else's".into()));
        }
        if relay.addr.is_empty() || relay.addr.len() > MAX_ADDR_LEN {
            return Err(InviteError::Invalid(format!(
                "the relay address must be 1 to {MAX_ADDR_LEN} bytes"
            )));
        }
        let mail_key = MailKey::of(seller);
        let signature = seller.sign(PAYMENT_DOMAIN, &(invoice.terms.id, mail_key, &relay));
        Ok(PaymentRequest {
            invoice,
            mail_key,
            relay,
            signature,
        })
    }

    /// Check every signature and the expiry at `now_ms`: the mail key, the invoice (its bounds
    /// and the seller's signature) and the seller's signature over this request. The two
    /// signatures, both the seller's, are checked in one batch (about a third cheaper than
    /// one after the other, and a payment makes this check once); either one bad is
    /// [`InviteError::BadSignature`], as it was checked alone.
    pub fn verify(&self, now_ms: u64) -> Result<(), InviteError> {
        let t = &self.invoice.terms;
        if self.mail_key.owner != t.seller || self.mail_key.verify().is_err() {
            return Err(InviteError::BadSignature);
        }
        let mut batch = crate::protocol::identity::SignatureBatch::new();
        self.invoice
            .queue_check(&mut batch)
            .map_err(|_| InviteError::BadSignature)?;
        batch.queue(
            &t.seller,
            PAYMENT_DOMAIN,
            &(t.id, self.mail_key, &self.relay),
            &self.signature,
        );
        if !batch.verify() {
            return Err(InviteError::BadSignature);
        }
        if now_ms >= t.expires_at_ms {
            return Err(InviteError::Expired {
                ago_ms: now_ms - t.expires_at_ms,
            });
        }
        Ok(())
    }

    /// The text form (`OFFSTP1...`).
    pub fn to_text(&self) -> String {
        to_text(PAYMENT_PREFIX, self)
    }

    /// The URI form.
    pub fn to_uri(&self) -> String {
        format!("{URI_SCHEME}{}", self.to_text())
    }

    /// Read the text or URI form and check it at `now_ms`.
    pub fn parse(input: &str, now_ms: u64) -> Result<PaymentRequest, InviteError> {
        let req: PaymentRequest = from_text(PAYMENT_PREFIX, input)?;
        req.verify(now_ms)?;
        Ok(req)
    }

    /// The QR code as an SVG document.
    pub fn qr_svg(&self) -> Result<String, InviteError> {
        qr_svg(&self.to_uri())
    }

    /// The QR code as text for a terminal.
    pub fn qr_terminal(&self) -> Result<String, InviteError> {
        qr_terminal(&self.to_uri())
    }

    /// The QR code as a PNG image, `scale` pixels per module, with the standard quiet zone.
    pub fn qr_png(&self, scale: u32) -> Result<Vec<u8>, InviteError> {
        qr_png(&self.to_uri(), scale)
    }
}

/// A receipt's text form (`OFFSTR1...`), to hand to anyone who wants proof of a payment.
pub fn receipt_to_text(receipt: &crate::protocol::payment::Receipt) -> String {
    to_text(RECEIPT_PREFIX, receipt)
}

/// Read a receipt's text form and check it offline: the seller's signature over the paid
/// terms, and both secrets against their locks.
pub fn parse_receipt(input: &str) -> Result<crate::protocol::payment::Receipt, InviteError> {
    let receipt: crate::protocol::payment::Receipt = from_text(RECEIPT_PREFIX, input)?;
    receipt.verify().map_err(|_| InviteError::BadSignature)?;
    Ok(receipt)
}

fn qr_terminal(uri: &str) -> Result<String, InviteError> {
    Ok(qr_code(uri)?
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}
