//! One TCP socket of a data-plane worker shared by the two directions of a relay: one direction
//! reads it, the other writes it, on the same thread, through one descriptor.
//!
//! monoio's own halves (`Splitable::into_split`) share a stream that way, but the reading half
//! cannot wait for readability without lending a buffer to the kernel, which an idle session
//! must not hold. [`ReadSide::readable`] adds that wait. Before this, each relay duplicated both
//! of its sockets' descriptors to give each direction its own: four descriptors per relayed
//! session instead of two, which under an open-files limit of N capped the proxy near N/6
//! sessions (with the live-session watch's duplicates).

use std::io;

use monoio::io::{OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;

/// The reading side of a shared socket.
#[derive(Debug)]
pub struct ReadSide(OwnedReadHalf<TcpStream>);

/// The writing side of a shared socket. Dropping it shuts the socket down for writing (sends
/// FIN), as monoio's write half does.
#[derive(Debug)]
pub struct WriteSide(OwnedWriteHalf<TcpStream>);

/// Splits `stream` into a side that reads and a side that writes, sharing its descriptor.
pub fn split(stream: TcpStream) -> (ReadSide, WriteSide) {
    let (r, w) = stream.into_split();
    (ReadSide(r), WriteSide(w))
}

impl ReadSide {
    /// Waits until the socket has bytes (or an end) to read, without lending a buffer.
    pub async fn readable(&self, relaxed: bool) -> io::Result<()> {
        // SAFETY: the stream lives in the `Rc` both sides share, so the pointer is valid for as
        // long as `self` is. The reference is shared, not exclusive, and only asks the runtime
        // for a readiness poll on the descriptor (which clones the descriptor's handle); the
        // writing side's operations never touch what a readiness poll reads, the independence
        // monoio itself declares for `TcpStream` (`unsafe impl Split`) and relies on for its own
        // halves. Both sides are `!Send` (`Rc`), so no other thread can reach the stream.
        let stream: &TcpStream = unsafe { &*self.0.0.get() };
        stream.readable(relaxed).await
    }

    /// The half for reads (`AsyncReadRent`, cancelable reads).
    pub fn half(&mut self) -> &mut OwnedReadHalf<TcpStream> {
        &mut self.0
    }
}

impl WriteSide {
    /// The half for writes and shutdown (`AsyncWriteRent`).
    pub fn half(&mut self) -> &mut OwnedWriteHalf<TcpStream> {
        &mut self.0
    }
}
