//! Deliveries to the client, within the edge's delivery budget (`[limits]
//! delivery_memory`, issue 21).
//!
//! Each session may have up to the home's push window (256 items) pushed
//! and unacknowledged; a client that stops reading leaves them queued here
//! (what its socket buffers do not take), so without an edge-wide bound
//! many slow readers of big messages would hold window × body each. Every
//! queued `Deliver` holds its bytes in the budget until it is written (or
//! its queue ends). A push that finds the budget full closes the sessions
//! holding the most bytes, largest first, with `SLOW_CONSUMER` until it has
//! room again: their queues are dropped at once (nothing they held was
//! acknowledged, so it stays in the mailbox and comes again on the next
//! session). A cut session's writer may still hold its last batch (at most
//! `outbound::BATCH_BYTES` plus one frame) until it is aborted, two seconds
//! later.

use common::proto::{Code, Deliver, Envelope, ServerFrame, server_frame};
use prost::Message;
use tokio::time::Instant;

use super::{Close, Session, Step};

/// Why a session was cut to free the delivery budget.
const CUT: &str = "this edge's memory for deliveries is full and this client reads the slowest";

impl Session {
    /// Queues item `seq` for the client.
    pub(super) fn deliver(&mut self, seq: u64, envelope: Envelope) -> Step {
        self.ctx.metrics.messages_out.inc();
        self.unacked.insert(seq);
        if self.unacked.len() >= common::link::PUSH_WINDOW && self.window_full_since.is_none() {
            self.window_full_since = Some(Instant::now());
        }
        let frame = ServerFrame {
            kind: Some(server_frame::Kind::Deliver(Deliver {
                seq,
                envelope: Some(envelope),
            })),
        };
        let held = self.ctx.deliveries_budget.take(frame.encoded_len() as u64);
        self.out.push_delivery(frame, held).map_err(|_| {
            Close::Error(
                Code::SlowConsumer,
                "the client does not read fast enough".into(),
            )
        })?;
        self.make_room();
        Ok(())
    }

    /// Past the budget, cuts the slowest readers until it has room.
    fn make_room(&self) {
        let budget = &self.ctx.deliveries_budget;
        while budget.over() {
            let Some((handle, queue)) = self.ctx.hub.slowest() else {
                return;
            };
            tracing::info!(
                held = queue.delivery_bytes(),
                edge = budget.used(),
                limit = budget.limit(),
                "cutting the slowest reader: the delivery budget is full"
            );
            self.ctx.metrics.delivery_cuts.inc();
            queue.end(Close::Error(Code::SlowConsumer, CUT.into()).end());
            handle.kill(Code::SlowConsumer);
        }
    }
}
