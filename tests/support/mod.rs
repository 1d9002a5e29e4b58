//! Shared by the integration tests: starts the emulator and the gateway as real processes on
//! ephemeral ports and tears them down.
#![allow(dead_code, unreachable_pub, missing_debug_implementations)]

pub mod emulator;
pub mod gateway;
pub mod otlp;
pub mod prometheus;
