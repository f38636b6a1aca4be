//! P3-tonic and P4-tonic: the same call as Granary's cross-silo `ping(u64) -> u64`, as a tonic
//! gRPC unary call over loopback to another process (`--serve tonic`), in the same placement.
//!
//! No protoc and no build script: the two messages are prost derives written by hand, the
//! server is the `Service` that `tonic-build` would generate for one unary method, reduced to
//! that method, and both sides use tonic-prost's codec. The wire is what a generated client and
//! server of `service Bench { rpc Ping(Ping) returns (Pong); }` exchange.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::uri::PathAndQuery;
use tokio::sync::Semaphore;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_prost::ProstCodec;

use crate::cluster::{Calls, percentile};

/// The method's path, as a generated client would send it.
const PING_PATH: &str = "/granary.bench.Bench/Ping";

/// The request: the argument of Granary's `ping`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Ping {
    /// The number to answer `x + 1` to.
    #[prost(uint64, tag = "1")]
    pub(crate) x: u64,
}

/// The reply: `x + 1`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Pong {
    /// The answer.
    #[prost(uint64, tag = "1")]
    pub(crate) x: u64,
}

/// The unary handler: answers `x + 1`, as `BenchGrain::ping` does.
#[derive(Debug, Clone, Copy)]
struct PingHandler;

impl tonic::server::UnaryService<Ping> for PingHandler {
    type Response = Pong;
    type Future = Ready<Result<tonic::Response<Pong>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<Ping>) -> Self::Future {
        let x = request.into_inner().x;
        ready(Ok(tonic::Response::new(Pong {
            x: x.wrapping_add(1),
        })))
    }
}

/// The server: routes `PING_PATH` to [`PingHandler`], answers any other path `UNIMPLEMENTED`.
#[derive(Debug, Clone, Copy)]
struct BenchService;

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

impl tower_service::Service<http::Request<Body>> for BenchService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() == PING_PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<Pong, Ping>::default());
                Ok(grpc.unary(PingHandler, request).await)
            })
        } else {
            let path = request.uri().path().to_owned();
            Box::pin(async move {
                Ok(tonic::Status::unimplemented(format!(
                    "{path}: this server only serves {PING_PATH}"
                ))
                .into_http())
            })
        }
    }
}

/// `--serve tonic`: a tonic server of [`BenchService`] on a free loopback port; prints its
/// ready line (`tonic ready at <addr>`) and serves until killed.
pub(crate) async fn serve_tonic() -> anyhow::Result<()> {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?.with_nodelay(Some(true));
    let addr = incoming.local_addr()?;
    #[allow(
        clippy::print_stdout,
        reason = "the ready line is the process's interface"
    )]
    {
        println!("tonic ready at {addr}");
    }
    Server::builder()
        .serve_with_incoming(BenchService, incoming)
        .await?;
    Ok(())
}

/// A client of the server at `addr`: one HTTP/2 connection, as Granary's silos keep one
/// connection to each other.
async fn connect(addr: SocketAddr) -> anyhow::Result<tonic::client::Grpc<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(tonic::client::Grpc::new(channel))
}

/// One unary `Ping` call.
async fn ping(client: &mut tonic::client::Grpc<Channel>, x: u64) -> Result<u64, tonic::Status> {
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
    let reply: tonic::Response<Pong> = client
        .unary(
            tonic::Request::new(Ping { x }),
            PathAndQuery::from_static(PING_PATH),
            ProstCodec::<Ping, Pong>::default(),
        )
        .await?;
    Ok(reply.into_inner().x)
}

/// The same numbers of sequential and in-flight calls as Granary's side of P3/P4, against the
/// tonic server at `addr`; runs on the current runtime.
pub(crate) async fn calls(addr: SocketAddr, sequential: usize, total: usize) -> Calls {
    let mut client = connect(addr)
        .await
        .unwrap_or_else(|e| panic!("the tonic client connects to {addr}: {e}"));
    for i in 0..100 {
        ping(&mut client, i).await.expect("warm-up ping");
    }
    let mut samples = Vec::with_capacity(sequential);
    for i in 0..sequential as u64 {
        let t = Instant::now();
        let answer = ping(&mut client, i).await.expect("ping");
        assert_eq!(
            std::hint::black_box(answer),
            i + 1,
            "the tonic server answers x + 1"
        );
        samples.push(t.elapsed().as_nanos() as f64);
    }
    let p50_ns = percentile(&mut samples, 0.5);
    let p99_ns = percentile(&mut samples, 0.99);
    let permits = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let permit = permits.clone().acquire_owned().await.expect("permits");
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            std::hint::black_box(ping(&mut client, i as u64).await.expect("ping"));
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("caller");
    }
    Calls {
        p50_ns,
        p99_ns,
        calls_per_sec: total as f64 / start.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn the_messages_encode_as_a_generated_client_would() {
        // Field 1, varint: tag byte 0x08, then 300 as a varint.
        assert_eq!(Ping { x: 300 }.encode_to_vec(), [0x08, 0xac, 0x02]);
        assert_eq!(
            Pong::decode(&[0x08, 0x2a][..]).expect("decodes"),
            Pong { x: 42 }
        );
    }

    #[tokio::test]
    async fn a_server_answers_x_plus_one_and_refuses_other_paths() {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = incoming.local_addr().expect("addr");
        let server = tokio::spawn(Server::builder().serve_with_incoming(BenchService, incoming));
        let mut client = connect(addr).await.expect("connects");
        assert_eq!(ping(&mut client, 41).await.expect("ping"), 42);
        client.ready().await.expect("ready");
        let other: Result<tonic::Response<Pong>, _> = client
            .unary(
                tonic::Request::new(Ping { x: 1 }),
                PathAndQuery::from_static("/granary.bench.Bench/Other"),
                ProstCodec::<Ping, Pong>::default(),
            )
            .await;
        assert_eq!(
            other.expect_err("unknown method").code(),
            tonic::Code::Unimplemented
        );
        server.abort();
    }
}
