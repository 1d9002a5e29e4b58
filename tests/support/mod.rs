//! Shared helpers for integration tests.
#![allow(dead_code)]
// Test helpers are `pub` for every test crate that includes them; none is reachable from outside.
#![allow(unreachable_pub)]

pub mod emulator;
