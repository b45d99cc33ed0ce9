//! Running components: one invocation path shared by every trigger.

mod invoke;

pub use invoke::{GuestAnswer, GuestCall, Invoked, invoke};
