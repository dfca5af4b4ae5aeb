pub mod batch_assembly;
