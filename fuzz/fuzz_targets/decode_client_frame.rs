//! Client → server frames: what an edge decodes from untrusted bytes.
#![no_main]

mod check;

use common::proto::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| check::check::<ClientFrame>(data));
