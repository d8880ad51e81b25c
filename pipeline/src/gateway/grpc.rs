//! The gateway's gRPC endpoint, for service-to-service readers: `Subscribe` streams a
//! session's updates (all of them when no session is given) from the same per-client
//! queue as SSE and WebSocket, so the same backpressure policy applies. Its schema is
//! [`UPDATES_PROTO`]; the messages are declared with prost's derive and the service is
//! written out here, so no `protoc` is needed to build it.
//!
//! Each `Update` carries the JSON an SSE client gets, or `lagged` (updates dropped before
//! it) in its place. A client the `disconnect` policy cuts off gets `RESOURCE_EXHAUSTED`
//! with the reason. With tokens configured, `authorization: Bearer TOKEN` metadata is
//! needed: `UNAUTHENTICATED` without a known one, `PERMISSION_DENIED` for another
//! session's stream.

use crate::gateway::{Denied, GatewayState};
use crate::{Error, Result};
use futures::StreamExt;
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};

/// The service's full name.
pub const SERVICE: &str = "tailgate.gateway.v1.Updates";
/// The path of its one method.
pub const SUBSCRIBE: &str = "/tailgate.gateway.v1.Updates/Subscribe";

/// The service's schema, for clients in other languages.
pub const UPDATES_PROTO: &str = r#"syntax = "proto3";
package tailgate.gateway.v1;

service Updates {
  // A session's updates, or every session's when `session` is absent, until either side
  // ends the call.
  rpc Subscribe(SubscribeRequest) returns (stream Update);
}

message SubscribeRequest {
  optional uint64 session = 1;
}

message Update {
  string json = 1;    // the update, as an SSE client gets it; empty when `lagged` is set
  uint64 lagged = 2;  // updates dropped before this point (a slow reader)
}
"#;

/// What a client asks for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubscribeRequest {
    #[prost(uint64, optional, tag = "1")]
    pub session: Option<u64>,
}

/// One message of the stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Update {
    #[prost(string, tag = "1")]
    pub json: String,
    #[prost(uint64, tag = "2")]
    pub lagged: u64,
}

/// The `Updates` service over a gateway's clients.
#[derive(Debug, Clone)]
pub struct UpdatesService {
    state: GatewayState,
}

impl UpdatesService {
    pub fn new(state: GatewayState) -> Self {
        Self { state }
    }
}

impl tonic::server::NamedService for UpdatesService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for UpdatesService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != SUBSCRIBE {
            return Box::pin(async {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(tonic::Status::GRPC_STATUS, (tonic::Code::Unimplemented as i32).into());
                headers.insert(http::header::CONTENT_TYPE, tonic::metadata::GRPC_CONTENT_TYPE);
                Ok(response)
            });
        }
        let method = Subscribe(self.state.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.server_streaming(method, req).await)
        })
    }
}

/// `Subscribe` for one call.
struct Subscribe(GatewayState);

type Updates = futures::stream::BoxStream<'static, Result<Update, tonic::Status>>;

impl tonic::server::ServerStreamingService<SubscribeRequest> for Subscribe {
    type Response = Update;
    type ResponseStream = Updates;
    type Future = BoxFuture<tonic::Response<Updates>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<SubscribeRequest>) -> Self::Future {
        use crate::gateway::fanout::Item;
        let state = self.0.clone();
        Box::pin(async move {
            let token = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
            let session = request.get_ref().session;
            state.authorize(token, session).map_err(|denied| match denied {
                Denied::Unauthenticated => tonic::Status::unauthenticated("a bearer token is needed"),
                Denied::Forbidden => tonic::Status::permission_denied("this token is not for that stream"),
            })?;
            let updates = state
                .subscribe(session)
                .into_stream()
                .map(|item| match item {
                    Item::Update(data) => Ok(Update { json: data.to_string(), lagged: 0 }),
                    Item::Lagged(n) => Ok(Update { json: String::new(), lagged: n }),
                    Item::Disconnected(why) => Err(tonic::Status::resource_exhausted(why)),
                })
                .boxed();
            Ok(tonic::Response::new(updates))
        })
    }
}

/// Serves `Updates` on `listener` (HTTP/2) until `cancel`; open streams are sent what was
/// queued for them and end, for at most [`crate::gateway::DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, state: GatewayState, cancel: CancellationToken) -> Result<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(UpdatesService::new(state))
        .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());
    tokio::select! {
        r = server => r.map_err(|e| Error::Gateway(std::io::Error::other(format!("gRPC: {e}")))),
        () = async {
            cancel.cancelled().await;
            tokio::time::sleep(crate::gateway::DRAIN_TIMEOUT).await;
        } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{Auth, Scope};
    use tokio::sync::watch;

    /// A client of the service through tonic's own channel: the same framing any gRPC
    /// client uses.
    async fn subscribe(
        url: &str,
        session: Option<u64>,
        token: Option<&str>,
    ) -> Result<tonic::Streaming<Update>, tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        let mut request = tonic::Request::new(SubscribeRequest { session });
        if let Some(t) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let path = http::uri::PathAndQuery::from_static(SUBSCRIBE);
        let codec = tonic_prost::ProstCodec::<SubscribeRequest, Update>::default();
        client.server_streaming(request, path, codec).await.map(tonic::Response::into_inner)
    }

    fn update(session: u64, id: u64) -> crate::gateway::Pushed {
        crate::gateway::Pushed { session, data: format!(r#"{{"id":{id},"session":{session}}}"#).into() }
    }

    #[tokio::test]
    async fn subscribe_streams_a_sessions_updates_and_refuses_other_sessions() {
        let (_ready, ready_rx) = watch::channel(true);
        let cancel = CancellationToken::new();
        let auth = Auth::new([("player-7".to_owned(), Scope::Sessions([7].into()))]);
        let state = GatewayState::new(ready_rx, cancel.clone()).with_auth(auth);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(serve(listener, state.clone(), cancel.clone()));

        let denied = subscribe(&url, Some(8), Some("player-7")).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let denied = subscribe(&url, Some(7), None).await.unwrap_err();
        assert_eq!(denied.code(), tonic::Code::Unauthenticated);

        let mut stream = subscribe(&url, Some(7), Some("player-7")).await.unwrap();
        while state.subscribers() < 1 {
            tokio::task::yield_now().await;
        }
        state.push(update(3, 1));
        state.push(update(7, 2));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message()).await.unwrap();
        assert_eq!(got.unwrap().unwrap(), Update { json: r#"{"id":2,"session":7}"#.into(), lagged: 0 });
        cancel.cancel();
        // Shutdown ends the stream cleanly.
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message()).await.unwrap();
        assert!(matches!(end, Ok(None)), "{end:?}");
        server.await.unwrap().unwrap();
    }
}
