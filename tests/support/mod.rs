#![allow(dead_code, unreachable_pub, missing_debug_implementations)]
pub mod emulator;
pub mod gateway;
