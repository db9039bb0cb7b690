//! Free ports for the processes that must be told a port number (etcd,
//! kube-apiserver). The port is free when picked; a race with another
//! process is handled by the caller retrying the whole start.

use std::net::TcpListener;

pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Two distinct free ports (a port picked twice in a row is possible once
/// the first probe socket is closed).
pub fn free_port_pair() -> anyhow::Result<(u16, u16)> {
    let first = TcpListener::bind("127.0.0.1:0")?;
    let second = TcpListener::bind("127.0.0.1:0")?;
    Ok((first.local_addr()?.port(), second.local_addr()?.port()))
}
