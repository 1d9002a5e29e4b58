//! Shared by the integration tests: starts the emulator and the gateway as real processes on
//! ephemeral ports and tears them down.
// Each test binary uses a different part of the support, so unused items are expected here.
#![allow(
    unused_imports,
    dead_code,
    unreachable_pub,
    missing_debug_implementations
)]

pub mod emulator;
pub mod flood;
pub mod gateway;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod s3;
pub mod stack;
pub mod wait;
