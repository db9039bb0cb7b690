//! Free ports for the processes that must be told a port number (etcd,
//! kube-apiserver). The port is free when picked; a race with another
//! process is handled by the caller retrying the whole start.

use std::net::TcpListener;

pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
