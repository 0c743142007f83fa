//! Exit codes of the `poplar` command, from sysexits.h, defined once.

/// Nothing matched (`mailbox search`); not a sysexits code.
pub const EX_NOMATCH: u8 = 1;
/// The command line was wrong.
pub const EX_USAGE: u8 = 64;
/// Input data was wrong (an empty message, a UIDL not in the mailbox).
pub const EX_DATAERR: u8 = 65;
/// The user does not exist.
pub const EX_NOUSER: u8 = 67;
/// A service the command needs refused for good.
pub const EX_UNAVAILABLE: u8 = 69;
/// An internal error.
pub const EX_SOFTWARE: u8 = 70;
/// The mailbox is full (quota).
pub const EX_CANTCREAT: u8 = 73;
/// A temporary failure: try again later (MTAs retry).
pub const EX_TEMPFAIL: u8 = 75;
/// Refused (a filter rejected the message, it is too large).
pub const EX_NOPERM: u8 = 77;
/// The configuration is wrong.
pub const EX_CONFIG: u8 = 78;
