//! Operator commands: [`pw`] makes passwd-file password fields (`poplar pw
//! hash`), [`check`] tells what a `.wasm` file is and which Poplar worlds it
//! implements (`poplar plugin check`); both need no configuration.
//! [`mailbox`] lists, measures, searches and expunges one user's mail
//! through the configured plugins (`poplar mailbox`); [`session`] shows who
//! holds which maildrop on which node and ends a user's sessions (`poplar
//! session`). [`generate`] writes the manual pages, shell completions and
//! installation certificate a package needs (`poplar generate`, hidden).
//! [`exit`] holds the exit codes they all use.

pub mod check;
pub mod exit;
pub mod generate;
pub mod mailbox;
pub mod pw;
pub mod session;
