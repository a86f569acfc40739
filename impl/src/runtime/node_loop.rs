//! The one node loop: every protocol's node task runs [`run`], which feeds a [`Driver`] its
//! due timers and its inbox, in that priority, and groups the messages already queued into
//! one durable write.
//!
//! ```text
//!   cancel ──────────────▶ stop
//!   earliest due timer ──▶ driver.on_timeout            (first: a flood of messages must not
//!   inbox: Msg / Traced ─▶ driver.on_msg ┐ one group      starve a heartbeat or a timeout)
//!          next queued  ─▶ driver.on_msg ┘ (group commit: one save, then the sends)
//!          Query        ─▶ close the group, Host::answer (reads durable state only)
//!   after each turn     ─▶ Host::observe (views, version streams)
//! ```
//!
//! A protocol plugs in through [`Host`]: how its node answers the runtime's queries and what
//! it publishes after a step. Neither may change the actor's state: [`Host`] only ever sees
//! `&A::State`.

use crate::runtime::codec::{Query, Reply};
use crate::runtime::driver::{Driver, DriverError};
use crate::runtime::metrics as meters;
use crate::runtime::storage::Durable;
use crate::runtime::transport::Input;
use serde::Serialize;
use serde::de::DeserializeOwned;
use stateright::actor::{Actor, Id};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The most inputs (messages, queries) waiting for a node's actor; readers wait beyond it.
pub const INBOX_INPUTS: usize = 4096;

/// What a protocol's node adds around the driver: answers to queries and what it publishes
/// after each turn. It reads the actor's state and never writes it.
pub trait Host<A: Actor> {
    /// The answer to `query` from client or peer `src`, read from the state (durable: a
    /// query closes the open group first).
    fn answer(&mut self, state: &A::State, src: Id, query: Query) -> Reply {
        let _ = (state, src, query);
        Reply::Unsupported
    }

    /// Called after each turn of the loop (one timer, or one group of inputs).
    fn observe(&mut self, state: &A::State) {
        let _ = state;
    }
}

/// Runs `driver` until `cancel` fires or the inbox closes; a fatal driver error stops it.
pub async fn run<A, H>(
    driver: &mut Driver<A>,
    inbox: &mut mpsc::Receiver<Input<A::Msg>>,
    cancel: &CancellationToken,
    host: &mut H,
) -> Result<(), DriverError>
where
    A: Actor,
    A::Msg: Serialize + DeserializeOwned + Send + 'static,
    A::Timer: Serialize,
    A::Storage: Durable,
    H: Host<A>,
{
    loop {
        let next = driver.next_timer();
        let at = next.as_ref().map(|(_, at)| *at);
        let timer = async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            // Due timers first: a flood of messages must not starve the heartbeat or a
            // timeout. A timer is only ready when due, so it cannot starve input.
            _ = timer => {
                if let Some((t, _)) = next {
                    driver.on_timeout(t).await?;
                }
            }
            input = inbox.recv() => {
                let Some(mut input) = input else { return Ok(()) };
                // Group commit: the messages already queued behind this one share its durable
                // write (see `crate::runtime::driver`); a query first closes the group, so it
                // never reads what is not durable yet.
                let limit = driver.group_limit();
                driver.begin_group();
                let mut taken = 0;
                loop {
                    match input {
                        Input::Msg(src, msg) => driver.on_msg(src, msg).await?,
                        Input::Traced(src, send, msg) => {
                            driver.on_msg_traced(src, Some(send), msg).await?
                        }
                        Input::Query(src, query, reply) => {
                            driver.end_group().await?;
                            let _ = reply.send(host.answer(driver.state(), src, query));
                        }
                    }
                    taken += 1;
                    if taken >= limit {
                        break;
                    }
                    match inbox.try_recv() {
                        Ok(next) => input = next,
                        Err(_) => break,
                    }
                }
                driver.end_group().await?;
                metrics::histogram!(meters::GROUP_COMMIT_INPUTS, "node" => driver.label().to_string())
                    .record(taken as f64);
            }
        }
        metrics::gauge!(meters::INBOX_INPUTS, "node" => driver.label().to_string())
            .set(inbox.len() as f64);
        host.observe(driver.state());
    }
}
