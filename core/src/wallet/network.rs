//! The wallet's side of the network: its own relay, its friends' contacts (mail key and
//! relay), invitations and friend requests, and turning envelopes into durable steps.
//!
//! An envelope's body is one tag byte and a payload: [`super::MAIL_PROTOCOL`] and an encoded
//! protocol message, [`super::MAIL_CONTROL`] and a postcard [`Control`], or
//! [`super::MAIL_INTRODUCED`] and a protocol message for someone who is not a friend with the
//! sender's mail key and relay (a buyer's commit, a seller's answer).

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::history::{self, NewEntry};
use super::{
    Delivery, EventKind, MAIL_CONTROL, MAIL_INTRODUCED, MAIL_PROTOCOL, Wallet, WalletError, store,
};
use crate::invite::Invitation;
use crate::net::envelope::{self, EnvelopeError, MailKey, Opened, REPLAY_WINDOW_MS};
use crate::net::wire::RelayAddress;
use crate::protocol::identity::NodeId;
use crate::protocol::message::Message;
use crate::protocol::node::NodeError;

/// How long a wallet that moved keeps draining its old relay: as long as the relay keeps mail.
pub const DRAIN_PERIOD_MS: u64 = 30 * 24 * 3600 * 1000;

/// How often receiving mail forgets the envelope ids that left the replay window
/// ([`Wallet::prune_seen`]).
pub const SEEN_PRUNE_EVERY_MS: u64 = 3600 * 1000;

/// Messages between wallets that are not part of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// "I scanned your invitation; let us be friends."
    FriendRequest {
        /// The name the sender goes by.
        name: String,
        /// The sender's mail key.
        mail_key: MailKey,
        /// The sender's relay.
        relay: RelayAddress,
    },
    /// "I moved to this relay; send me mail there."
    RelayMoved {
        /// The new relay.
        relay: RelayAddress,
    },
    /// "I accepted your request."
    FriendAccepted {
        /// The name the sender goes by.
        name: String,
        /// The sender's mail key.
        mail_key: MailKey,
        /// The sender's relay.
        relay: RelayAddress,
    },
}

/// How to reach a friend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    /// The friend.
    pub id: NodeId,
    /// Their name, as they gave it.
    pub name: String,
    /// Their mail key.
    pub mail_key: MailKey,
    /// Their relay.
    pub relay: RelayAddress,
}

/// A friend request waiting for the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendRequest {
    /// Who asks.
    pub from: Contact,
    /// When it arrived.
    pub received_ms: u64,
}

fn mail_key_bytes(k: &MailKey) -> Vec<u8> {
    postcard::to_allocvec(k).unwrap_or_default()
}

fn contact_from_row(
    friend: Vec<u8>,
    name: String,
    mail_key: Vec<u8>,
    relay_key: Vec<u8>,
    relay_addr: String,
) -> Result<Contact, WalletError> {
    let bad = |what: &str| WalletError::Corrupt {
        detail: format!("a stored contact has a bad {what}"),
    };
    let id = NodeId::from_bytes(friend.try_into().map_err(|_| bad("id"))?);
    let mail_key: MailKey = postcard::from_bytes(&mail_key).map_err(|_| bad("mail key"))?;
    let key = NodeId::from_bytes(relay_key.try_into().map_err(|_| bad("relay key"))?);
    Ok(Contact {
        id,
        name,
        mail_key,
        relay: RelayAddress {
            addr: relay_addr,
            key,
        },
    })
}

/// How to reach the sender of a protocol message to someone who is not its friend: its signed
/// mail key and its relay. The body of a [`super::MAIL_INTRODUCED`] envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Introduction {
    mail_key: MailKey,
    relay: RelayAddress,
}

#[derive(Serialize, Deserialize)]
struct Introduced {
    from: Introduction,
    #[serde(with = "serde_bytes")]
    message: Vec<u8>,
}

/// The outbox bytes of `message` (encoded) sent with `me`.
pub(crate) fn introduce(me: &Introduction, message: Vec<u8>) -> Result<Vec<u8>, WalletError> {
    postcard::to_allocvec(&Introduced {
        from: me.clone(),
        message,
    })
    .map_err(|e| WalletError::Storage(e.to_string()))
}

/// The sender's contact and the message of an introduced envelope's payload from `sender`; a
/// mail key that is not the sender's, or does not verify, is refused.
fn read_introduced(sender: NodeId, payload: &[u8]) -> Result<(Contact, Message), String> {
    let Introduced { from, message } =
        crate::protocol::identity::decode(payload).map_err(|e| e.to_string())?;
    if from.mail_key.owner != sender || from.mail_key.verify().is_err() {
        return Err("bad mail key".into());
    }
    let message = Message::decode(&message).map_err(|e| e.to_string())?;
    let contact = Contact {
        id: sender,
        name: sender.short(),
        mail_key: from.mail_key,
        relay: from.relay,
    };
    Ok((contact, message))
}

impl Wallet {
    /// The outbox entry this wallet writes for `message` to someone who is not a friend: the
    /// message with our mail key and relay. For tests and in-process networks that hand
    /// entries over directly; a wallet's own steps do this by themselves.
    #[doc(hidden)]
    pub fn introduced(
        &self,
        to: NodeId,
        message: &Message,
    ) -> Result<super::Outgoing, WalletError> {
        let me = self
            .introduction()?
            .ok_or_else(|| WalletError::Storage("no relay to be answered at".into()))?;
        let bytes = message
            .encode()
            .map_err(|e| WalletError::Storage(e.to_string()))?;
        Ok(super::Outgoing {
            seq: 0,
            to,
            kind: MAIL_INTRODUCED,
            message: introduce(&me, bytes)?,
        })
    }

    /// Handle an outbox entry of another wallet, `from`, handed over directly (tests and
    /// in-process networks): a protocol message, or one for a stranger with its sender's
    /// contact. Like [`Wallet::receive`].
    pub fn receive_outgoing(
        &mut self,
        from: NodeId,
        item: &super::Outgoing,
    ) -> Result<Delivery, WalletError> {
        match item.kind {
            MAIL_INTRODUCED => match read_introduced(from, &item.message) {
                Ok((contact, message)) => self
                    .handle_protocol(from, message, |tx, d| remember_introduced(tx, &contact, d)),
                Err(why) => Ok(Delivery::Refused(why)),
            },
            _ => self.receive(from, &item.message),
        }
    }
}

/// Record how to reach `c.id`, who wrote to us without being a friend, if the node took its
/// message (`d`): its mail key and relay, under its short id unless we already know it by a
/// name. A stranger whose message was refused is not recorded, so strangers cannot fill the
/// contacts with messages that mean nothing to us.
fn remember_introduced(
    tx: &rusqlite::Connection,
    c: &Contact,
    d: &Delivery,
) -> Result<(), WalletError> {
    match d {
        Delivery::Applied => write_contact(tx, c, false),
        _ => Ok(()),
    }
}

fn put_contact(tx: &rusqlite::Connection, c: &Contact) -> Result<(), WalletError> {
    write_contact(tx, c, true)
}

/// Insert or update `c`; an existing contact's name is replaced only with `rename`. A contact
/// that would not change is not written: a buyer's or seller's every message repeats theirs,
/// and a write costs a page in the commit and the contacts read from memory
/// ([`store::ReadCache`]).
fn write_contact(tx: &rusqlite::Connection, c: &Contact, rename: bool) -> Result<(), WalletError> {
    let sql = if rename {
        "INSERT INTO contacts (friend, name, mail_key, relay_key, relay_addr) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(friend) DO UPDATE SET name = excluded.name, mail_key = excluded.mail_key,
             relay_key = excluded.relay_key, relay_addr = excluded.relay_addr
         WHERE name IS NOT excluded.name OR mail_key IS NOT excluded.mail_key
             OR relay_key IS NOT excluded.relay_key OR relay_addr IS NOT excluded.relay_addr"
    } else {
        "INSERT INTO contacts (friend, name, mail_key, relay_key, relay_addr) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(friend) DO UPDATE SET mail_key = excluded.mail_key,
             relay_key = excluded.relay_key, relay_addr = excluded.relay_addr
         WHERE mail_key IS NOT excluded.mail_key OR relay_key IS NOT excluded.relay_key
             OR relay_addr IS NOT excluded.relay_addr"
    };
    tx.prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                c.id.as_bytes(),
                c.name,
                mail_key_bytes(&c.mail_key),
                c.relay.key.as_bytes(),
                c.relay.addr
            ])
        })
        .map(|_| ())
        .map_err(WalletError::from_sqlite)
}

/// Record a new friend's contact and name (with the step that adds the friend).
fn add_contact_as_friend(tx: &rusqlite::Connection, c: &Contact) -> Result<(), WalletError> {
    put_contact(tx, c)?;
    tx.execute(
        "INSERT OR REPLACE INTO friends (friend, name, added_ms) VALUES (?1, ?2, 0)",
        params![c.id.as_bytes(), c.name],
    )
    .map(|_| ())
    .map_err(WalletError::from_sqlite)
}

fn queue_control(
    tx: &rusqlite::Connection,
    to: NodeId,
    control: &Control,
    now: u64,
) -> Result<(), WalletError> {
    let bytes = postcard::to_allocvec(control).map_err(|e| WalletError::Storage(e.to_string()))?;
    tx.execute(
        "INSERT INTO outbox (recipient, message, created_ms, kind) VALUES (?1, ?2, ?3, ?4)",
        params![
            to.as_bytes(),
            bytes,
            history::clamp(now),
            i64::from(MAIL_CONTROL)
        ],
    )
    .map(|_| ())
    .map_err(WalletError::from_sqlite)
}

/// How long a capacity report counts; the driver sends a fresh one well before.
pub const REPORT_TTL_MS: u64 = 30 * 60 * 1000;

impl Wallet {
    /// How much this wallet tells its relay's index (default: exact).
    pub fn report_privacy(&self) -> Result<crate::routing::Privacy, WalletError> {
        use crate::routing::Privacy;
        Ok(
            match self.reads.meta(&self.conn, "report_privacy")?.as_deref() {
                Some(b"buckets") => Privacy::Buckets,
                Some(b"off") => Privacy::Off,
                _ => Privacy::Exact,
            },
        )
    }

    /// Set how much this wallet tells its relay's index.
    pub fn set_report_privacy(
        &mut self,
        privacy: crate::routing::Privacy,
    ) -> Result<(), WalletError> {
        use crate::routing::Privacy;
        let v: &[u8] = match privacy {
            Privacy::Exact => b"exact",
            Privacy::Buckets => b"buckets",
            Privacy::Off => b"off",
        };
        self.close_deferred()?;
        store::put_meta(&self.conn, "report_privacy", v)
    }

    /// This wallet's capacity report now (`None` when reporting is off); see
    /// [`Wallet::sign_report`].
    pub fn capacity_report(&self) -> Result<Option<crate::routing::CapacityReport>, WalletError> {
        let privacy = self.report_privacy()?;
        Ok(crate::routing::CapacityReport::of_node(
            self.node(),
            self.now_ms(),
            REPORT_TTL_MS,
            privacy,
        ))
    }

    /// Sign a report of this wallet's.
    pub fn sign_report(
        &self,
        report: crate::routing::CapacityReport,
    ) -> crate::routing::SignedReport {
        report.sign(self.identity())
    }

    /// A route query for paying `request`: this wallet's own channels go in exactly, as the
    /// first hops.
    pub fn route_query(
        &self,
        request: &crate::invite::PaymentRequest,
        max_routes: u8,
    ) -> crate::routing::RouteQuery {
        let terms = &request.invoice.terms;
        let node = self.node();
        let first_hops = node
            .friends()
            .filter_map(|f| {
                let ch = node.channel(f)?;
                let line = ch.state().lines.get(&terms.currency)?;
                Some((*f, line.can_send(ch.local_side())))
            })
            .collect();
        crate::routing::RouteQuery {
            from: self.id(),
            to: terms.seller,
            currency: terms.currency,
            amount: terms.amount,
            max_routes,
            avoid: Vec::new(),
            first_hops: Some(first_hops),
        }
    }

    /// Choose the relay this wallet uses (friends are told through invitations).
    pub fn set_relay(&mut self, relay: RelayAddress) -> Result<(), WalletError> {
        let bytes =
            postcard::to_allocvec(&relay).map_err(|e| WalletError::Storage(e.to_string()))?;
        self.close_deferred()?;
        store::put_meta(&self.conn, "relay", &bytes)
    }

    /// The relay this wallet uses.
    pub fn relay(&self) -> Result<Option<RelayAddress>, WalletError> {
        self.reads
            .meta(&self.conn, "relay")?
            .map(|b| {
                postcard::from_bytes(&b).map_err(|_| WalletError::Corrupt {
                    detail: "the stored relay is damaged".into(),
                })
            })
            .transpose()
    }

    /// Move to another relay: friends are told (through the new relay), and the old relay is
    /// remembered so that the network driver drains the mail still sent there, for
    /// [`DRAIN_PERIOD_MS`]. One step: the new relay, the notices and the old relay to drain are
    /// written together.
    pub fn move_relay(&mut self, relay: RelayAddress) -> Result<(), WalletError> {
        let old = self.relay()?;
        if old.as_ref() == Some(&relay) {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let mut drain = self.relays_to_drain()?;
        if let Some(old) = old {
            drain.retain(|(r, _)| *r != old && *r != relay);
            drain.push((old, now));
        }
        let friends: Vec<NodeId> = self.node.friends().copied().collect();
        let notice = Control::RelayMoved {
            relay: relay.clone(),
        };
        let relay_bytes =
            postcard::to_allocvec(&relay).map_err(|e| WalletError::Storage(e.to_string()))?;
        let drain_bytes =
            postcard::to_allocvec(&drain).map_err(|e| WalletError::Storage(e.to_string()))?;
        self.step(
            |_, _| ((), Vec::new(), Vec::new()),
            |tx, _| {
                store::put_meta(tx, "relay", &relay_bytes)?;
                store::put_meta(tx, "drain_relays", &drain_bytes)?;
                for f in &friends {
                    queue_control(tx, *f, &notice, now)?;
                }
                Ok(())
            },
        )
    }

    /// Relays we left and still drain, with when we left them (older than
    /// [`DRAIN_PERIOD_MS`] are forgotten).
    pub fn relays_to_drain(&self) -> Result<Vec<(RelayAddress, u64)>, WalletError> {
        let cutoff = self.clock.now_ms().saturating_sub(DRAIN_PERIOD_MS);
        let list: Vec<(RelayAddress, u64)> = match store::get_meta(&self.conn, "drain_relays")? {
            None => Vec::new(),
            Some(b) => postcard::from_bytes(&b).map_err(|_| WalletError::Corrupt {
                detail: "the list of relays to drain is damaged".into(),
            })?,
        };
        Ok(list.into_iter().filter(|(_, at)| *at >= cutoff).collect())
    }

    /// This wallet's mail key (friends seal envelopes to it).
    pub fn mail_key(&self) -> MailKey {
        MailKey::of(&self.identity)
    }

    /// How someone who is not a friend can answer us: our mail key and relay (`None` while we
    /// have no relay: they could not answer anyway).
    pub(crate) fn introduction(&self) -> Result<Option<Introduction>, WalletError> {
        Ok(self.relay()?.map(|relay| Introduction {
            mail_key: self.mail_key(),
            relay,
        }))
    }

    /// The identity, for the network driver (TLS and envelopes).
    pub(crate) fn identity(&self) -> &crate::protocol::identity::Identity {
        &self.identity
    }

    /// An invitation to show (as a QR code or link), valid for `ttl_ms`.
    pub fn invite(&self, name: &str, ttl_ms: u64) -> Result<Invitation, WalletError> {
        let relay = self
            .relay()?
            .ok_or_else(|| WalletError::Storage("choose a relay before inviting friends".into()))?;
        let expires = self.clock.now_ms().saturating_add(ttl_ms);
        Invitation::create(&self.identity, relay, name, expires)
            .map_err(|e| WalletError::Storage(e.to_string()))
    }

    /// Accept a scanned invitation: the inviter becomes a friend on our side and is sent a
    /// friend request (we go by `my_name`). Set a limit for them when you like.
    pub fn accept_invitation(
        &mut self,
        invitation: &Invitation,
        my_name: &str,
    ) -> Result<(), WalletError> {
        invitation
            .verify(self.clock.now_ms())
            .map_err(|e| WalletError::Storage(e.to_string()))?;
        let my_relay = self.relay()?.ok_or_else(|| {
            WalletError::Storage("choose a relay before accepting invitations".into())
        })?;
        let t = invitation.terms.clone();
        let contact = Contact {
            id: t.inviter,
            name: t.name.clone(),
            mail_key: t.mail_key,
            relay: t.relay,
        };
        let request = Control::FriendRequest {
            name: my_name.trim().to_string(),
            mail_key: self.mail_key(),
            relay: my_relay,
        };
        let inviter = t.inviter;
        let shown = t.name;
        self.action(
            |node, _| node.add_friend(inviter).map(|()| ((), Vec::new())),
            |_| {
                vec![
                    NewEntry::new(
                        EventKind::FriendAdded,
                        format!("added {shown} from their invitation; asked them to add you"),
                    )
                    .friend(inviter),
                ]
            },
            |tx, _| {
                add_contact_as_friend(tx, &contact)?;
                queue_control(tx, inviter, &request, 0)
            },
        )
    }

    /// A payment request for `invoice` (one of ours): the invoice with our mail key and relay,
    /// for a buyer who may not be our friend.
    pub fn payment_request(
        &self,
        invoice: &crate::protocol::payment::Invoice,
    ) -> Result<crate::invite::PaymentRequest, WalletError> {
        let relay = self.relay()?.ok_or_else(|| {
            WalletError::Storage("choose a relay before asking for payments".into())
        })?;
        crate::invite::PaymentRequest::create(&self.identity, invoice.clone(), relay)
            .map_err(|e| WalletError::Storage(e.to_string()))
    }

    /// Pay a payment request over `routes`. The request is checked whole first (its invoice
    /// too: the payment step does not check it again) and the seller's contact recorded (the
    /// commit goes to the seller directly); if the payment is then refused, the contact stays,
    /// which is harmless: the seller signed it.
    pub fn pay_request(
        &mut self,
        request: &crate::invite::PaymentRequest,
        routes: Vec<crate::protocol::node::RoutePlan>,
    ) -> Result<(), WalletError> {
        self.remember_seller(request)?;
        self.pay_checked(false, &request.invoice, routes)
    }

    /// [`Wallet::pay_request`], without waiting for the disk (see [`Wallet::pay_unsynced`]).
    pub fn pay_request_unsynced(
        &mut self,
        request: &crate::invite::PaymentRequest,
        routes: Vec<crate::protocol::node::RoutePlan>,
    ) -> Result<super::SyncTicket, WalletError> {
        self.remember_seller(request)?;
        self.pay_checked(true, &request.invoice, routes)?;
        Ok(self.unsynced_ticket())
    }

    /// Check a payment request, its invoice included, and record the seller's contact if it
    /// is new.
    fn remember_seller(
        &mut self,
        request: &crate::invite::PaymentRequest,
    ) -> Result<(), WalletError> {
        let now_ms = self.clock.now_ms();
        let seller = request.invoice.terms.seller;
        // Refused as the payment step refuses a bad invoice, in a payment's own words: when
        // the batch fails, the invoice checked alone says whether it is the invoice (and why).
        request.verify(now_ms).map_err(|e| {
            WalletError::Refused(match e {
                crate::invite::InviteError::Expired { .. } => NodeError::InvoiceExpired {
                    expires_at_ms: request.invoice.terms.expires_at_ms,
                    now_ms,
                },
                _ => NodeError::Payment(request.invoice.verify().err().unwrap_or(
                    crate::protocol::payment::PaymentError::BadSignature(
                        crate::protocol::identity::BadSignature(seller),
                    ),
                )),
            })
        })?;
        if self.contact(&seller)?.is_none() {
            self.set_contact(Contact {
                id: seller,
                name: seller.short(),
                mail_key: request.mail_key,
                relay: request.relay.clone(),
            })?;
        }
        Ok(())
    }

    /// Friend requests waiting for an answer.
    pub fn friend_requests(&self) -> Result<Vec<FriendRequest>, WalletError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT friend, name, mail_key, relay_key, relay_addr, received_ms FROM friend_requests
                 ORDER BY received_ms",
            )
            .map_err(WalletError::from_sqlite)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(WalletError::from_sqlite)?;
        let mut out = Vec::new();
        for row in rows {
            let (f, n, m, rk, ra, at) = row.map_err(WalletError::from_sqlite)?;
            out.push(FriendRequest {
                from: contact_from_row(f, n, m, rk, ra)?,
                received_ms: u64::try_from(at).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Accept the friend request from `from`: they become a friend, and are told.
    pub fn accept_friend_request(
        &mut self,
        from: NodeId,
        my_name: &str,
    ) -> Result<(), WalletError> {
        let request = self
            .friend_requests()?
            .into_iter()
            .find(|r| r.from.id == from)
            .ok_or(WalletError::Refused(NodeError::UnknownFriend(from)))?;
        let my_relay = self.relay()?.ok_or_else(|| {
            WalletError::Storage("choose a relay before accepting friends".into())
        })?;
        let reply = Control::FriendAccepted {
            name: my_name.trim().to_string(),
            mail_key: self.mail_key(),
            relay: my_relay,
        };
        let contact = request.from;
        let shown = contact.name.clone();
        self.action(
            |node, _| node.add_friend(from).map(|()| ((), Vec::new())),
            |_| {
                vec![
                    NewEntry::new(EventKind::FriendAdded, format!("added {shown} as a friend"))
                        .friend(from),
                ]
            },
            |tx, _| {
                add_contact_as_friend(tx, &contact)?;
                tx.execute(
                    "DELETE FROM friend_requests WHERE friend = ?1",
                    [from.as_bytes()],
                )
                .map_err(WalletError::from_sqlite)?;
                queue_control(tx, from, &reply, 0)
            },
        )
    }

    /// How to reach `friend`.
    pub fn contact(&self, friend: &NodeId) -> Result<Option<Contact>, WalletError> {
        self.reads.contact(friend, || {
            self.conn
                .prepare_cached(
                    "SELECT friend, name, mail_key, relay_key, relay_addr FROM contacts WHERE friend = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([friend.as_bytes()], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .optional()
                })
                .map_err(WalletError::from_sqlite)?
                .map(|(f, n, m, rk, ra)| contact_from_row(f, n, m, rk, ra))
                .transpose()
        })
    }

    /// Record how to reach a friend (for friends made without an invitation).
    pub fn set_contact(&mut self, contact: Contact) -> Result<(), WalletError> {
        contact
            .mail_key
            .verify()
            .map_err(|e| WalletError::Storage(e.to_string()))?;
        self.close_deferred()?;
        let tx = self.conn.transaction().map_err(WalletError::from_sqlite)?;
        put_contact(&tx, &contact)?;
        tx.commit().map_err(WalletError::from_sqlite)?;
        // Mail waiting for this friend can go now.
        self.outbox_signal.notify_one();
        Ok(())
    }

    /// Seal an outbox entry for its recipient: the envelope and where to send it.
    pub fn seal_outgoing(
        &self,
        out: &super::Outgoing,
        entropy: [u8; 72],
    ) -> Result<(Vec<u8>, RelayAddress), WalletError> {
        let contact = self.contact(&out.to)?.ok_or_else(|| {
            WalletError::Storage(format!(
                "no contact for {}: can't reach them",
                out.to.short()
            ))
        })?;
        let mut body = Vec::with_capacity(1 + out.message.len());
        body.push(out.kind);
        body.extend_from_slice(&out.message);
        let mut id = [0u8; 16];
        id.copy_from_slice(&entropy[..16]);
        let mut rest = [0u8; 56];
        rest.copy_from_slice(&entropy[16..]);
        let env = envelope::seal(
            &self.identity,
            &contact.mail_key,
            &body,
            self.clock.now_ms(),
            id,
            rest,
        )
        .map_err(|e| WalletError::Storage(e.to_string()))?;
        Ok((env, contact.relay))
    }

    /// Handle an envelope from the relay, in one durable step (the envelope's id is recorded
    /// in the same transaction, so a copy is refused even after a crash). Storage failures
    /// are errors (do not acknowledge); anything else is acknowledged.
    pub fn receive_envelope(&mut self, bytes: &[u8]) -> Result<Delivery, WalletError> {
        if self.seen_prune_due() {
            self.prune_seen()?;
        }
        let opened = envelope::open(&self.identity, bytes);
        self.receive_opened(opened)
    }

    /// [`Wallet::receive_envelope`] for an envelope already opened (`envelope::open_all`
    /// opens a group's envelopes with one batch of signature checks).
    pub(crate) fn receive_opened(
        &mut self,
        opened: Result<envelope::Opened, envelope::EnvelopeError>,
    ) -> Result<Delivery, WalletError> {
        let opened = match opened {
            Ok(o) => o,
            Err(e) => return Ok(Delivery::Refused(e.to_string())),
        };
        let now = self.clock.now_ms();
        if let Err(e) = self.check_replay(&opened, now)? {
            return Ok(Delivery::Refused(e.to_string()));
        }
        let Some((&tag, payload)) = opened.body.split_first() else {
            return self.record_seen(&opened, Delivery::Refused("empty envelope".into()));
        };
        match tag {
            MAIL_PROTOCOL => {
                let message = match Message::decode(payload) {
                    Ok(m) => m,
                    Err(e) => return self.record_seen(&opened, Delivery::Refused(e.to_string())),
                };
                let (sender, id, sent) = (opened.sender, opened.id, opened.sent_ms);
                self.handle_protocol(sender, message, |tx, _| mark_seen(tx, &sender, &id, sent))
            }
            MAIL_INTRODUCED => {
                let sender = opened.sender;
                let (contact, message) = match read_introduced(sender, payload) {
                    Ok(x) => x,
                    Err(why) => return self.record_seen(&opened, Delivery::Refused(why)),
                };
                let (id, sent) = (opened.id, opened.sent_ms);
                self.handle_protocol(sender, message, |tx, d| {
                    remember_introduced(tx, &contact, d)?;
                    mark_seen(tx, &sender, &id, sent)
                })
            }
            MAIL_CONTROL => {
                let control: Control = match postcard::from_bytes(payload) {
                    Ok(c) => c,
                    Err(e) => return self.record_seen(&opened, Delivery::Refused(e.to_string())),
                };
                self.receive_control(&opened, control, now)
            }
            other => self.record_seen(
                &opened,
                Delivery::Refused(format!("unknown mail kind {other}")),
            ),
        }
    }

    /// Whether `opened` is new and inside the window. A database that cannot say is an error
    /// (the envelope is not acknowledged and comes again), never "not seen".
    fn check_replay(
        &self,
        opened: &Opened,
        now: u64,
    ) -> Result<Result<(), EnvelopeError>, WalletError> {
        let cutoff = now.saturating_sub(REPLAY_WINDOW_MS);
        if opened.sent_ms < cutoff {
            return Ok(Err(EnvelopeError::TooOld {
                sender: opened.sender,
                age_ms: now.saturating_sub(opened.sent_ms),
                window_ms: REPLAY_WINDOW_MS,
            }));
        }
        let seen: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM seen WHERE sender = ?1 AND sent_ms = ?2 AND id = ?3")
            .and_then(|mut s| {
                s.query_row(
                    params![
                        opened.sender.as_bytes(),
                        history::clamp(opened.sent_ms),
                        opened.id.as_slice()
                    ],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(WalletError::from_sqlite)?;
        if seen.is_some() {
            return Ok(Err(EnvelopeError::Replay(
                data_encoding::HEXLOWER.encode(&opened.id),
                opened.sender,
            )));
        }
        Ok(Ok(()))
    }

    fn record_seen(&mut self, opened: &Opened, d: Delivery) -> Result<Delivery, WalletError> {
        let (sender, id, sent) = (opened.sender, opened.id, opened.sent_ms);
        self.step(
            |_, _| (d, Vec::new(), Vec::new()),
            |tx, _| mark_seen(tx, &sender, &id, sent),
        )
    }

    fn receive_control(
        &mut self,
        opened: &Opened,
        control: Control,
        now: u64,
    ) -> Result<Delivery, WalletError> {
        let sender = opened.sender;
        let (id, sent) = (opened.id, opened.sent_ms);
        match control {
            Control::FriendRequest {
                name,
                mail_key,
                relay,
            } => {
                if mail_key.owner != sender || mail_key.verify().is_err() {
                    return self.record_seen(opened, Delivery::Refused("bad mail key".into()));
                }
                if self.node.channel(&sender).is_some() {
                    // Already friends (e.g. both scanned each other): just update the contact.
                    let contact = Contact {
                        id: sender,
                        name,
                        mail_key,
                        relay,
                    };
                    return self.step(
                        |_, _| (Delivery::Applied, Vec::new(), Vec::new()),
                        |tx, _| {
                            put_contact(tx, &contact)?;
                            mark_seen(tx, &sender, &id, sent)
                        },
                    );
                }
                let entry = NewEntry::new(
                    EventKind::FriendRequested,
                    format!("{name} asks to be your friend"),
                )
                .friend(sender);
                self.step(
                    |_, _| (Delivery::Applied, Vec::new(), vec![entry]),
                    |tx, _| {
                        tx.execute(
                            "INSERT OR REPLACE INTO friend_requests
                             (friend, name, mail_key, relay_key, relay_addr, received_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            params![
                                sender.as_bytes(),
                                name,
                                mail_key_bytes(&mail_key),
                                relay.key.as_bytes(),
                                relay.addr,
                                history::clamp(now)
                            ],
                        )
                        .map_err(WalletError::from_sqlite)?;
                        mark_seen(tx, &sender, &id, sent)
                    },
                )
            }
            Control::RelayMoved { relay } => {
                let Some(mut contact) = self.contact(&sender)? else {
                    return self.record_seen(opened, Delivery::Refused("a stranger moved".into()));
                };
                contact.relay = relay;
                self.step(
                    |_, _| (Delivery::Applied, Vec::new(), Vec::new()),
                    |tx, _| {
                        put_contact(tx, &contact)?;
                        mark_seen(tx, &sender, &id, sent)
                    },
                )
            }
            Control::FriendAccepted {
                name,
                mail_key,
                relay,
            } => {
                if mail_key.owner != sender
                    || mail_key.verify().is_err()
                    || self.node.channel(&sender).is_none()
                {
                    return self
                        .record_seen(opened, Delivery::Refused("unexpected acceptance".into()));
                }
                let contact = Contact {
                    id: sender,
                    name: name.clone(),
                    mail_key,
                    relay,
                };
                let entry = NewEntry::new(
                    EventKind::FriendAccepted,
                    format!("{name} accepted you as a friend"),
                )
                .friend(sender);
                self.step(
                    |_, _| (Delivery::Applied, Vec::new(), vec![entry]),
                    |tx, _| {
                        put_contact(tx, &contact)?;
                        mark_seen(tx, &sender, &id, sent)
                    },
                )
            }
        }
    }

    /// Forget envelope ids older than the replay window (they would be refused as too old).
    /// Receiving mail does this on its own at most once every [`SEEN_PRUNE_EVERY_MS`] (a group
    /// of envelopes inside its own commit, a single envelope in a commit before it), so the
    /// table holds about one window of ids.
    pub fn prune_seen(&mut self) -> Result<u64, WalletError> {
        self.usable()?;
        self.close_deferred()?;
        self.delete_old_seen()
    }

    /// [`Wallet::prune_seen`] if it has not run for [`SEEN_PRUNE_EVERY_MS`] (or not since the
    /// wallet was opened), inside the transaction open on the connection if there is one.
    pub(crate) fn prune_seen_if_due(&mut self) -> Result<(), WalletError> {
        if self.seen_prune_due() {
            self.delete_old_seen()?;
        }
        Ok(())
    }

    fn seen_prune_due(&self) -> bool {
        self.seen_pruned_ms
            .is_none_or(|at| self.clock.now_ms().saturating_sub(at) >= SEEN_PRUNE_EVERY_MS)
    }

    fn delete_old_seen(&mut self) -> Result<u64, WalletError> {
        let now = self.clock.now_ms();
        let cutoff = now.saturating_sub(REPLAY_WINDOW_MS);
        let pruned = self
            .conn
            .prepare_cached("DELETE FROM seen WHERE sent_ms < ?1")
            .and_then(|mut s| s.execute([history::clamp(cutoff)]))
            .map(|n| n as u64)
            .map_err(WalletError::from_sqlite)?;
        self.seen_pruned_ms = Some(now);
        Ok(pruned)
    }
}

fn mark_seen(
    tx: &rusqlite::Connection,
    sender: &NodeId,
    id: &[u8; 16],
    sent_ms: u64,
) -> Result<(), WalletError> {
    tx.prepare_cached("INSERT OR IGNORE INTO seen (sender, id, sent_ms) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| {
            s.execute(params![
                sender.as_bytes(),
                id.as_slice(),
                history::clamp(sent_ms)
            ])
        })
        .map(|_| ())
        .map_err(WalletError::from_sqlite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::identity::Identity;

    /// A stranger's every message repeats their contact: written again unchanged, it is not
    /// written at all (no page in the commit, and the contacts read from memory stay); a
    /// change is written.
    #[test]
    fn an_unchanged_contact_is_not_written_again() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = rusqlite::Connection::open_in_memory()?;
        store::migrate(&mut conn)?;
        store::put_meta(&conn, "settings", b"")?;
        let cache = store::ReadCache::install(&mut conn)?;
        let them = Identity::from_seed([4; 32]);
        let mut contact = Contact {
            id: them.id(),
            name: "them".into(),
            mail_key: MailKey::of(&them),
            relay: RelayAddress {
                addr: "127.0.0.1:4000".into(),
                key: Identity::from_seed([5; 32]).id(),
            },
        };
        let changes = || conn.total_changes();
        write_contact(&conn, &contact, false)?;
        let first = (changes(), cache.generation());
        write_contact(&conn, &contact, false)?;
        put_contact(&conn, &contact)?;
        assert_eq!((changes(), cache.generation()), first, "nothing written");
        contact.relay.addr = "127.0.0.1:4001".into();
        write_contact(&conn, &contact, false)?;
        assert!(changes() > first.0 && cache.generation() > first.1);
        assert_eq!(
            conn.query_row("SELECT relay_addr FROM contacts", [], |r| r
                .get::<_, String>(0))?,
            "127.0.0.1:4001"
        );
        contact.name = "renamed".into();
        let before = changes();
        write_contact(&conn, &contact, false)?;
        assert_eq!(changes(), before, "a stranger's message does not rename");
        put_contact(&conn, &contact)?;
        assert!(changes() > before, "a rename is written");
        Ok(())
    }
}
