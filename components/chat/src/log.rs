//! Short helpers over the `log` capability, so call sites stay one line.

use crate::bindings::log::{Level, log};

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}
