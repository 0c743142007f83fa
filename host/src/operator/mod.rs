//! Operator commands that need no configuration: [`pw`] makes passwd-file
//! password fields (`poplar pw hash`), [`check`] tells what a `.wasm` file
//! is and which Poplar worlds it implements (`poplar plugin check`).

pub mod check;
pub mod pw;
