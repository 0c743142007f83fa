//! Operator commands: [`pw`] makes passwd-file password fields (`poplar pw
//! hash`), [`check`] tells what a `.wasm` file is and which Poplar worlds it
//! implements (`poplar plugin check`); both need no configuration.
//! [`mailbox`] lists, measures, searches and expunges one user's mail
//! through the configured plugins (`poplar mailbox`). [`generate`] writes
//! the manual pages, shell completions and installation certificate a
//! package needs (`poplar generate`, hidden).

pub mod check;
pub mod generate;
pub mod mailbox;
pub mod pw;
