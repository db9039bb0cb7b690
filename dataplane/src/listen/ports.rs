//! Gateway listener ports: sockets opened and closed as publishes name them.
//!
//! [`crate::Dataplane::publish`] binds each new port at once (synchronously,
//! with `std` sockets, so the report says whether it worked) and keeps the
//! bound sockets in the value of a `watch` channel: the port set. The port
//! manager ([`serve_ports`], started by `serve_listeners`) runs one accept
//! loop per socket of the set; a socket the set no longer holds has its
//! loop stopped and its connections drained (in-flight requests finish), and
//! closes with the loop. A port kept across publishes keeps its socket, its
//! loop and its connections. Nothing here is on the request path.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::listen::server::{self, Serving};
use crate::listen::tls;
use crate::model::PortProtocol;
use crate::{PortOutcome, Shared};

/// Connections waiting to be accepted per Gateway port, as tokio's default.
const BACKLOG: i32 = 1024;

/// One bound Gateway port.
#[derive(Clone, Debug)]
pub(crate) struct PortSocket {
    /// Unique per bind: a port closed and bound again is a new socket, and
    /// its accept loop a new one.
    id: u64,
    protocol: PortProtocol,
    socket: Arc<std::net::TcpListener>,
}

/// The bound Gateway ports, by port: what the manager serves.
pub(crate) type PortSet = Arc<BTreeMap<u16, PortSocket>>;

/// The Gateway ports' sockets, held by [`crate::Shared`].
pub(crate) struct GatewayPorts {
    address: IpAddr,
    /// Written only by `publish` (under its lock) and at shutdown.
    set: watch::Sender<PortSet>,
    next_id: AtomicU64,
    /// Set at shutdown: no publish binds a port after it, even one that
    /// began before.
    closed: AtomicBool,
}

impl GatewayPorts {
    pub(crate) fn new(address: IpAddr) -> Self {
        Self {
            address,
            set: watch::Sender::new(PortSet::default()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Makes the bound set `wanted`: keeps the sockets of ports already
    /// bound (a protocol change keeps the socket and restarts its loop),
    /// binds the others, and lets go of those no longer wanted. Returns
    /// each wanted port's outcome (the bind error as text) and how many
    /// sockets are open now. A port that failed is tried again next time.
    pub(crate) fn reconcile(
        &self,
        wanted: impl Iterator<Item = (u16, PortProtocol)>,
    ) -> (Vec<PortOutcome>, usize) {
        let current = self.set.borrow().clone();
        let mut next = BTreeMap::new();
        let mut outcomes = Vec::new();
        for (port, protocol) in wanted {
            let outcome = match current.get(&port) {
                Some(kept) => {
                    next.insert(
                        port,
                        PortSocket {
                            protocol,
                            ..kept.clone()
                        },
                    );
                    Ok(())
                }
                None => match bind(SocketAddr::new(self.address, port)) {
                    Ok(socket) => {
                        info!(port, ?protocol, "Gateway port bound");
                        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                        next.insert(
                            port,
                            PortSocket {
                                id,
                                protocol,
                                socket: Arc::new(socket),
                            },
                        );
                        Ok(())
                    }
                    Err(e) => {
                        let reason = bind_error(&e);
                        warn!(port, error = %e, "Gateway port not bound; tried again on the next publish");
                        Err(reason)
                    }
                },
            };
            outcomes.push((port, outcome));
        }
        drop(current);
        let next = Arc::new(next);
        let open = next.len();
        // Under the channel's lock, which `close_all` takes after marking
        // the set closed: a publish racing a shutdown never leaves a
        // socket bound that no loop serves.
        let mut closed = false;
        self.set.send_modify(|set| {
            closed = self.closed.load(Ordering::Acquire);
            if !closed {
                *set = next;
            }
        });
        if closed {
            return (Self::refused(&outcomes), 0);
        }
        (outcomes, open)
    }

    /// Every port of `outcomes` refused: the dataplane is shutting down.
    pub(crate) fn refused(outcomes: &[PortOutcome]) -> Vec<PortOutcome> {
        let shutting_down = || Err("the dataplane is shutting down".to_owned());
        outcomes
            .iter()
            .map(|(p, _)| (*p, shutting_down()))
            .collect()
    }

    /// Lets go of every socket, for good (on shutdown).
    pub(crate) fn close_all(&self) {
        self.closed.store(true, Ordering::Release);
        self.set.send_replace(PortSet::default());
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<PortSet> {
        self.set.subscribe()
    }
}

/// A listening TCP socket on `addr`: `SO_REUSEADDR` (a port closed with
/// connections in TIME_WAIT binds again at once), nonblocking for tokio.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A bind error as the report says it: the common ones in words the
/// controller can put in a condition's message.
fn bind_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        io::ErrorKind::AddrNotAvailable => "address not available".to_owned(),
        _ => e.to_string(),
    }
}

/// Which accept loops to stop and which to start to serve `wanted` when
/// `running` are: by port, a loop is kept only for the same socket (id)
/// and protocol.
pub(crate) fn plan(
    running: &BTreeMap<u16, (u64, PortProtocol)>,
    wanted: &BTreeMap<u16, (u64, PortProtocol)>,
) -> (Vec<u16>, Vec<u16>) {
    let stop = running
        .iter()
        .filter(|(port, r)| wanted.get(port) != Some(r))
        .map(|(port, _)| *port)
        .collect();
    let start = wanted
        .iter()
        .filter(|(port, w)| running.get(port) != Some(w))
        .map(|(port, _)| *port)
        .collect();
    (stop, start)
}

/// One accept loop of a Gateway port.
struct Running {
    id: u64,
    protocol: PortProtocol,
    /// Its connections watch it too: `true` drains them.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The port manager: serves the port set until `shutdown` turns true, then
/// stops every loop (their connections drain under `drain`, as the main
/// listeners' do) and returns once no loop accepts any more.
pub(crate) async fn serve_ports(
    shared: Arc<Shared>,
    mut set: watch::Receiver<PortSet>,
    mut shutdown: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let mut running: BTreeMap<u16, Running> = BTreeMap::new();
    loop {
        let wanted = set.borrow_and_update().clone();
        let now = running
            .iter()
            .map(|(port, r)| (*port, (r.id, r.protocol)))
            .collect();
        let want = wanted
            .iter()
            .map(|(port, s)| (*port, (s.id, s.protocol)))
            .collect();
        let (stop, start) = plan(&now, &want);
        for port in stop {
            if let Some(r) = running.remove(&port) {
                info!(port, "Gateway port closing; its connections drain");
                let _ = r.stop.send(true);
            }
        }
        for port in start {
            let Some(socket) = wanted.get(&port) else {
                continue;
            };
            match start_loop(&shared, port, socket, &drain) {
                Ok(r) => {
                    running.insert(port, r);
                }
                Err(e) => warn!(port, error = %e, "Gateway port cannot be served"),
            }
        }
        // The manager holds no socket between changes: a port dropped from
        // the set closes when its loop ends.
        drop(wanted);
        tokio::select! {
            changed = set.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for r in running.values() {
        let _ = r.stop.send(true);
    }
    for (_, r) in running {
        let _ = r.task.await;
    }
}

/// Starts the accept loop of one bound port, on its own copy of the
/// socket's descriptor (the set keeps the other until it lets go).
fn start_loop(
    shared: &Arc<Shared>,
    port: u16,
    socket: &PortSocket,
    drain: &mpsc::Sender<()>,
) -> io::Result<Running> {
    let listener = TcpListener::from_std(socket.socket.try_clone()?)?;
    let tls = match socket.protocol {
        PortProtocol::Http => None,
        PortProtocol::Https => Some(
            tls::port_server_config(port, Arc::clone(&shared.certs)).map_err(io::Error::other)?,
        ),
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(server::serve_proxy(
        Arc::clone(shared),
        listener,
        Serving::Gateway { port, tls },
        stopped,
        drain.clone(),
    ));
    Ok(Running {
        id: socket.id,
        protocol: socket.protocol,
        stop,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use PortProtocol::{Http, Https};

    fn set(entries: &[(u16, u64, PortProtocol)]) -> BTreeMap<u16, (u64, PortProtocol)> {
        entries.iter().map(|&(p, id, pr)| (p, (id, pr))).collect()
    }

    #[test]
    fn a_kept_socket_keeps_its_loop() {
        let running = set(&[(8080, 1, Http), (8443, 2, Https)]);
        assert_eq!(plan(&running, &running), (vec![], vec![]));
    }

    #[test]
    fn new_ports_start_and_dropped_ports_stop() {
        let running = set(&[(8080, 1, Http), (9000, 2, Http)]);
        let wanted = set(&[(8080, 1, Http), (8443, 3, Https)]);
        assert_eq!(plan(&running, &wanted), (vec![9000], vec![8443]));
        assert_eq!(plan(&BTreeMap::new(), &wanted), (vec![], vec![8080, 8443]));
        assert_eq!(plan(&wanted, &BTreeMap::new()), (vec![8080, 8443], vec![]));
    }

    #[test]
    fn a_new_socket_or_protocol_on_a_port_restarts_its_loop() {
        let running = set(&[(8080, 1, Http), (8443, 2, Http)]);
        let wanted = set(&[(8080, 5, Http), (8443, 2, Https)]);
        assert_eq!(
            plan(&running, &wanted),
            (vec![8080, 8443], vec![8080, 8443])
        );
    }

    #[test]
    fn binding_keeps_reports_and_retries() {
        let ports = GatewayPorts::new(IpAddr::from([127, 0, 0, 1]));
        // A port the test holds: taken.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap().port();
        let free = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let (report, open) = ports.reconcile([(free, Http), (taken, Http)].into_iter());
        assert_eq!(open, 1);
        assert_eq!(report[0], (free, Ok(())));
        assert_eq!(report[1], (taken, Err("address in use".to_owned())));
        let first = ports.subscribe().borrow()[&free].id;

        // Kept: the same socket; the taken one is tried again and binds.
        drop(held);
        let (report, open) = ports.reconcile([(free, Https), (taken, Http)].into_iter());
        assert_eq!(open, 2);
        assert!(report.iter().all(|(_, r)| r.is_ok()), "{report:?}");
        let now = ports.subscribe().borrow().clone();
        assert_eq!(now[&free].id, first);
        assert_eq!(now[&free].protocol, Https);

        // Dropped: the socket is let go and the port can be bound again.
        let (_, open) = ports.reconcile([(taken, Http)].into_iter());
        assert_eq!(open, 1);
        drop(now);
        assert!(std::net::TcpListener::bind(("127.0.0.1", free)).is_ok());

        // After shutdown nothing is bound, and the report says why.
        ports.close_all();
        let (report, open) = ports.reconcile([(free, Http)].into_iter());
        assert_eq!(open, 0);
        assert_eq!(
            report,
            [(free, Err("the dataplane is shutting down".to_owned()))]
        );
        assert!(ports.subscribe().borrow().is_empty());
        assert!(std::net::TcpListener::bind(("127.0.0.1", free)).is_ok());
    }
}
