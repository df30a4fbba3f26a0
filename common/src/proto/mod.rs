//! The client wire protocol (docs/PROTOCOL.md): message types, framing, error
//! codes and limits. Pure: no I/O, no clock.

mod client;
pub mod code;
pub mod frame;
mod group;
pub mod ids;
pub mod limits;

pub use client::*;
pub use code::Code;
pub use frame::{DecodeError, Decoded};
pub use group::*;
