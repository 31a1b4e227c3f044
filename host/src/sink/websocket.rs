//! The WebSocket hub behind `ws://HOST:3000/ws`: every output line is
//! broadcast to every connected client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast;

/// Messages buffered per client before it is considered lagging.
pub const CLIENT_BUFFER: usize = 16_384;

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<str>>,
    clients: Arc<AtomicUsize>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CLIENT_BUFFER);
        Hub {
            tx,
            clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Broadcast a JSON line (dropped when nobody listens).
    pub fn publish(&self, line: Arc<str>) {
        let _ = self.tx.send(line);
    }

    pub fn has_clients(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Serve one client: forward the stream until it goes away. Generic over
    /// the socket halves so it can be tested with channels.
    pub async fn serve<W, R, E>(&self, mut tx: W, mut rx: R)
    where
        W: Sink<String, Error = E> + Unpin,
        R: Stream + Unpin,
    {
        let mut sub = self.tx.subscribe();
        self.clients.fetch_add(1, Ordering::Relaxed);
        loop {
            tokio::select! {
                msg = sub.recv() => {
                    let line = match msg {
                        Ok(line) => line.to_string(),
                        Err(broadcast::error::RecvError::Lagged(n)) => format!(r#"{{"type":"lagged","missed":{n}}}"#),
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if tx.send(line).await.is_err() {
                        break;
                    }
                }
                incoming = rx.next() => {
                    if incoming.is_none() {
                        break;
                    }
                }
            }
        }
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;

    #[tokio::test]
    async fn forwards_and_reports_lag() {
        let hub = Hub::new();
        let (out_tx, mut out_rx) = mpsc::unbounded::<String>();
        let (in_tx, in_rx) = mpsc::unbounded::<String>();
        let h = hub.clone();
        let task = tokio::spawn(async move { h.serve(out_tx, in_rx).await });
        while !hub.has_clients() {
            tokio::task::yield_now().await;
        }
        hub.publish(Arc::from(r#"{"type":"metric"}"#));
        assert_eq!(out_rx.next().await.unwrap(), r#"{"type":"metric"}"#);
        assert_eq!(hub.clients(), 1);
        drop(in_tx);
        task.await.unwrap();
        assert_eq!(hub.clients(), 0);
    }
}
