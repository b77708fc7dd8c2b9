//! The sockets of our sessions, opened here rather than by tokio-postgres so that every byte
//! from the server passes through [`SplitCopyData`] (no row is ever held whole in memory).
//! Same behaviour as tokio-postgres's own connect: TCP with `TCP_NODELAY` and keepalives after
//! two idle hours, or the Unix socket `DIR/.s.PGSQL.PORT`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use super::split::{Mode, SplitCopyData};

/// libpq's and tokio-postgres's default keepalive idle time.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// A connected TCP or Unix socket.
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The stream a session runs over: the socket, re-cutting long `CopyData` messages unless TLS
/// runs over it.
pub type RawStream = SplitCopyData<Socket>;

/// Connects to `host` (a name or address, or a Unix socket directory when it starts with '/')
/// and `port`.
pub async fn open(host: &str, port: u16) -> io::Result<Socket> {
    if host.starts_with('/') {
        let path = std::path::Path::new(host).join(format!(".s.PGSQL.{port}"));
        return Ok(Socket::Unix(UnixStream::connect(path).await?));
    }
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE))?;
    Ok(Socket::Tcp(stream))
}

/// Wraps `socket` for a session that will (`tls`) or will not ask the server for TLS first.
pub fn raw_stream(socket: Socket, tls: bool) -> RawStream {
    SplitCopyData::new(
        socket,
        if tls {
            Mode::AwaitSslResponse
        } else {
            Mode::Split
        },
    )
}

/// A TLS connector whose streams re-cut long `CopyData` messages above TLS, and which turns the
/// socket's own re-cutting off once the server agreed to TLS.
#[derive(Clone)]
pub struct SplitTls<M>(pub M);

impl<M> MakeTlsConnect<RawStream> for SplitTls<M>
where
    M: MakeTlsConnect<RawStream>,
    M::TlsConnect: Send + 'static,
    <M::TlsConnect as TlsConnect<RawStream>>::Future: Send,
{
    type Stream = SplitCopyData<M::Stream>;
    type TlsConnect = SplitTlsConnect<M::TlsConnect>;
    type Error = M::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(SplitTlsConnect(self.0.make_tls_connect(domain)?))
    }
}

pub struct SplitTlsConnect<T>(T);

impl<T> TlsConnect<RawStream> for SplitTlsConnect<T>
where
    T: TlsConnect<RawStream> + Send + 'static,
    T::Future: Send,
{
    type Stream = SplitCopyData<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, mut stream: RawStream) -> Self::Future {
        stream.passthrough();
        let handshake = self.0.connect(stream);
        Box::pin(async move { Ok(SplitCopyData::new(handshake.await?, Mode::Split)) })
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }
}
