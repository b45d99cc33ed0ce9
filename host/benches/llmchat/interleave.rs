//! Measured rounds of several arms interleaved round by round, the order rotating, as the
//! cluster benchmark does with its arms: a 2-core machine drifts (other builds, the VM's
//! neighbours), and a ratio is only fair when the drift weighs on both of its sides alike.
//! The (q) section uses it for llmchat's redis rounds beside BullMQ's, run on the same
//! machine in the same run, never at the same moment.

use anyhow::Result;

use crate::queues::Settings;

/// One side of a comparison, run a round at a time.
pub trait Arm {
    /// The warm-up round, run before any arm's measured rounds.
    fn warm_up(&mut self, s: &Settings) -> Result<()>;
    /// One measured round of [`Settings::per_queue`] jobs per queue, kept by the arm.
    fn measured_round(&mut self, s: &Settings) -> Result<()>;
}

/// [`Settings::rounds`] measured rounds of every arm; round `r` starts with arm `r` mod the
/// number of arms, so that each goes first as often as the others.
pub fn rounds(arms: &mut [&mut dyn Arm], s: &Settings) -> Result<()> {
    for round in 0..s.rounds {
        for k in 0..arms.len() {
            let i = (round + k) % arms.len();
            arms[i].measured_round(s)?;
        }
    }
    Ok(())
}
