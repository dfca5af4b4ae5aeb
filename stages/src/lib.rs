//! Stage kinds: thin glue from typed params to the library crates, one file per kind.
//!
//! The paper's kinds (`pretrain`, `tofa_train`, `select`, `bench`, tables, figures) land here
//! as their library crates do; for now the registry holds the runner's utility kinds.

use tofa_runner::kind::Registry;

/// Every stage kind the `tofa-pipeline` binary knows.
pub fn registry() -> Registry {
    Registry::with_builtins()
}
