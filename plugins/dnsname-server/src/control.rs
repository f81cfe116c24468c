//! The control socket (`reload`, `ping`) and the signals (SIGHUP reloads, SIGTERM/SIGINT stop).
//!
//! One request line, one answer line: `ok <entries>` or `error <why>`. The plugin's `reload`
//! returns only after the new table is in use, which is what makes a name resolvable the
//! moment ADD returns.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

use crate::State;

/// Binds the control socket (replacing a stale one a killed server left).
pub fn bind(state: &State) -> Result<std::os::unix::net::UnixListener, String> {
    let path = state.dir.control();
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path)
        .map_err(|e| format!("bind {}: {e}", path.display()))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

pub fn serve(l: std::os::unix::net::UnixListener, state: Arc<State>) -> Result<(), String> {
    let l = UnixListener::from_std(l).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            if let Ok((s, _)) = l.accept().await {
                tokio::spawn(conn(s, state.clone()));
            }
        }
    });
    Ok(())
}

async fn conn(s: UnixStream, state: Arc<State>) {
    let (r, mut w) = s.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.trim() {
            "reload" => match state.reload() {
                Ok(n) => format!("ok {n}\n"),
                Err(e) => format!("error {e}\n"),
            },
            "ping" => format!("ok {}\n", state.current().table.entries()),
            other => format!("error unknown request {other:?}\n"),
        };
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Waits for SIGTERM or SIGINT, reloading on every SIGHUP meanwhile.
pub async fn signals(state: Arc<State>) {
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(e) = state.reload() {
                    tracing::warn!("reload on SIGHUP: {e}");
                }
            }
            _ = term.recv() => return,
            _ = int.recv() => return,
        }
    }
}
