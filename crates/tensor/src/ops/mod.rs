//! Operations on tensors. An operation with kernels of its own is a folder holding its geometry
//! and API (`mod.rs`), the plain loops that define it (`reference.rs`), the fast path, and tests.

pub mod batch_norm;
pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod lrn;
pub mod matmul;
pub mod pool;
pub mod reduce;
