//! Server → client frames: what a client decodes from a possibly hostile server.
#![no_main]

mod check;

use common::proto::ServerFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check::check::<ServerFrame>(data));
