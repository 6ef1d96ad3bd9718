//! The byte level of the walsender connection: one socket type for plain TCP, TLS and Unix
//! sockets, a read buffer that backend messages are cut from, and a write buffer that survives a
//! cancelled write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{ErrorFields, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Longest message inlet accepts. The server never sends a CopyData larger than 1 GB (its
/// allocation limit) plus a header; a larger length means the peer is not speaking the protocol,
/// and believing it would reserve gigabytes.
const MAX_MESSAGE: usize = (1 << 30) + (1 << 20);

/// Read at least this much at a time, so that a stream of small messages costs few reads.
const READ_CHUNK: usize = 64 * 1024;

/// The connection's transport.
pub(super) enum Socket {
    Plain(tokio::net::TcpStream),
    // Boxed: the TLS state is large and this enum moves around.
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    /// A scripted peer for the unit tests.
    #[cfg(test)]
    Test(tokio::io::DuplexStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(test)]
            Socket::Test(s) => Pin::new(s).poll_read(cx, buf),
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
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(test)]
            Socket::Test(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s).poll_flush(cx),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
            #[cfg(test)]
            Socket::Test(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(unix)]
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(test)]
            Socket::Test(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A second descriptor of a connection's socket, to end the connection from another task while
/// the [`Wire`] is busy or idle elsewhere (see [`super::StreamHangUp`]).
#[derive(Debug)]
pub(super) enum SocketHandle {
    #[cfg(unix)]
    Tcp(std::net::TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
}

impl SocketHandle {
    /// Shuts the socket down both ways: the server reads the end of the connection, and the
    /// wire's next read returns end of file (a pending one wakes up with it).
    pub(super) fn shut_down(&self) -> io::Result<()> {
        match self {
            #[cfg(unix)]
            SocketHandle::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            #[cfg(unix)]
            SocketHandle::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        }
    }
}

impl Socket {
    /// A [`SocketHandle`] on a duplicate of the socket's descriptor (`shutdown` acts on the
    /// socket, not the descriptor, so it ends this connection too). None where there is no
    /// such socket (the unit tests' scripted peer, or a platform without file descriptors).
    fn handle(&self) -> io::Result<Option<SocketHandle>> {
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            let tcp = |s: &tokio::net::TcpStream| -> io::Result<Option<SocketHandle>> {
                let fd = s.as_fd().try_clone_to_owned()?;
                Ok(Some(SocketHandle::Tcp(std::net::TcpStream::from(fd))))
            };
            match self {
                Socket::Plain(s) => tcp(s),
                Socket::Tls(s) => tcp(s.get_ref().0),
                Socket::Unix(s) => {
                    let fd = s.as_fd().try_clone_to_owned()?;
                    Ok(Some(SocketHandle::Unix(
                        std::os::unix::net::UnixStream::from(fd),
                    )))
                }
                #[cfg(test)]
                Socket::Test(_) => Ok(None),
            }
        }
        #[cfg(not(unix))]
        {
            Ok(None)
        }
    }
}

/// What one read from the server yields.
pub(super) enum Backend {
    Message(Message),
    /// CopyBothResponse (`W`), which postgres-protocol does not parse: the answer to
    /// START_REPLICATION. Its body (format codes) carries nothing inlet needs.
    CopyBoth,
    /// The server closed the connection between two messages.
    Eof,
}

/// A socket with its buffers. Every method is cancel-safe: bytes read stay in `read` until a
/// whole message is there, and bytes to send stay in `write` until the socket took them, so a
/// caller may wrap any call in a timeout and go on using the connection.
pub(super) struct Wire {
    socket: Socket,
    read: BytesMut,
    write: BytesMut,
}

impl Wire {
    pub(super) fn new(socket: Socket) -> Self {
        Self {
            socket,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::with_capacity(1024),
        }
    }

    /// A handle that can shut the socket down from another task ([`SocketHandle`]).
    pub(super) fn socket_handle(&self) -> io::Result<Option<SocketHandle>> {
        self.socket.handle()
    }

    /// The buffer outgoing messages are appended to; [`Wire::flush`] sends them.
    pub(super) fn out(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// Sends everything appended to [`Wire::out`].
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        while self.write.has_remaining() {
            let n = self.socket.write_buf(&mut self.write).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        self.socket.flush().await
    }

    /// Sends `Terminate` and closes the socket, ignoring errors: the server may have closed it
    /// first, and either way the session is over.
    pub(super) async fn close(mut self) {
        postgres_protocol::message::frontend::terminate(&mut self.write);
        let _ = self.flush().await;
        let _ = self.socket.shutdown().await;
    }

    /// The next backend message. Reads from the socket only when the buffer holds no whole
    /// message, so a caller that stops calling stops the reading, and the server's sends then
    /// wait on TCP flow control: memory stays bounded by what the caller holds.
    pub(super) async fn read_message(&mut self) -> io::Result<Backend> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(message);
            }
            if self.read.capacity() - self.read.len() < READ_CHUNK / 8 {
                self.read.reserve(READ_CHUNK);
            }
            if self.socket.read_buf(&mut self.read).await? == 0 {
                return if self.read.is_empty() {
                    Ok(Backend::Eof)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection in the middle of a message",
                    ))
                };
            }
        }
    }

    /// Cuts one message off the read buffer if a whole one is there.
    fn parse(&mut self) -> io::Result<Option<Backend>> {
        if self.read.len() < 5 {
            return Ok(None);
        }
        let tag = self.read[0];
        let len = u32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]);
        let total = len as usize + 1;
        if len < 4 || total > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "message {:?} of length {len}: this is not the PostgreSQL protocol",
                    char::from(tag)
                ),
            ));
        }
        if self.read.len() < total {
            // Make room for the whole message at once instead of growing chunk by chunk.
            self.read.reserve(total - self.read.len());
            return Ok(None);
        }
        if tag == b'W' {
            self.read.advance(total);
            return Ok(Some(Backend::CopyBoth));
        }
        Ok(Message::parse(&mut self.read)?.map(Backend::Message))
    }
}

/// An ErrorResponse or NoticeResponse, field by field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct ServerError {
    pub severity: String,
    pub code: Option<String>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    pub(super) fn from_fields(mut fields: ErrorFields<'_>) -> Self {
        let mut e = ServerError::default();
        // A malformed field list still yields what was read before the fault: better a partial
        // message than none.
        while let Ok(Some(field)) = fields.next() {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                // `V` is never localized; `S` is, and comes first: prefer `V` when both come.
                b'S' if e.severity.is_empty() => e.severity = value,
                b'V' => e.severity = value,
                b'C' => e.code = Some(value),
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        e
    }
}

impl std::fmt::Display for ServerError {
    /// As `error::describe` renders tokio-postgres errors: `SEVERITY: message (detail); hint: …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.severity.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.severity, self.message)?;
        }
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; hint: {h}")?;
        }
        Ok(())
    }
}
