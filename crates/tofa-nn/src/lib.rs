//! Elastic MBConv supernet for TOFA (Transfer-Once-For-All) on candle.

pub mod config;
pub mod cost;
pub mod dwconv;
pub mod error;
pub mod export;
pub mod optim;
pub mod space;
pub mod supernet;

pub use config::{StageConfig, SubnetConfig};
pub use cost::{Cost, cost};
pub use error::{NnError, Result};
pub use export::{StaticNet, StaticNetConfig, export_subnet};
pub use optim::{Sgd, SgdConfig};
pub use space::{Activation, SearchSpace};
pub use supernet::{BnStats, Mode, Param, Supernet, TrainOpts};
