//! Operator commands: [`pw`] makes passwd-file password fields (`poplar pw
//! hash`), [`check`] tells what a `.wasm` file is and which Poplar worlds it
//! implements (`poplar plugin check`); both need no configuration.
//! [`mailbox`] lists, measures, searches and expunges one user's mail
//! through the configured plugins (`poplar mailbox`).

pub mod check;
pub mod mailbox;
pub mod pw;
