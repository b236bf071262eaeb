//! The wallet's interface for other programs ("apps"): a point of sale, a bookkeeping tool, a
//! bot. An app holds its own ed25519 key, never the wallet's; the owner grants each app a set of
//! [`Permission`]s (and, for `pay`, a spending limit per 24 hours) with `offst apps add`.
//!
//! - [`wire`]: the messages on the local socket, how requests are signed, the typed errors.
//! - [`grants`]: the owner's grants, the apps' spending and the log of their actions, in
//!   `apps.db` beside the wallet (a file of its own, so that `offst apps revoke` works while
//!   `offst serve` holds the wallet).
//! - [`server`]: `offst serve`'s side: checks every request (signature, sequence, grant,
//!   permission, limit, rate) before it touches the wallet, and records it.
//!
//! See `docs/apps.md` for the design and who can lose what.

pub mod grants;
pub mod server;
pub mod wire;

pub use grants::{Grant, Grants, GrantsError};
pub use wire::{ApiError, Call, Permission, Permissions, Reply};
