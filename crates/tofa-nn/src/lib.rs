//! Elastic MBConv supernet for TOFA (Transfer-Once-For-All) on candle.

pub mod config;
pub mod error;
pub mod space;

pub use config::{StageConfig, SubnetConfig};
pub use error::{NnError, Result};
pub use space::{Activation, SearchSpace};
