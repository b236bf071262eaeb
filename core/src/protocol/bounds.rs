//! Every bound of the protocol, in one place.
//!
//! Each constant is enforced where input arrives and has a test that shows the over-limit case
//! gets a typed error (`core/tests/bounds.rs`). `docs/protocol.md` lists them with the reasons.

/// Operations one move may carry. Keeps a move well under [`MAX_MESSAGE_SIZE`] even when every
/// operation is a request over a route of [`MAX_ROUTE_LEN`] nodes (about 100 KB), and half of
/// [`MAX_PENDING_REQUESTS`], so that under load one move carries what queued while the friend
/// held the token (32 capped the load generator's chain at about 400 payments/s; see
/// `docs/benchmarks.md`).
pub const MAX_OPS_PER_MOVE: usize = 128;

/// Pending (frozen) requests one channel may hold, both directions together. A friend can never
/// make us track more than this.
pub const MAX_PENDING_REQUESTS: usize = 256;

/// Largest amount, limit or fee anywhere in the protocol (2^62). Keeps every sum of a route's
/// fees and every balance far from overflow; anything larger is refused.
pub const MAX_AMOUNT: u64 = 1 << 62;

/// Frozen credit one friend may hold against us in one currency, per direction, on top of the
/// limit check (which already caps it at the limit). Equal to [`MAX_AMOUNT`]: the real cap is
/// the limit the owner set, this constant only bounds the arithmetic.
pub const MAX_FROZEN_PER_FRIEND: u64 = MAX_AMOUNT;

/// Nodes on one route, buyer and seller included (so at most 14 mediators).
pub const MAX_ROUTE_LEN: usize = 16;

/// Routes that one payment may be split across.
pub const MAX_ROUTES_PER_PAYMENT: usize = 16;

/// Largest encoded message, in bytes. Anything bigger is refused before it is parsed. Sized for
/// the largest resync offer: a full channel state with [`MAX_PENDING_REQUESTS`] requests over
/// the longest routes, plus a full move (a test builds that worst case).
pub const MAX_MESSAGE_SIZE: usize = 512 * 1024;

/// Longest invoice memo, in bytes of UTF-8.
pub const MAX_MEMO_LEN: usize = 256;

/// Longest currency name, in bytes (ASCII letters, digits, `-`, `_`, `.`).
pub const MAX_CURRENCY_LEN: usize = 16;

/// Currencies one pair of friends may keep.
pub const MAX_CURRENCIES_PER_FRIEND: usize = 16;

/// Resolved requests a node remembers so that it can tell a friend who restored an old backup
/// how they ended. The oldest are forgotten first.
pub const MAX_REMEMBERED_OUTCOMES: usize = 65_536;

/// How long past its invoice's expiry a finished payment or invoice stays in the node's memory.
/// After that no protocol message can change it (the seller cancelled every route it did not
/// take at the expiry, and the buyer refuses to pay an expired invoice), so the node hands it
/// to its store's archive ([`crate::protocol::node::Changes::archived`]) and forgets it: a node
/// holds only what is under way or recent, however many payments it ever made. The week is
/// for clocks that disagree and for friends offline for days, whose late messages the record
/// still answers while it is kept.
pub const ARCHIVE_AFTER_EXPIRY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Abandons a seller remembers for one invoice before any request of theirs arrived (an abandon
/// travels directly and can overtake the requests). Each names the buyer and lock whose
/// requests to cancel on arrival.
pub const MAX_EARLY_ABANDONS_PER_INVOICE: usize = 8;

/// Early commits a seller holds for one open invoice while the routes they name are on their
/// way. Anyone can send one (it costs nothing), so they are few: when they are taken, a
/// buyer's early commit is refused and its payment goes the slower way (the seller answers hop
/// by hop and the buyer commits after the answers), nothing worse.
pub const MAX_HELD_COMMITS_PER_INVOICE: usize = 4;
