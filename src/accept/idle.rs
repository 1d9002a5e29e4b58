//! A connection's HTTP/2 streams, followed from the frame headers that pass through it each way
//! ([`IdleWatch`]), and its close once none has been open for `server.idle_timeout_ms`.
//!
//! hyper closes a connection gracefully only when told to from outside, and tonic keeps that
//! handle for its own shutdown. h2 also closes a connection by itself, gracefully (its own GOAWAY
//! naming the last stream it processed, then the socket's shutdown), once the peer has sent
//! GOAWAY and no stream is open (RFC 9113 §6.8). So when the idle time is up the reader hands h2
//! a GOAWAY at a frame boundary, as if the client had said goodbye: a stream the client opened
//! meanwhile is still served, and one it opens after reading the server's GOAWAY is known to it
//! as unprocessed, safe to retry elsewhere.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// The length of a frame header (RFC 9113 §4.1).
const HEADER_LEN: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
/// The END_STREAM flag of DATA and HEADERS.
const END_STREAM: u8 = 0x1;

/// A GOAWAY from the client: NO_ERROR, last stream 0 (the server opens none; pushes are off).
pub(super) const CLIENT_GOAWAY: [u8; HEADER_LEN + 8] =
    [0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// What a frame header says that matters here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Finds the frame headers in one direction's bytes, however reads or writes split them.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; HEADER_LEN],
    /// Bytes of the next header seen so far.
    have: usize,
    /// Bytes of the current frame's payload still to come.
    payload_left: usize,
}

impl Frames {
    fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(Frame)) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER_LEN - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER_LEN {
                let h = &self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.have = 0;
                each(Frame {
                    kind: h[3],
                    flags: h[4],
                    // The top bit is reserved.
                    stream: u32::from_be_bytes([h[5] & 0x7f, h[6], h[7], h[8]]),
                });
            }
        }
    }

    /// Between two frames: a frame given to the reader here does not cut another.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }
}

/// Which sides of an open stream may still send.
#[derive(Clone, Copy, Debug)]
struct Open {
    client: bool,
    server: bool,
}

/// The streams open on a connection (RFC 9113 §5.1): opened by the client's HEADERS, closed once
/// each side has sent END_STREAM or either has sent RST_STREAM.
#[derive(Debug, Default)]
struct Streams {
    open: HashMap<u32, Open>,
    /// The highest stream the client opened: a HEADERS frame at or below it is on a stream
    /// already closed (trailers after a reset), never a new one.
    highest: u32,
}

impl Streams {
    /// Follows a frame from the client; true if a stream opened or closed.
    fn client_frame(&mut self, frame: Frame) -> bool {
        let end = frame.flags & END_STREAM != 0;
        match frame.kind {
            HEADERS if frame.stream > self.highest => {
                self.highest = frame.stream;
                self.open.insert(
                    frame.stream,
                    Open {
                        client: !end,
                        server: true,
                    },
                );
                true
            }
            HEADERS | DATA if end => self.half_close(frame.stream, |open| open.client = false),
            RST_STREAM => self.open.remove(&frame.stream).is_some(),
            _ => false,
        }
    }

    /// Follows a frame from the server; true if a stream closed.
    fn server_frame(&mut self, frame: Frame) -> bool {
        match frame.kind {
            HEADERS | DATA if frame.flags & END_STREAM != 0 => {
                self.half_close(frame.stream, |open| open.server = false)
            }
            RST_STREAM => self.open.remove(&frame.stream).is_some(),
            _ => false,
        }
    }

    fn half_close(&mut self, stream: u32, side: impl FnOnce(&mut Open)) -> bool {
        let Some(open) = self.open.get_mut(&stream) else {
            return false;
        };
        side(open);
        if open.client || open.server {
            return false;
        }
        self.open.remove(&stream);
        true
    }
}

/// How the reader ends a connection whose idle time is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Close {
    /// Hand h2 [`CLIENT_GOAWAY`]: it answers with its own and closes.
    GoAway,
    /// The client is in the middle of a frame with no stream open: end of stream.
    Eof,
}

/// Follows one connection's frames both ways and says when its idle time is up.
#[derive(Debug)]
pub(super) struct IdleWatch {
    from_client: Frames,
    from_server: Frames,
    streams: Streams,
    timeout: Duration,
    /// Fires `timeout` after the last stream closed (or the connection opened).
    timer: Pin<Box<Sleep>>,
    /// The server sent GOAWAY (shutdown, a protocol error, or after the idle close): h2 is
    /// closing the connection itself.
    done: bool,
    peer: Option<SocketAddr>,
    metrics: Arc<Metrics>,
}

impl IdleWatch {
    /// Watches a connection that has just opened HTTP/2; `opening` is the header of the
    /// client's first SETTINGS frame, already read.
    pub(super) fn new(
        opening: &[u8],
        timeout: Duration,
        peer: Option<SocketAddr>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut from_client = Frames::default();
        from_client.feed(opening, |_| {});
        IdleWatch {
            from_client,
            from_server: Frames::default(),
            streams: Streams::default(),
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            done: false,
            peer,
            metrics,
        }
    }

    /// Bytes the client sent, as they are read.
    pub(super) fn client_sent(&mut self, bytes: &[u8]) {
        let streams = &mut self.streams;
        let mut changed = false;
        self.from_client
            .feed(bytes, |frame| changed |= streams.client_frame(frame));
        if changed && self.streams.open.is_empty() {
            self.restart();
        }
    }

    /// Bytes the server wrote. The idle timer is armed with this task's waker when they close
    /// the last stream, since the reader may not be polled again until the timer fires.
    pub(super) fn server_sent(&mut self, cx: &mut Context<'_>, bytes: &[u8]) {
        let streams = &mut self.streams;
        let mut changed = false;
        let mut going_away = false;
        self.from_server.feed(bytes, |frame| {
            going_away |= frame.kind == GOAWAY;
            changed |= streams.server_frame(frame);
        });
        if going_away {
            self.done = true;
            self.streams.open.clear();
        } else if changed && self.streams.open.is_empty() {
            self.restart();
            if self.timer.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
    }

    fn restart(&mut self) {
        let deadline = Instant::now() + self.timeout;
        self.timer.as_mut().reset(deadline);
    }

    /// Before a read: whether the connection is to be closed now, and how. Counted once.
    pub(super) fn poll_close(&mut self, cx: &mut Context<'_>) -> Option<Close> {
        if self.done || !self.streams.open.is_empty() || self.timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        self.done = true;
        self.metrics.connection_closed("idle");
        tracing::debug!(peer = ?self.peer, idle = ?self.timeout, "idle connection closed");
        Some(if self.from_client.at_boundary() {
            Close::GoAway
        } else {
            Close::Eof
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut h = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        h.extend_from_slice(&stream.to_be_bytes());
        h
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = header(payload, kind, flags, stream);
        f.resize(f.len() + payload, 0xee);
        f
    }

    #[test]
    fn headers_are_found_however_the_bytes_are_split() {
        let mut bytes = frame(HEADERS, 0x4, 1, 300);
        bytes.extend(frame(DATA, END_STREAM, 1, 5));
        bytes.extend(frame(RST_STREAM, 0, 3, 4));
        for chunk in [1, 2, 7, 9, 10, 64, bytes.len()] {
            let mut frames = Frames::default();
            let mut seen = Vec::new();
            for piece in bytes.chunks(chunk) {
                frames.feed(piece, |f| seen.push((f.kind, f.flags, f.stream)));
            }
            assert_eq!(
                seen,
                [(HEADERS, 0x4, 1), (DATA, END_STREAM, 1), (RST_STREAM, 0, 3)],
                "chunks of {chunk}"
            );
            assert!(frames.at_boundary());
        }
        let mut frames = Frames::default();
        frames.feed(&bytes[..12], |_| {});
        assert!(!frames.at_boundary(), "inside a payload");
        let mut frames = Frames::default();
        frames.feed(&bytes[..4], |_| {});
        assert!(!frames.at_boundary(), "inside a header");
    }

    fn from_client(streams: &mut Streams, kind: u8, flags: u8, stream: u32) -> bool {
        streams.client_frame(Frame {
            kind,
            flags,
            stream,
        })
    }

    fn from_server(streams: &mut Streams, kind: u8, flags: u8, stream: u32) -> bool {
        streams.server_frame(Frame {
            kind,
            flags,
            stream,
        })
    }

    #[test]
    fn a_stream_is_open_until_both_sides_end_it_or_either_resets_it() {
        let mut streams = Streams::default();
        // A unary call: request headers and body, response headers, data, trailers.
        assert!(from_client(&mut streams, HEADERS, 0x4, 1));
        assert!(!from_client(&mut streams, DATA, END_STREAM, 1));
        assert!(!from_server(&mut streams, HEADERS, 0x4, 1));
        assert!(!from_server(&mut streams, DATA, 0, 1));
        assert_eq!(streams.open.len(), 1);
        assert!(from_server(&mut streams, HEADERS, 0x4 | END_STREAM, 1));
        assert!(streams.open.is_empty());
        // The server answers first, then the client ends its side.
        assert!(from_client(&mut streams, HEADERS, 0x4, 3));
        assert!(!from_server(&mut streams, HEADERS, END_STREAM, 3));
        assert!(from_client(&mut streams, DATA, END_STREAM, 3));
        assert!(streams.open.is_empty());
        // Reset by either side.
        assert!(from_client(&mut streams, HEADERS, 0x4, 5));
        assert!(from_client(&mut streams, RST_STREAM, 0, 5));
        assert!(from_client(&mut streams, HEADERS, 0x4, 7));
        assert!(from_server(&mut streams, RST_STREAM, 0, 7));
        assert!(streams.open.is_empty());
        // Trailers on a stream already reset do not reopen it.
        assert!(!from_client(&mut streams, HEADERS, END_STREAM, 7));
        assert!(streams.open.is_empty());
        // Connection frames and frames of unknown streams change nothing.
        assert!(!from_client(&mut streams, 0x4, 0, 0));
        assert!(!from_server(&mut streams, DATA, END_STREAM, 99));
        assert!(streams.open.is_empty());
    }

    fn watch(timeout: Duration) -> IdleWatch {
        IdleWatch::new(&header(0, 0x4, 0, 0), timeout, None, Metrics::new())
    }

    fn poll_close(watch: &mut IdleWatch) -> Option<Close> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        watch.poll_close(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_the_timeout_with_no_stream_open_and_only_then() {
        let timeout = Duration::from_secs(60);
        let mut watch = watch(timeout);
        assert_eq!(poll_close(&mut watch), None);
        tokio::time::advance(timeout / 2).await;
        watch.client_sent(&frame(HEADERS, 0x4, 1, 10));
        // A stream open for longer than the timeout keeps the connection.
        tokio::time::advance(timeout * 3).await;
        assert_eq!(poll_close(&mut watch), None);
        // Its end starts the idle time again.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        watch.client_sent(&frame(DATA, END_STREAM, 1, 5));
        watch.server_sent(&mut cx, &frame(HEADERS, END_STREAM | 0x4, 1, 10));
        tokio::time::advance(timeout - Duration::from_secs(1)).await;
        assert_eq!(poll_close(&mut watch), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(poll_close(&mut watch), Some(Close::GoAway));
        assert_eq!(poll_close(&mut watch), None, "once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_in_the_middle_of_a_frame_gets_end_of_stream() {
        let timeout = Duration::from_secs(1);
        let mut watch = watch(timeout);
        // A PING (8-byte payload) cut after its header.
        watch.client_sent(&header(8, 0x6, 0, 0));
        tokio::time::advance(timeout).await;
        assert_eq!(poll_close(&mut watch), Some(Close::Eof));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_the_server_is_already_closing_is_left_to_it() {
        let timeout = Duration::from_secs(1);
        let mut watch = watch(timeout);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        watch.server_sent(&mut cx, &frame(GOAWAY, 0, 0, 8));
        tokio::time::advance(timeout * 2).await;
        assert_eq!(poll_close(&mut watch), None);
    }
}
