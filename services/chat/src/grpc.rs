//! gRPC handlers: identify the caller and delegate; typing and presence live here because
//! they are a few lines each.

use crate::conversations::{self, visible};
use crate::convert::{now, participant};
use crate::engine::Engine;
use crate::error::{ChatError, Result};
use crate::stream::{self, EventStream};
use crate::{attachments, messages, search};
use codingagent_kernel::error::respond;
use codingagent_kernel::identity::{Caller, caller_and_message as parts};
use codingagent_kernel::validate::Violations;
use codingagent_kernel::{error, pagination};
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::chat::v1::chat_service_server::ChatService;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub(crate) struct Handlers {
    pub engine: Arc<Engine>,
}

impl Handlers {
    async fn set_typing(
        &self,
        caller: &Caller,
        request: pb::SetTypingRequest,
    ) -> Result<pb::SetTypingResponse> {
        let mut v = Violations::default();
        let id = v.id("conversation_id", &request.conversation_id);
        v.finish()?;
        let conversation = visible(&self.engine, caller, id.unwrap_or_default()).await?;
        let who = participant(caller);
        if self.engine.presence.admit_typing(conversation.id, &who).await.is_err() {
            return Err(ChatError::RateLimited(
                "at most one typing signal per second".into(),
                Duration::from_secs(1),
            ));
        }
        let ttl = self.engine.config.typing_ttl_secs as i64;
        let expire_time = request.typing.then(|| {
            let at = now();
            prost_types::Timestamp { seconds: at.seconds + ttl, nanos: at.nanos }
        });
        let signal = pb::TypingEvent { actor: Some(who), typing: request.typing, expire_time };
        let seq = conversation.proto.last_seq;
        self.engine
            .announce_ephemeral(conversation.id, seq, pb::conversation_event::Event::Typing(signal))
            .await;
        Ok(pb::SetTypingResponse { expire_time })
    }

    async fn get_attachment(
        &self,
        caller: &Caller,
        request: pb::GetAttachmentRequest,
    ) -> Result<pb::GetAttachmentResponse> {
        let mut v = Violations::default();
        let id = v.id("attachment_id", &request.attachment_id);
        v.finish()?;
        let mut conn = self.engine.pool.acquire().await?;
        let attachment = attachments::visible(&mut conn, caller, id.unwrap_or_default()).await?;
        Ok(pb::GetAttachmentResponse { attachment: Some(attachment) })
    }

    async fn list_attachments(
        &self,
        caller: &Caller,
        request: pb::ListAttachmentsRequest,
    ) -> Result<pb::ListAttachmentsResponse> {
        let mut v = Violations::default();
        let id = v.id("conversation_id", &request.conversation_id);
        if request.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        v.finish()?;
        let conversation = visible(&self.engine, caller, id.unwrap_or_default()).await?;
        let uploader = caller.user_id().unwrap_or(&caller.subject);
        let (attachments, next_page_token) = attachments::list(
            &self.engine.pool,
            conversation.id,
            uploader,
            request.include_unattached,
            request.page_size,
            &request.page_token,
        )
        .await?;
        Ok(pb::ListAttachmentsResponse { attachments, next_page_token })
    }

    async fn list_presence(
        &self,
        caller: &Caller,
        request: pb::ListPresenceRequest,
    ) -> Result<pb::ListPresenceResponse> {
        let mut v = Violations::default();
        let id = v.id("conversation_id", &request.conversation_id);
        v.finish()?;
        let limit = pagination::page_size(request.page_size, 50, 200)? as usize;
        let offset: usize = pagination::decode(&request.page_token)?.unwrap_or(0);
        let conversation = visible(&self.engine, caller, id.unwrap_or_default()).await?;
        let all = self.engine.presence.list(conversation.id).await.map_err(|e| {
            ChatError::from(error::unavailable(
                "PRESENCE_UNAVAILABLE",
                format!("presence is unavailable: {e}"),
                Duration::from_secs(5),
            ))
        })?;
        let page: Vec<pb::Presence> = all.iter().skip(offset).take(limit).cloned().collect();
        let next_page_token = if offset + page.len() < all.len() {
            pagination::encode(&(offset + page.len()))
        } else {
            String::new()
        };
        Ok(pb::ListPresenceResponse { presences: page, next_page_token })
    }
}

#[tonic::async_trait]
impl ChatService for Handlers {
    async fn create_conversation(
        &self,
        request: Request<pb::CreateConversationRequest>,
    ) -> Result<Response<pb::CreateConversationResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(conversations::create(&self.engine, &caller, request).await)
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::GetConversationResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(conversations::get(&self.engine, &caller, request).await)
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(conversations::list(&self.engine, &caller, request).await)
    }

    async fn update_conversation(
        &self,
        request: Request<pb::UpdateConversationRequest>,
    ) -> Result<Response<pb::UpdateConversationResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(conversations::update(&self.engine, &caller, request).await)
    }

    async fn delete_conversation(
        &self,
        request: Request<pb::DeleteConversationRequest>,
    ) -> Result<Response<pb::DeleteConversationResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(conversations::delete(&self.engine, &caller, request).await)
    }

    async fn post_message(
        &self,
        request: Request<pb::PostMessageRequest>,
    ) -> Result<Response<pb::PostMessageResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(messages::post(&self.engine, &caller, request).await)
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(messages::list(&self.engine, &caller, request).await)
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::EditMessageResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(messages::edit(&self.engine, &caller, request).await)
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(messages::delete(&self.engine, &caller, request).await)
    }

    async fn search_messages(
        &self,
        request: Request<pb::SearchMessagesRequest>,
    ) -> Result<Response<pb::SearchMessagesResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(search::search(&self.engine, &caller, request).await)
    }

    type StreamConversationStream = EventStream;

    async fn stream_conversation(
        &self,
        request: Request<pb::StreamConversationRequest>,
    ) -> Result<Response<Self::StreamConversationStream>, Status> {
        let (caller, request) = parts(request)?;
        respond(stream::open(self.engine.clone(), &caller, request).await)
    }

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(Handlers::set_typing(self, &caller, request).await)
    }

    async fn list_presence(
        &self,
        request: Request<pb::ListPresenceRequest>,
    ) -> Result<Response<pb::ListPresenceResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(Handlers::list_presence(self, &caller, request).await)
    }

    async fn get_attachment(
        &self,
        request: Request<pb::GetAttachmentRequest>,
    ) -> Result<Response<pb::GetAttachmentResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(Handlers::get_attachment(self, &caller, request).await)
    }

    async fn list_attachments(
        &self,
        request: Request<pb::ListAttachmentsRequest>,
    ) -> Result<Response<pb::ListAttachmentsResponse>, Status> {
        let (caller, request) = parts(request)?;
        respond(Handlers::list_attachments(self, &caller, request).await)
    }
}
