//! One module per subcommand (group).

pub mod client;
pub mod data;
pub mod host;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod market;
pub mod registry;
pub mod run;
pub mod unit_inputs;
