//! Keeps a row of any size out of memory: a stream adapter that rewrites the server's byte
//! stream so that no `CopyData` message is longer than [`MAX_PIECE`].
//!
//! PostgreSQL sends each row of `COPY ... TO STDOUT` as one `CopyData` message, and
//! tokio-postgres reads a message whole before handing it on: a 600 MB `bytea` value costs
//! 600 MB of memory per worker. COPY's payload is a plain byte stream whose message boundaries
//! carry no meaning (our framer finds rows by itself), so a long `CopyData` message can be
//! re-cut into several short ones on its way in. The adapter holds one 5-byte header and a small
//! read buffer, passes every other message through unchanged, and never changes the bytes sent.
//!
//! It must sit above TLS: over a TLS session the raw socket carries ciphertext. The connect code
//! ([`super::socket`]) therefore starts the socket's adapter in [`Mode::AwaitSslResponse`]
//! when it will ask for TLS, and switches it to [`Mode::Passthrough`] when the server agrees
//! (the TLS stream then gets an adapter of its own).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsStream};

/// Longest `CopyData` body handed to the protocol library.
pub const MAX_PIECE: usize = 64 * 1024;
/// Bytes read from the inner stream at a time.
const READ_BUFFER: usize = 16 * 1024;
const COPY_DATA: u8 = b'd';

/// What the adapter does with the bytes it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Re-cut long `CopyData` messages.
    Split,
    /// The next byte is the server's answer to an SSLRequest ('S' or 'N'), not a message.
    AwaitSslResponse,
    /// Forward everything: TLS runs over this stream, and the TLS stream splits.
    Passthrough,
}

/// Where the parser is in the server's message stream.
#[derive(Clone, Copy, Debug)]
enum At {
    /// Collecting a message header (tag and length); `got` bytes of it so far.
    Header { got: usize },
    /// Inside a message forwarded as it is; `left` body bytes to go.
    Body { left: usize },
    /// Inside a long `CopyData` body: `piece` bytes of the current re-cut piece and `rest`
    /// bytes after it.
    CopyPiece { piece: usize, rest: usize },
}

/// An `AsyncRead + AsyncWrite` that forwards writes as they are and re-cuts long `CopyData`
/// messages on the way in. See the module documentation.
pub struct SplitCopyData<S> {
    inner: S,
    mode: Mode,
    at: At,
    header: [u8; 5],
    /// Header bytes not yet handed to the reader: `pending[pending_pos..pending_len]`.
    pending: [u8; 5],
    pending_pos: usize,
    pending_len: usize,
    buf: Box<[u8]>,
    buf_pos: usize,
    buf_len: usize,
}

impl<S> SplitCopyData<S> {
    pub fn new(inner: S, mode: Mode) -> Self {
        SplitCopyData {
            inner,
            mode,
            at: At::Header { got: 0 },
            header: [0; 5],
            pending: [0; 5],
            pending_pos: 0,
            pending_len: 0,
            buf: vec![0; READ_BUFFER].into_boxed_slice(),
            buf_pos: 0,
            buf_len: 0,
        }
    }

    /// Stops re-cutting: a TLS session is about to start over this stream.
    pub fn passthrough(&mut self) {
        self.mode = Mode::Passthrough;
    }

    fn queue_header(&mut self, tag: u8, body_len: usize) {
        self.pending[0] = tag;
        self.pending[1..].copy_from_slice(&((body_len + 4) as u32).to_be_bytes());
        self.pending_pos = 0;
        self.pending_len = 5;
    }

    /// Moves buffered input to `out` according to the parser state; returns when the buffer is
    /// empty or `out` is full.
    fn process(&mut self, out: &mut ReadBuf<'_>) {
        while self.buf_pos < self.buf_len {
            if self.pending_pos < self.pending_len {
                let n = out.remaining().min(self.pending_len - self.pending_pos);
                out.put_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
                self.pending_pos += n;
                if self.pending_pos < self.pending_len {
                    return;
                }
            }
            if out.remaining() == 0 {
                return;
            }
            let avail = self.buf_len - self.buf_pos;
            match self.mode {
                Mode::Passthrough => {
                    let n = avail.min(out.remaining());
                    self.forward(out, n);
                    continue;
                }
                Mode::AwaitSslResponse => {
                    self.forward(out, 1);
                    self.mode = Mode::Split;
                    continue;
                }
                Mode::Split => {}
            }
            match self.at {
                At::Header { got } => {
                    let n = avail.min(5 - got);
                    self.header[got..got + n]
                        .copy_from_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
                    self.buf_pos += n;
                    if got + n < 5 {
                        self.at = At::Header { got: got + n };
                        continue;
                    }
                    let tag = self.header[0];
                    let len = u32::from_be_bytes(self.header[1..5].try_into().expect("4 bytes"));
                    // A length below 4 is a broken stream: forward it and let the protocol
                    // library report it.
                    let body = (len as usize).saturating_sub(4);
                    if tag == COPY_DATA && body > MAX_PIECE {
                        self.start_piece(body);
                    } else {
                        self.pending = self.header;
                        self.pending_pos = 0;
                        self.pending_len = 5;
                        self.at = if body == 0 {
                            At::Header { got: 0 }
                        } else {
                            At::Body { left: body }
                        };
                    }
                }
                At::Body { left } => {
                    let n = avail.min(left).min(out.remaining());
                    self.forward(out, n);
                    self.at = if n == left {
                        At::Header { got: 0 }
                    } else {
                        At::Body { left: left - n }
                    };
                }
                At::CopyPiece { piece, rest } => {
                    let n = avail.min(piece).min(out.remaining());
                    self.forward(out, n);
                    if n < piece {
                        self.at = At::CopyPiece {
                            piece: piece - n,
                            rest,
                        };
                    } else if rest > 0 {
                        self.start_piece(rest);
                    } else {
                        self.at = At::Header { got: 0 };
                    }
                }
            }
        }
        // The buffer is empty; a header queued by the last step still goes out now.
        if self.pending_pos < self.pending_len {
            let n = out.remaining().min(self.pending_len - self.pending_pos);
            out.put_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
            self.pending_pos += n;
        }
    }

    /// Queues the header of the next piece of a long `CopyData` body of `left` bytes.
    fn start_piece(&mut self, left: usize) {
        let piece = left.min(MAX_PIECE);
        self.queue_header(COPY_DATA, piece);
        self.at = At::CopyPiece {
            piece,
            rest: left - piece,
        };
    }

    fn forward(&mut self, out: &mut ReadBuf<'_>, n: usize) {
        out.put_slice(&self.buf[self.buf_pos..self.buf_pos + n]);
        self.buf_pos += n;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SplitCopyData<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = out.filled().len();
        loop {
            this.process(out);
            // Hand over what we have before reading (and maybe waiting) again.
            if out.filled().len() > start || out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    this.buf_pos = 0;
                    this.buf_len = n;
                    if n == 0 {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SplitCopyData<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: TlsStream + Unpin> TlsStream for SplitCopyData<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A reader that hands out its bytes in pieces of the given sizes, cycling.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let size = this.sizes[this.turn % this.sizes.len()];
            this.turn += 1;
            let n = size.min(out.remaining()).min(this.data.len() - this.pos);
            out.put_slice(&this.data[this.pos..this.pos + n]);
            this.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// Parses a message stream into (tag, body) pairs.
    fn parse(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
            out.push((data[0], data[5..1 + len].to_vec()));
            data = &data[1 + len..];
        }
        out
    }

    async fn run(input: Vec<u8>, mode: Mode, sizes: Vec<usize>, read_size: usize) -> Vec<u8> {
        let mut s = SplitCopyData::new(
            Trickle {
                data: input,
                pos: 0,
                sizes,
                turn: 0,
            },
            mode,
        );
        let mut out = Vec::new();
        let mut buf = vec![0; read_size];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    fn sample() -> (Vec<u8>, Vec<u8>) {
        let big: Vec<u8> = (0..(MAX_PIECE * 3 + 17)).map(|i| (i % 251) as u8).collect();
        let mut input = message(b'H', &[0, 0, 0, 0, 0, 0, 0]);
        input.extend(message(COPY_DATA, b"small row\n"));
        input.extend(message(COPY_DATA, &big));
        input.extend(message(COPY_DATA, &big[..MAX_PIECE]));
        input.extend(message(b'c', &[]));
        input.extend(message(b'C', b"COPY 3\0"));
        input.extend(message(b'Z', b"T"));
        (input, big)
    }

    #[tokio::test]
    async fn long_copy_data_is_recut_and_the_rest_is_unchanged() {
        let (input, big) = sample();
        for sizes in [vec![1], vec![3, 7, 5000], vec![READ_BUFFER], vec![2, 65536]] {
            for read_size in [1, 5, 8192, 200_000] {
                let out = run(input.clone(), Mode::Split, sizes.clone(), read_size).await;
                let msgs = parse(&out);
                assert!(msgs
                    .iter()
                    .all(|(t, b)| *t != COPY_DATA || b.len() <= MAX_PIECE));
                let copy: Vec<u8> = msgs
                    .iter()
                    .filter(|(t, _)| *t == COPY_DATA)
                    .flat_map(|(_, b)| b.clone())
                    .collect();
                let mut expected = b"small row\n".to_vec();
                expected.extend_from_slice(&big);
                expected.extend_from_slice(&big[..MAX_PIECE]);
                assert_eq!(copy, expected, "sizes {sizes:?}, reads of {read_size}");
                let others: Vec<_> = msgs.iter().filter(|(t, _)| *t != COPY_DATA).collect();
                assert_eq!(others.len(), 4);
                assert_eq!(msgs.len(), 4 + 1 + 4 + 1);
            }
        }
    }

    #[tokio::test]
    async fn ssl_answer_and_passthrough() {
        let (input, _) = sample();
        let mut with_answer = vec![b'N'];
        with_answer.extend_from_slice(&input);
        let out = run(with_answer, Mode::AwaitSslResponse, vec![3], 100).await;
        assert_eq!(out[0], b'N');
        assert_eq!(parse(&out[1..]).len(), 10);
        let out = run(input.clone(), Mode::Passthrough, vec![7], 1000).await;
        assert_eq!(out, input);
    }
}
