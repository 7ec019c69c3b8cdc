//! stride-nn: what trains a network on top of the tensor core's autograd: optimisers with
//! PyTorch's semantics and learning-rate schedules, the lecture's "SGD with momentum 0.9, divide
//! the learning rate by 10 when the validation error plateaus".

pub mod checkpoint;
pub mod init;
pub mod layers;
pub mod module;
pub mod norm;
pub mod optim;
pub mod schedule;
