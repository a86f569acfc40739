//! A user's connection to a running stage-sync peer over TCP.

use super::peer::{Msg, StageError, Value, View};
use crate::runtime::codec::{self, Frame, MAX_FRAME_BYTES_DEFAULT};
use crate::runtime::handshake::Identity;
use crate::runtime::tls::Security;
use crate::runtime::transport;
use futures::{SinkExt, StreamExt};
use replicore_model::stage_sync::msg::OpId;
use replicore_model::stage_sync::{Edit, StageMsg};
use std::time::Duration;

/// A user's connection to a running peer (what `replicore stage-sync edit/show` use).
pub struct Client {
    io: transport::Connection,
}

/// How long a user waits for a peer's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    /// Connects to the peer at `addr` as user `client_id` (an id above every peer's).
    pub async fn connect(
        addr: &str,
        cluster_id: u64,
        key: &[u8],
        client_id: u64,
    ) -> Result<Client, StageError> {
        Self::connect_secured(addr, cluster_id, key, client_id, Security::default()).await
    }

    /// [`Client::connect`], its connection secured by `security`.
    pub async fn connect_secured(
        addr: &str,
        cluster_id: u64,
        key: &[u8],
        client_id: u64,
        security: Security,
    ) -> Result<Client, StageError> {
        let me = Identity::new(cluster_id, client_id, key).with_security(security);
        let (mut io, _) = transport::connect(addr, &me).await?;
        io.codec_mut().set_max_frame_length(MAX_FRAME_BYTES_DEFAULT);
        Ok(Client { io })
    }

    async fn ask(&mut self, msg: Msg) -> Result<Msg, StageError> {
        let body = codec::encode(&Frame::Actor(msg), MAX_FRAME_BYTES_DEFAULT)
            .map_err(|e| StageError::Closed(e.to_string()))?;
        self.io
            .send(body)
            .await
            .map_err(|e| StageError::Closed(format!("sending: {e}")))?;
        tokio::time::timeout(CLIENT_TIMEOUT, async {
            while let Some(frame) = self.io.next().await {
                let frame = frame.map_err(|e| StageError::Closed(format!("receiving: {e}")))?;
                match codec::decode::<Frame<Msg>>(&frame) {
                    Ok(Frame::Actor(m) | Frame::Traced(_, m))
                        if matches!(m, StageMsg::Edited { .. } | StageMsg::Document { .. }) =>
                    {
                        return Ok(m);
                    }
                    // Anything else (a peer's traffic) is not the answer.
                    Ok(_) => {}
                    Err(e) => return Err(StageError::Closed(format!("bad answer: {e}"))),
                }
            }
            Err(StageError::Closed("the peer closed the connection".into()))
        })
        .await
        .map_err(|_| StageError::Closed("the peer did not answer in time".into()))?
    }

    /// Executes `edit` on the peer; returns the operation and its stage.
    pub async fn edit(&mut self, edit: Edit<Value>) -> Result<(OpId, u32), StageError> {
        match self.ask(StageMsg::Edit(edit)).await? {
            StageMsg::Edited { id, stage } => Ok((id, stage)),
            _ => Err(StageError::Closed("unexpected answer".into())),
        }
    }

    /// The peer's document and stages.
    pub async fn show(&mut self) -> Result<View, StageError> {
        View::of(self.ask(StageMsg::Show).await?)
            .ok_or_else(|| StageError::Closed("unexpected answer".into()))
    }
}
