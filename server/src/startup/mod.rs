//! Settings and the processes: the command line (`cli`), the settings it reads
//! (`settings`), and the logs.

mod cli;
pub(crate) mod logging;
mod settings;

pub use cli::main;
