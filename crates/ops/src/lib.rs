//! Tensor ops dfdx 0.13 lacks on stable, with their backward passes.
pub mod cases;
