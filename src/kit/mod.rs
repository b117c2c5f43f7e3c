//! An integration kit for hobby kernels (see the pieces below).

pub mod frames;
